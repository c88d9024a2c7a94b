"""Tests of mammodecomp.models: registry, seed-vgg, small, timm wrapper, stems, offline weights."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import torch.nn as nn

from mammodecomp.errors import InputError
from mammodecomp.models import MODELS, SeedVGG, count_parameters, create_model
from mammodecomp.models.stems import OffsetConv2d, adapt_stem_weight
from mammodecomp.models.weights import (find_cached_timm_weights, load_lite0_imagenet,
                                        lite0_package_path, load_state_dict_file, map_lukemelas_lite0)


# tiny configurations, one per registered name
TINY = {
    "seed-vgg": dict(name="seed-vgg", input_size=32, width=0.0625, dropout=0.5),
    "small": dict(name="small", input_size=32),
    "seed-resnet50": dict(name="seed-resnet50", input_size=32),
    "timm": dict(name="timm:resnet10t", input_size=32),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread, restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def _no_caches(monkeypatch, tmp_path_factory):
    """Point the HF and torch hub caches at empty folders: nothing real is ever read or fetched."""
    import huggingface_hub.constants as hc
    empty = tmp_path_factory.mktemp("emptycache")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(empty / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(empty / "torchhub"))


def test_registry_covers_every_entry():
    assert sorted(MODELS) == sorted(TINY)


@pytest.mark.parametrize("reg_name", sorted(TINY))
def test_every_registered_model_runs_on_tiny_input(reg_name):
    cfg = dict(TINY[reg_name])
    name = cfg.pop("name")
    torch.manual_seed(0)
    model = create_model(name, in_chans=5, **cfg).eval()
    x = torch.rand(2, 5, 32, 32)
    with torch.no_grad():
        out = model(x)
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        again = model.forward_head(feats)
    assert out.shape == (2,) and out.dtype == torch.float32
    assert feats.ndim == 4 and feats.shape[0] == 2
    assert pre.ndim == 2 and pre.shape[0] == 2
    torch.testing.assert_close(out, again)
    dc = model.data_config
    assert dc["in_chans"] == 5 and dc["input_size"] == (5, 32, 32)
    assert dc["normalization"] == "fold" and dc["mean"] is None and dc["pretrained"] is None
    assert isinstance(model.get_submodule(dc["first_conv"]), nn.Conv2d)
    assert model.get_submodule(dc["first_conv"]).in_channels == 5
    # trains: a backward pass reaches the first conv
    model.train()
    model(x).sum().backward()
    assert model.get_submodule(dc["first_conv"]).weight.grad.abs().sum() > 0


def test_bad_names_and_arguments_raise_input_error():
    with pytest.raises(InputError, match="seed-vgg"):
        create_model("vgg-nope", in_chans=5)
    with pytest.raises(InputError, match="stem_init"):
        create_model("small", in_chans=5, stem_init="magic")
    with pytest.raises(InputError, match="in_chans"):
        create_model("small", in_chans=0)
    with pytest.raises(InputError, match="timm:<name>"):
        create_model("timm", in_chans=5)
    with pytest.raises(InputError, match="unknown timm model"):
        create_model("timm:not_a_real_net", in_chans=5)
    with pytest.raises(InputError, match="too small"):
        create_model("seed-vgg", in_chans=5, input_size=16, width=0.05)
    with pytest.raises(InputError, match="weights=PATH"):
        create_model("seed-vgg", in_chans=5, pretrained=True, width=0.05, input_size=32)


# ---------------------------------------------------------------- seed-vgg

def test_seed_vgg_parameter_count_matches_the_question():
    with torch.device("meta"):
        m = create_model("seed-vgg", in_chans=5, input_size=320)
    assert count_parameters(m.fc1) == 51200 * 4096 + 4096 == 209_719_296
    assert count_parameters(m) == 241_245_377
    # Keras's summary also counts BatchNorm moving mean/variance: the question's 241.3M
    assert count_parameters(m, keras=True) == 241_270_209
    assert round(count_parameters(m, keras=True) / 1e6, 1) == 241.3
    assert round(count_parameters(m.fc1) / 1e6, 1) == 209.7


def test_seed_vgg_structure_follows_keras_code():
    m = SeedVGG(5, input_size=64, width=0.125)
    convs = [mod for mod in m.features if isinstance(mod, nn.Conv2d)]
    assert len(convs) == 13
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(mod, nn.MaxPool2d) for mod in m.features) == 5
    layers = list(m.features)
    for i, mod in enumerate(layers):  # Conv -> ReLU -> BN, as written in the question
        if isinstance(mod, nn.Conv2d):
            assert isinstance(layers[i + 1], nn.ReLU) and isinstance(layers[i + 2], nn.BatchNorm2d)
    bns = [mod for mod in m.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 15
    assert all(bn.momentum == pytest.approx(0.01) and bn.eps == pytest.approx(1e-3) for bn in bns)
    assert m.fc1.out_features == m.fc2.out_features == 512 and m.head.out_features == 1
    # Keras defaults: zero biases, glorot-uniform kernels (within the bound, spread over it)
    for lin in [*convs, m.fc1, m.fc2, m.head]:
        assert torch.count_nonzero(lin.bias) == 0
        w = lin.weight
        fan_in = w.shape[1] * w[0, 0].numel()
        fan_out = w.shape[0] * w[0, 0].numel()
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        assert w.abs().max() <= bound + 1e-6
        assert w.abs().max() > 0.5 * bound
    assert not any(isinstance(mod, nn.Dropout) for mod in m.modules())
    assert sum(isinstance(mod, nn.Dropout) for mod in SeedVGG(5, 64, 0.125, dropout=0.5).modules()) == 2


def test_seed_vgg_l2_penalty_is_keras_l2_on_the_two_dense_kernels():
    torch.manual_seed(0)
    m = SeedVGG(5, input_size=32, width=0.0625)
    expected = 0.01 * (m.fc1.weight.detach().pow(2).sum() + m.fc2.weight.detach().pow(2).sum())
    pen = m.l2_penalty()
    torch.testing.assert_close(pen.detach(), expected)
    pen.backward()  # differentiable: gradient 2 * 0.01 * W on those kernels only
    torch.testing.assert_close(m.fc1.weight.grad, 0.02 * m.fc1.weight.detach())
    assert m.head.weight.grad is None and m.features[0].weight.grad is None


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_keras_l2_folded_into_the_optimizer_equals_the_loss_term(optimizer):
    """A step with the L2 folded into coupled weight decay == a step with the loss term.

    (One step, to float rounding: the reference Adam is the unfused kernel, and
    BatchNorm on a batch of 4 amplifies rounding chaotically over more steps.)"""
    import copy
    import torch.nn.functional as F
    from mammodecomp.config import resolve_config
    from mammodecomp.fit import Normalized, _optimizer, keras_l2_folded
    cfg = resolve_config(recipe="seed", overrides=[f"train.optimizer={optimizer}", "train.lr=0.01"])
    torch.manual_seed(0)
    base = Normalized(SeedVGG(2, input_size=32, width=0.0625), [0.0, 0.0], [1.0, 1.0])
    x, y = torch.rand(4, 2, 32, 32), torch.tensor([0.0, 1.0, 1.0, 0.0])
    runs = []
    for fold in (True, False):
        m = copy.deepcopy(base).train()
        if fold:
            opt = _optimizer(cfg, m)
            assert keras_l2_folded(cfg, m) and len(opt.param_groups) == 2
            assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.02)
        else:  # the Keras formulation: penalty in the loss, plain optimiser
            kw = {"eps": 1e-7} if optimizer == "adam" else {"momentum": 0.9, "nesterov": True}
            opt = getattr(torch.optim, optimizer.upper() if optimizer == "sgd" else "Adam")(
                m.parameters(), lr=0.01, **kw)
        for _ in range(1):
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(m(x), y)
            if not fold:
                loss = loss + m.model.l2_penalty()
            loss.backward()
            opt.step()
        runs.append(m.state_dict())
    for k in runs[0]:
        torch.testing.assert_close(runs[0][k], runs[1][k], rtol=1e-5, atol=2e-6, msg=k)
    assert not torch.equal(runs[0]["model.fc1.weight"], base.state_dict()["model.fc1.weight"])
    # AdamW decays decoupled: not the same update, so the trainer keeps the loss term
    cfg_w = resolve_config(recipe="seed", overrides=["train.optimizer=adamw"])
    assert not keras_l2_folded(cfg_w, base)


def test_seed_vgg_head_runs_in_float32_under_bf16_autocast():
    m = SeedVGG(1, input_size=32, width=0.0625).eval()
    seen = []
    m.fc1.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    m.features[0].register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(torch.rand(2, 1, 32, 32))
    assert seen == [torch.bfloat16, torch.float32] and out.dtype == torch.float32


def test_seed_vgg_forward_features_are_unpooled_maps():
    m = create_model("seed-vgg", in_chans=3, input_size=(64, 96), width=0.0625).eval()
    f = m.forward_features(torch.rand(1, 3, 64, 96))
    assert f.shape == (1, 32, 2, 3)
    assert m.flatten_dim == 32 * 2 * 3


# ---------------------------------------------------------------- small

def test_small_is_compact_and_checkpoints_round_trip(tmp_path):
    from safetensors.torch import save_file
    torch.manual_seed(0)
    m = create_model("small", in_chans=5, input_size=128)
    assert 50_000 < count_parameters(m) < 150_000
    assert m.forward_features(torch.zeros(1, 5, 128, 128)).shape == (1, 128, 16, 16)
    path = tmp_path / "small.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    m2 = create_model("small", in_chans=5, weights=path)
    x = torch.rand(3, 5, 32, 32)
    torch.testing.assert_close(m.eval()(x), m2.eval()(x))
    assert m2.data_config["pretrained"] == f"file:{path}"
    with pytest.raises(InputError, match="does not match"):
        create_model("small", in_chans=4, weights=path)


# ---------------------------------------------------------------- offline weights

def test_lite0_package_maps_every_tensor_onto_timm():
    import timm
    raw = torch.load(lite0_package_path(), map_location="cpu", weights_only=True)
    mapped = map_lukemelas_lite0(raw)
    assert len(mapped) == len(raw) == 296
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert set(mapped) == set(ref)
    assert all(mapped[k].shape == ref[k].shape for k in ref)
    with pytest.raises(InputError, match="_bogus"):
        map_lukemelas_lite0({"_bogus.weight": torch.zeros(1)})


def test_lite0_weights_recognise_chelsea_the_cat():
    import timm
    from skimage import data
    from skimage.transform import resize
    m = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    m.load_state_dict(load_lite0_imagenet(), strict=True)
    img = resize(data.chelsea().astype(np.float32) / 255.0, (224, 224), anti_aliasing=True)
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
    x = (x - 0.5) / 0.5  # TF EfficientNet-lite preprocessing: [-1, 1]
    with torch.no_grad():
        top5 = m(x).topk(5).indices[0].tolist()
    assert any(281 <= c <= 285 for c in top5), top5
    assert 281 <= top5[0] <= 285


def test_pretrained_without_offline_source_names_what_to_provide():
    with pytest.raises(InputError, match=r"weights=PATH.*timm/resnet10t") as err:
        create_model("timm:resnet10t", in_chans=5, pretrained=True)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="not found"):
        create_model("timm:resnet10t", in_chans=5, weights="/nonexistent/w.safetensors")


def test_pretrained_from_populated_torch_hub_cache(tmp_path, monkeypatch):
    import timm
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    assert find_cached_timm_weights("resnet10t") is None
    torch.manual_seed(1)
    ref = timm.create_model("resnet10t", pretrained=False)
    url = timm.models.get_pretrained_cfg("resnet10t").url
    torch.save(ref.state_dict(), hub / "checkpoints" / os.path.basename(url))
    m = create_model("timm:resnet10t", in_chans=3, pretrained=True, stem_init="timm")
    assert m.data_config["pretrained"].startswith("cache:")
    torch.testing.assert_close(m.backbone.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)
    torch.testing.assert_close(m.backbone.conv1[0].weight, ref.conv1[0].weight)  # K = 3: unchanged


def test_load_state_dict_file_rejects_non_state_dicts(tmp_path):
    p = tmp_path / "x.pt"
    torch.save([1, 2], p)
    with pytest.raises(InputError, match="no state dict"):
        load_state_dict_file(p)
    q = tmp_path / "y.pt"
    torch.save({"state_dict": {"module.a": torch.ones(1)}}, q)
    assert list(load_state_dict_file(q)) == ["a"]


# ---------------------------------------------------------------- stems

def _random_split(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """(N,1,H,W) grey -> (N,K,H,W) components summing to it, some negative (like VMD modes)."""
    w = torch.rand(x.shape[0], k, *x.shape[2:], generator=gen)
    w = w / w.sum(1, keepdim=True)
    noise = torch.randn(x.shape[0], k, *x.shape[2:], generator=gen) * 0.1
    noise = noise - noise.mean(1, keepdim=True)
    return x * w + noise


def _resnet_weights_file(tmp_path):
    import timm
    from safetensors.torch import save_file
    torch.manual_seed(3)
    ref = timm.create_model("resnet10t", pretrained=False)
    for mod in ref.modules():  # non-trivial BN statistics so eval-mode equality means something
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "resnet10t.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    return ref.eval(), path


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite0", "resnet10t"])
def test_sum_preserving_stem_reproduces_pretrained_grey_network(arch, tmp_path):
    import timm
    k = 5
    if arch == "tf_efficientnet_lite0":  # TF 'same' padding, mean = std = 0.5
        ref = timm.create_model(arch, pretrained=False).eval()
        ref.load_state_dict(load_lite0_imagenet())
        model = create_model(f"timm:{arch}", in_chans=k, pretrained=True, input_size=64).eval()
        mean, std = (0.5,) * 3, (0.5,) * 3
    else:  # zero padding, ImageNet mean/std, weights from a local file
        ref, path = _resnet_weights_file(tmp_path)
        model = create_model(f"timm:{arch}", in_chans=k, weights=path, input_size=64).eval()
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    gen = torch.Generator().manual_seed(0)
    grey = torch.rand(2, 1, 64, 64, generator=gen)
    comps = _random_split(grey, k, gen)
    torch.testing.assert_close(comps.sum(1, keepdim=True), grey)
    rgb = (grey.expand(-1, 3, -1, -1) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        want = ref.forward_head(ref.forward_features(rgb), pre_logits=True)
        got = model.forward_head(model.forward_features(comps), pre_logits=True)
        want_maps = ref.forward_features(rgb)
        got_maps = model.forward_features(comps)
    assert want.abs().max() > 1e-2
    assert (got - want).abs().max().item() < 1e-4
    assert (got_maps - want_maps).abs().max().item() < 1e-4
    dc = model.data_config
    assert dc["normalization"] == "folded-into-stem"
    assert dc["mean"] == (0.0,) * k and dc["std"] == (1.0,) * k and dc["stem_init"] == "sum-preserving"
    assert isinstance(model.get_submodule(dc["first_conv"]), nn.Conv2d)
    # the other stems do not have this property
    other = create_model(f"timm:{arch}", in_chans=k, pretrained=True, stem_init="timm",
                         weights=None if arch.startswith("tf_") else path).eval()
    with torch.no_grad():
        got_other = other.forward_head(other.forward_features(comps), pre_logits=True)
    assert (got_other - want).abs().max().item() > 1e-2


def test_sum_preserving_checkpoint_rebuilds_offline(tmp_path):
    from safetensors.torch import save_file
    _, path = _resnet_weights_file(tmp_path)
    m = create_model("timm:resnet10t", in_chans=4, weights=path, input_size=32).eval()
    ckpt = tmp_path / "fold.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(ckpt))
    x = torch.rand(2, 4, 32, 32)
    # from the checkpoint file directly
    m2 = create_model("timm:resnet10t", in_chans=4, weights=ckpt, input_size=32).eval()
    # or: the same structure without any pretrained source, then load_state_dict
    dc = m.data_config
    m3 = create_model(dc["model"], dc["in_chans"], input_size=dc["input_size"][1:], **dc["create_kwargs"])
    m3.load_state_dict(m.state_dict())
    m3.eval()
    with torch.no_grad():
        torch.testing.assert_close(m2(x), m(x))
        torch.testing.assert_close(m3(x), m(x))


def test_other_stem_inits(tmp_path):
    from timm.models import adapt_input_conv
    ref, path = _resnet_weights_file(tmp_path)
    w_rgb = ref.conv1[0].weight.detach()
    for k in (1, 5):
        m = create_model("timm:resnet10t", in_chans=k, weights=path, stem_init="timm")
        torch.testing.assert_close(m.backbone.conv1[0].weight.detach(), adapt_input_conv(k, w_rgb.clone()))
        assert m.data_config["normalization"] == "fold"
    m = create_model("timm:resnet10t", in_chans=5, weights=path, stem_init="zero-extra")
    w = m.backbone.conv1[0].weight.detach()
    torch.testing.assert_close(w[:, :3], w_rgb)
    assert torch.count_nonzero(w[:, 3:]) == 0
    m = create_model("timm:resnet10t", in_chans=2, weights=path, stem_init="zero-extra")
    torch.testing.assert_close(m.backbone.conv1[0].weight.detach(), w_rgb[:, :2])
    m = create_model("timm:resnet10t", in_chans=5, weights=path, stem_init="random")
    w = m.backbone.conv1[0].weight.detach()
    assert w.shape[1] == 5 and w.abs().sum() > 0
    assert not torch.allclose(w[:, :3], w_rgb)
    torch.testing.assert_close(m.backbone.conv1[1].weight, ref.conv1[1].weight)  # rest is pretrained


def test_adapt_stem_weight_sum_preserving_algebra():
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    new, off = adapt_stem_weight(w, 3, "sum-preserving", mean, std)
    x = torch.rand(1, 1, 9, 9)
    xs = torch.cat([x * 0.2, x * 0.3, x * 0.5], 1)  # components of x
    rgb = (x.expand(-1, 3, -1, -1) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    conv.weight.data.copy_(new)
    want = nn.functional.conv2d(rgb, w, padding=1)
    torch.testing.assert_close(OffsetConv2d(conv, off)(xs), want, atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="mean and std"):
        adapt_stem_weight(w, 3, "sum-preserving")
    with pytest.raises(InputError, match="3-channel"):
        adapt_stem_weight(torch.zeros(4, 2, 3, 3), 3, "timm")


def test_offset_stem_runs_under_bf16_autocast_and_channels_last(tmp_path):
    _, path = _resnet_weights_file(tmp_path)
    m = create_model("timm:resnet10t", in_chans=5, weights=path).eval().to(memory_format=torch.channels_last)
    x = torch.rand(2, 5, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    with torch.no_grad():
        y32 = m(x)
    assert y.shape == (2,)
    torch.testing.assert_close(y.float(), y32, atol=0.1, rtol=0.1)


def test_sum_preserving_uses_the_given_weights_normalisation(tmp_path):
    ref, path = _resnet_weights_file(tmp_path)
    model = create_model("timm:resnet10t", in_chans=3, weights=path, weights_mean=(0.5, 0.5, 0.5),
                         weights_std=(0.25, 0.5, 1.0)).eval()
    gen = torch.Generator().manual_seed(1)
    grey = torch.rand(1, 1, 40, 40, generator=gen)
    comps = _random_split(grey, 3, gen)
    rgb = (grey.expand(-1, 3, -1, -1) - 0.5) / torch.tensor([0.25, 0.5, 1.0]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = ref.forward_head(ref.forward_features(rgb), pre_logits=True)
        got = model.forward_head(model.forward_features(comps), pre_logits=True)
    assert (got - want).abs().max().item() < 1e-4
