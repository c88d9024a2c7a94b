"""Data-parallel training (DDP, gloo on CPU): two processes with the same
global batch match one process; torchrun trains the folds of a run."""
import os

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from mammodecomp.config import dump_config, resolve_config
from mammodecomp.scale.ddp import TorchrunFoldRunner, fit_fold_ddp, free_port
from mammodecomp.fit import fit_fold, load_fold_model
from mammodecomp.rundir import read_run as load_run
from mammodecomp.train import cross_validate

pytestmark = pytest.mark.xdist_group("train")

N, C, S = 28, 2, 16
TRAIN, VAL, TEST = np.arange(19), np.arange(19, 23), np.arange(23, 28)


class TinyNet(nn.Module):
    """No BatchNorm, no dropout: data-parallel equals single-process exactly (up to float sums)."""

    def __init__(self, in_chans):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 4, 3, padding=1)
        self.head = nn.Linear(4, 1)

    def forward_features(self, x):
        return torch.relu(self.conv(x))

    def forward_head(self, f, pre_logits=False):
        p = f.mean((2, 3))
        return p if pre_logits else self.head(p).reshape(-1)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    # the seed model's Keras L2 interface (train.keras_l2): a penalty on the head's kernel
    l2 = 0.01

    def l2_params(self):
        return [self.head.weight]

    def l2_penalty(self):
        return self.l2 * (self.head.weight ** 2).sum()


def tiny_factory(cfg, in_chans):
    return TinyNet(in_chans)


def _cfg(**kw):
    # global batch 8 over 19 training rows: batches 8, 8, 3 (the last one split 2 + 1 over two ranks)
    return resolve_config(recipe="small", overrides=["train.epochs=3", "train.batch_size=8", "train.lr=0.01",
                                                     "train.augment=true", "train.early_stopping=null"])


def _data():
    rng = np.random.default_rng(0)
    x = rng.random((N, C, S, S)).astype(np.float32)
    y = np.tile([0, 1], N // 2)
    x[y == 1, 0, 4:12, 4:12] += 0.5
    return x, y


def _worker(rank, world, port, cfg_yaml, out):
    import yaml

    from mammodecomp.config import Config
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x, y = _data()
        cfg = Config.model_validate(yaml.safe_load(cfg_yaml))
        res = fit_fold_ddp(cfg, x, y, TRAIN, VAL, TEST, out, seed=3, model_factory=tiny_factory)
        if rank == 0:
            np.save(os.path.join(out, "test_logits.npy"), res.test_logits)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one_process(tmp_path):
    cfg = _cfg()
    mp.spawn(_worker, args=(2, free_port(), dump_config(cfg), str(tmp_path / "ddp")), nprocs=2, join=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x, y = _data()
        single = fit_fold_ddp(cfg, x, y, TRAIN, VAL, TEST, tmp_path / "one", seed=3, model_factory=tiny_factory)
    finally:
        torch.set_num_threads(threads)
    a = pd.read_csv(tmp_path / "one" / "steps.csv")
    b = pd.read_csv(tmp_path / "ddp" / "steps.csv")
    assert len(a) == len(b) == 9 and list(a["batch"]) == [8, 8, 3] * 3
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=0, atol=1e-5)
    assert a["loss"].iloc[-3:].mean() < a["loss"].iloc[:3].mean()   # it did learn
    np.testing.assert_allclose(np.load(tmp_path / "ddp" / "test_logits.npy"), single.test_logits,
                               rtol=0, atol=1e-5)
    ha, hb = pd.read_csv(tmp_path / "one" / "history.csv"), pd.read_csv(tmp_path / "ddp" / "history.csv")
    np.testing.assert_allclose(hb["val_loss"], ha["val_loss"], rtol=0, atol=1e-5)


#: every training option, each run by one process and by two gloo ranks (name -> overrides, tolerance)
OPTIONS = {
    "plain": ([], 1e-5),
    "ema": (["train.ema=0.8"], 1e-5),
    "label-smoothing": (["train.label_smoothing=0.1"], 1e-5),
    "sampler": (["train.balance=sampler"], 1e-5),
    "no-augment": (["train.augment=false"], 1e-5),
    "keras-l2-in-optimiser": (["train.keras_l2=true", "train.optimizer=adam"], 1e-5),
    "keras-l2-in-loss": (["train.keras_l2=true"], 1e-5),
    "channels-last": (["train.channels_last=true"], 1e-5),
    "device-resident": (["train.device_resident=true"], 1e-3),   # float16 copy: same on both paths
    "early-stopping": (["train.early_stopping=1", "train.epochs=4"], 1e-5),
    "bf16": (["train.amp=bf16"], 3e-2),
}


def _options_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x, y = _data()
        for name, (ov, _) in OPTIONS.items():
            cfg = resolve_config(recipe="small", overrides=["train.epochs=2", "train.batch_size=8", "train.lr=0.01",
                                                            "train.early_stopping=null", *ov])
            fit_fold_ddp(cfg, x, y, TRAIN, VAL, TEST, os.path.join(out, name), seed=3, model_factory=tiny_factory)
    finally:
        dist.destroy_process_group()


def test_every_training_option_gives_the_same_history_on_one_and_two_ranks(tmp_path):
    """One fold loop for 1..W ranks: each option's history, column by column, and the selected
    epoch agree between one process and two gloo ranks (a BatchNorm-free model, so they must)."""
    mp.spawn(_options_worker, args=(2, free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    x, y = _data()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, (ov, tol) in OPTIONS.items():
            cfg = resolve_config(recipe="small", overrides=["train.epochs=2", "train.batch_size=8", "train.lr=0.01",
                                                            "train.early_stopping=null", *ov])
            one = fit_fold(cfg, x, y, TRAIN, VAL, TEST, tmp_path / "one" / name, seed=3, model_factory=tiny_factory)
            ha = pd.read_csv(tmp_path / "one" / name / "history.csv")
            hb = pd.read_csv(tmp_path / "ddp" / name / "history.csv")
            assert list(ha.columns) == list(hb.columns), name
            assert ("reg_loss" in ha.columns) == ("keras-l2" in name), name
            for col in ha.columns:
                if col != "seconds":
                    np.testing.assert_allclose(hb[col], ha[col], rtol=0, atol=tol, err_msg=f"{name}: {col}")
            two = pd.read_csv(tmp_path / "ddp" / name / "steps.csv")
            np.testing.assert_allclose(two["loss"], pd.read_csv(tmp_path / "one" / name / "steps.csv")["loss"],
                                       rtol=0, atol=tol, err_msg=name)
            assert len(ha) == (2 if name != "early-stopping" else len(hb)), name
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("extra", [[], ["train.ema=0.8"]], ids=["plain", "ema"])
def test_single_process_ddp_path_is_the_fit_fold_recipe(tmp_path, extra):
    """World size 1: the same model (BatchNorm and dropout included), batches and augmentation as
    fit_fold; with a weight average, the same average is judged."""
    cfg = resolve_config(recipe="small", overrides=["train.epochs=2", "train.batch_size=8", *extra])
    x, y = _data()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = fit_fold(cfg, x, y, TRAIN, VAL, TEST, tmp_path / "a", seed=11)
        b = fit_fold_ddp(cfg, x, y, TRAIN, VAL, TEST, tmp_path / "b", seed=11)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(b.test_logits, a.test_logits, rtol=0, atol=1e-5)
    np.testing.assert_allclose(b.history["train_loss"], a.history["train_loss"], rtol=0, atol=1e-5)
    assert a.best_epoch == b.best_epoch


def test_torchrun_fold_runner_fills_the_run_directory(tiny_cfg, tmp_path):
    cfg = tiny_cfg(tmp_path, "train.augment=false")   # no augmentation: each rank reads its share only
    run = cross_validate(cfg, tmp_path / "run", progress_bars=False,
                         fold_runner=TorchrunFoldRunner(nproc_per_node=2, backend="gloo"))
    r = load_run(run)
    assert set(r.oof["roi_id"]) == set(r.manifest["roi_id"])
    x = r.inputs()
    pos = {rid: i for i, rid in enumerate(r.manifest["roi_id"])}
    for f in range(2):
        steps = pd.read_csv(run / "folds" / f"r0f{f}" / "steps.csv")
        assert steps["batch"].max() == 8              # the global batch, not the per-rank share
        test = pd.read_csv(run / "folds" / f"r0f{f}" / "test.csv", dtype={"roi_id": str})
        model = load_fold_model(run, 0, f)
        with torch.no_grad():
            z = model(torch.from_numpy(x[[pos[i] for i in test["roi_id"]]])).numpy()
        np.testing.assert_allclose(z, test["logit"].to_numpy(), rtol=0, atol=1e-4)
