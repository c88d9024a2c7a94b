"""Capacity: parameters, parameters per training ROI, FLOPs, the largest layer.

The model is the run's own (fold 0's checkpoint via ``train.load_fold_model``;
when it cannot be loaded, a fresh ``models.create_model`` from the config).
FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one
input ROI. For the question's ``seed-vgg`` run at reduced scale, the same
architecture at the question's full scale (320x320, width 1) is also counted,
on the ``meta`` device (no memory, no compute).
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from ._common import Finding
from .checks import register_check

#: parameters per training ROI above which a from-scratch model can memorise the data
PARAMS_PER_ROI_HIGH = 1000.0
#: ... and above which it is worth a note
PARAMS_PER_ROI_MEDIUM = 100.0
#: the question's data: 1303 ROIs, 5 components, 320x320, 5 folds
SEED_FULL = {"n_rois": 1303, "k": 5, "size": 320, "n_folds": 5}

# finding id and the names of the values it writes
PARAMETERS = "capacity.parameters"
PARAMS, N_TRAIN, PARAMS_PER_TRAIN_ROI, FLOPS = "params", "n_train", "params_per_train_roi", "flops"
INPUT_SHAPE, LARGEST_LAYER, LARGEST_TYPE = "input_shape", "largest_layer", "largest_type"
LARGEST_PARAMS, LARGEST_SHARE, PRETRAINED = "largest_params", "largest_share", "pretrained"
MODEL, MODEL_ORIGIN, FULL_SCALE = "model", "model_origin", "full_scale"
#: the probe recipe's number of frozen features (the regression's inputs)
PROBE_FEATURES = "probe_features"
WRITES = {PARAMETERS: (PARAMS, N_TRAIN, PARAMS_PER_TRAIN_ROI, FLOPS, INPUT_SHAPE, LARGEST_LAYER, LARGEST_TYPE,
                       LARGEST_PARAMS, LARGEST_SHARE, PRETRAINED, MODEL, MODEL_ORIGIN, FULL_SCALE,
                       PROBE_FEATURES)}


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def largest_layer(model: nn.Module) -> tuple[str, str, int]:
    """(name, type, parameters) of the module that directly holds the most parameters.

    Examples
    --------
    >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(100, 10))
    >>> largest_layer(m)
    ('2', 'Linear', 1010)
    """
    best = ("", "", 0)
    for name, mod in model.named_modules():
        n = sum(p.numel() for p in mod.parameters(recurse=False))
        if n > best[2]:
            best = (name, type(mod).__name__, int(n))
    return best


def count_flops(model: nn.Module, shape: tuple, device: str = "cpu") -> int:
    """FLOPs of one forward pass on one input of *shape* (C,H,W)."""
    was_training = model.training
    model.eval()
    x = torch.zeros((1, *shape), device=device)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x)
    finally:
        model.train(was_training)
    return int(fc.get_total_flops())


def _run_model(run, load_model=None):
    k = len(run.info.get("channels") or []) or None
    errors = []
    if run.folds:
        try:
            if load_model is None:
                from ..fit import load_fold_model as load_model
            r, f = run.folds[0]
            return load_model(run.path, r, f), k, "fold checkpoint"
        except Exception as e:  # noqa: BLE001 - fall back to a fresh model
            errors.append(f"{type(e).__name__}: {e}")
    from ..models import create_model
    if k is None:
        comps = run.components()
        k = int(comps.shape[1]) if comps is not None else int(run.cfg("decomposition.k", 5))
    m = run.cfg("model", {})
    model = create_model(m.get("name", "small"), in_chans=k, pretrained=False,
                         stem_init=m.get("stem_init", "sum-preserving"),
                         input_size=int(run.cfg("data.roi_size", 64)), **dict(m.get("kwargs") or {}))
    return model.eval(), k, "fresh model from config (" + "; ".join(errors) + ")"


def _full_scale_seed(run) -> dict | None:
    """The seed-vgg at the question's scale, counted on the meta device."""
    if run.cfg("model.name") != "seed-vgg":
        return None
    kw = dict(run.cfg("model.kwargs") or {})
    kw.pop("width", None)
    return _full_scale_cached(tuple(sorted((k, v) for k, v in kw.items() if isinstance(v, (int, float, str)))))


@functools.lru_cache(maxsize=4)
def _full_scale_cached(kw_items: tuple) -> dict | None:
    kw = dict(kw_items)
    try:
        from ..models import create_model
        s = SEED_FULL
        with torch.device("meta"):
            model = create_model("seed-vgg", in_chans=s["k"], pretrained=False, input_size=s["size"], **kw)
        n = count_params(model)
        name, typ, big = largest_layer(model)
        try:
            flops = count_flops(model, (s["k"], s["size"], s["size"]), device="meta")
        except Exception:  # noqa: BLE001 - flop counting on meta is best effort
            flops = None
        n_train = s["n_rois"] * (s["n_folds"] - 1) // s["n_folds"]
        return {"params": n, "largest_layer": name, "largest_type": typ, "largest_params": big,
                "flops": flops, "n_train": n_train, "params_per_train_roi": n / n_train,
                "input": [s["k"], s["size"], s["size"]]}
    except Exception:  # noqa: BLE001 - the figure is context, not evidence of this run
        return None


def _n_train(run) -> float:
    """Mean number of training ROIs per fold."""
    n_train = [int(d["n_train"]) for d in run.done.values() if d.get("n_train")]
    if not n_train:
        n_train = [len(run.train_rows(r, f)) for r, f in run.folds]
    return float(np.mean(n_train)) if n_train else float(len(run.manifest))


def probe_feature_count(run) -> int | None:
    """Number of frozen features the probe's regression sees, from its backbone
    built on the ``meta`` device (no weights, no compute); None when unknown.

    One feature block per input channel (``train.probe_features``): the pooled
    head features, or the mean and SD of each stage in ``train.probe_stages``.
    """
    from ..models import create_model
    m = run.cfg("model", {})
    stages = run.cfg("train.probe_stages")
    k = len(run.info.get("channels") or []) or int(run.cfg("decomposition.k", 1) or 1)
    size = int(run.cfg("data.roi_size", 64) or 64)
    try:
        with torch.device("meta"):
            model = create_model(m.get("name", "small"), in_chans=1, pretrained=False,
                                 stem_init="sum-preserving", input_size=size, **dict(m.get("kwargs") or {}))
            x = torch.zeros((1, 1, size, size))
            if stages is None:
                per = model.forward_head(model.forward_features(x), pre_logits=True).shape[-1]
            else:
                hs = model.backbone.forward_intermediates(x, indices=[int(i) for i in stages], stop_early=True,
                                                          intermediates_only=True)
                per = 2 * sum(h.shape[1] for h in hs)
    except Exception:  # noqa: BLE001 - the count is context; unknown is said in the finding
        return None
    return int(k * per)


def _probe_capacity(run) -> Finding:
    """The probe recipe: a logistic regression on frozen pretrained features.
    Its trainable parameters are the regression's (one weight per feature + bias)."""
    n_feat = probe_feature_count(run)
    n_train = _n_train(run)
    n = None if n_feat is None else n_feat + 1
    ppr = None if n is None else n / max(n_train, 1.0)
    text = ("probe recipe: a logistic regression on frozen pretrained features; "
            + (f"{n:,} parameters ({n_feat:,} features + bias) for {n_train:.0f} training ROIs per fold = "
               f"{ppr:,.1f} per ROI" if n is not None else "the number of features is unknown")
            + "; the backbone is pretrained and not trained")
    return Finding(
        PARAMETERS, "capacity", "Capacity", "info", text,
        values={PARAMS: n, N_TRAIN: n_train, PARAMS_PER_TRAIN_ROI: ppr, FLOPS: None, INPUT_SHAPE: None,
                LARGEST_LAYER: "logistic regression", LARGEST_TYPE: "LogisticRegression", LARGEST_PARAMS: n,
                LARGEST_SHARE: 1.0 if n else None, PRETRAINED: True, MODEL: run.cfg("model.name"),
                MODEL_ORIGIN: "probe: frozen pretrained backbone + logistic regression", FULL_SCALE: None,
                PROBE_FEATURES: n_feat},
        meaning="Only the regression is fitted, with its L2 strength chosen inside each fold; the backbone's "
                "pretrained weights are not trained, so they cannot memorise the training ROIs.")


def capacity(run, load_model=None) -> Finding:
    """The capacity finding of one run (severity from params per ROI; the
    verdict combines it with the generalisation gap).

    ``load_model(run_dir, repeat, fold)`` loads a fold's model
    (``train.load_fold_model`` by default)."""
    if run.recipe == "probe":
        return _probe_capacity(run)
    model, k, origin = _run_model(run, load_model)
    size = int(run.cfg("data.roi_size", 0) or 0)
    comps = run.components()
    if comps is not None:
        shape = tuple(int(s) for s in comps.shape[1:])
    else:
        shape = (k, size, size)
    n = count_params(model)
    name, typ, big = largest_layer(model)
    flops = count_flops(model, shape)
    n_train_mean = _n_train(run)
    ppr = n / max(n_train_mean, 1.0)
    pretrained = bool(run.cfg("model.pretrained", False))
    sev = "high" if ppr > PARAMS_PER_ROI_HIGH and not pretrained else \
        "medium" if ppr > PARAMS_PER_ROI_MEDIUM and not pretrained else "info"
    full = _full_scale_seed(run)
    text = (f"{n / 1e6:.2f}M parameters for {n_train_mean:.0f} training ROIs per fold = {ppr:,.0f} per ROI; "
            f"{flops / 1e9:.2f} GFLOPs per ROI of shape {list(shape)}; largest layer '{name}' ({typ}) "
            f"holds {big / 1e6:.2f}M ({100 * big / max(n, 1):.0f}%); "
            + ("pretrained" if pretrained else "trained from scratch"))
    if full:
        text += (f". At the question's full scale ({full['input'][0]}x{full['input'][1]}x{full['input'][2]}, "
                 f"{full['n_train']} training ROIs): {full['params'] / 1e6:.1f}M parameters, "
                 f"{full['params_per_train_roi']:,.0f} per ROI, '{full['largest_layer']}' holds "
                 f"{full['largest_params'] / 1e6:.1f}M")
    return Finding(
        PARAMETERS, "capacity", "Capacity", sev, text,
        values={PARAMS: n, N_TRAIN: n_train_mean, PARAMS_PER_TRAIN_ROI: ppr, FLOPS: flops,
                INPUT_SHAPE: list(shape), LARGEST_LAYER: name, LARGEST_TYPE: typ, LARGEST_PARAMS: big,
                LARGEST_SHARE: big / max(n, 1), PRETRAINED: pretrained, MODEL: run.cfg("model.name"),
                MODEL_ORIGIN: origin, FULL_SCALE: full, PROBE_FEATURES: None},
        figure=None,
        meaning=("With far more free parameters than training ROIs and no prior from pretraining, the "
                 "network can memorise every training ROI (train AUC near 1) without learning what "
                 "separates the classes; dropout and L2 on the dense layers do not change that."
                 if sev == "high" else
                 "The model is large for the data; watch the generalisation gap." if sev == "medium" else
                 "Capacity is moderate for the data or the backbone is pretrained."),
        fix=("Use a small network (recipe small) or a pretrained backbone fine-tuned with the "
             "sum-preserving stem (recipe finetune); replace Flatten+Dense(4096) by global average "
             "pooling; augment." if sev != "info" else ""))


@register_check("capacity", family="capacity", title="Capacity", order=40, writes=WRITES)
def check(ctx) -> list[Finding]:
    """The capacity finding of the context's run (its fold-0 model)."""
    return [capacity(ctx.run, ctx.load_model)]
