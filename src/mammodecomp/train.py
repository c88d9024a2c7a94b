"""Fit one fold, and cross-validate a recipe into a run directory.

The loop follows torchvision's reference ``train_one_epoch`` / ``evaluate``:
read top to bottom. A fold's state (model, optimiser, scheduler, epoch, RNG
states, history) is saved after every epoch, so a killed run resumes from
the last completed epoch of the fold in progress and finishes with the same
numbers as an uninterrupted run.

Invariants
----------
* A fresh model per fold, initialised from a seed derived from (seed, repeat, fold).
* Normalisation statistics are fitted on the fold's training part only.
* Early stopping, checkpoint choice and the decision threshold use the inner
  validation part; the outer test fold is predicted once, at the end.
* Metrics are computed over whole splits, never averaged over batches.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import __version__
from .augment import Augment
from .config import Config, dump_config, load_config
from .errors import InputError, StageMissingError
from .io import atomic_write, read_json, write_json
from .manifest import save_manifest
from .progress import progress, quiet

HISTORY_METRICS = ["loss", "auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity",
                   "precision", "f1", "brier"]


# --------------------------------------------------------------------------- helpers
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fold_seed(seed: int, repeat: int, fold: int) -> int:
    return int(seed) * 1_000_003 + repeat * 1009 + fold * 17 + 1


def fold_dir(run_dir: Path, repeat: int, fold: int) -> Path:
    return Path(run_dir) / "folds" / f"r{repeat}f{fold}"


class Normalized(nn.Module):
    """Per-channel normalisation folded in front of a model.

    Takes raw components; exposes ``forward_features``/``forward_head`` of the
    wrapped model so CAMs and probes work on the wrapper.
    """

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, np.float32)).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(np.asarray(std, np.float32)).view(1, -1, 1, 1))

    def normalize(self, x):
        return (x - self.mean) / self.std

    def forward_features(self, x):
        return self.model.forward_features(self.normalize(x))

    def forward_head(self, f, pre_logits: bool = False):
        return self.model.forward_head(f, pre_logits=pre_logits)

    def forward(self, x):
        return self.model(self.normalize(x))


def fit_normalization(x: np.ndarray, idx: np.ndarray, mode: str) -> tuple[list[float], list[float]]:
    """Per-channel mean/std over the training ROIs (``mode='none'``: identity)."""
    C = x.shape[1]
    if mode == "none":
        return [0.0] * C, [1.0] * C
    xs = x[idx]
    mean = xs.mean(axis=(0, 2, 3), dtype=np.float64)
    std = xs.std(axis=(0, 2, 3), dtype=np.float64)
    std = np.where(std < 1e-8, 1.0, std)
    return mean.tolist(), std.tolist()


def build_model(cfg: Config, in_chans: int) -> nn.Module:
    from .models import create_model
    m = cfg.model
    return create_model(m.name, in_chans=in_chans, pretrained=m.pretrained, weights=m.weights,
                        stem_init=m.stem_init, input_size=cfg.data.roi_size, **dict(m.kwargs))


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray, idx: np.ndarray, *, batch_size: int, device: torch.device,
                   amp: str = "off", channels_last: bool = False, resident: torch.Tensor | None = None) -> np.ndarray:
    """Logits for rows ``idx`` of ``x`` in eval mode.

    With ``resident`` (the same rows as ``x``, already on ``device``; see
    :func:`mammodecomp.scale.resident.make_resident`) batches are gathered on
    the device; either way the logits come back to the host once, at the end.
    """
    model.eval()
    out = []
    idx_dev = torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(device) if resident is not None else None
    for s in range(0, len(idx), batch_size):
        if resident is not None:
            from .scale.resident import gather
            xb = gather(resident, idx_dev[s:s + batch_size], channels_last=channels_last)
        else:
            xb = torch.from_numpy(np.ascontiguousarray(x[idx[s:s + batch_size]], dtype=np.float32)).to(device)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=(amp == "bf16")):
            out.append(model(xb).float().reshape(-1))
    return torch.cat(out).cpu().numpy().astype(np.float64) if out else np.zeros(0)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def _split_metrics(y, logits, prefix: str) -> dict:
    from .metrics import binary_metrics
    m = binary_metrics(y, _sigmoid(logits))
    return {f"{prefix}_{k}": float(m[k]) for k in HISTORY_METRICS if k in m}


def _lr_lambda(cfg: Config, steps_per_epoch: int):
    t = cfg.train
    total = max(1, t.epochs * steps_per_epoch)
    warm = t.warmup_epochs * steps_per_epoch

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if t.schedule == "cosine":
            prog = (step - warm) / max(1, total - warm)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, prog)))
        return 1.0
    return f


def keras_l2_folded(cfg: Config, model: nn.Module) -> bool:
    """Whether the optimiser carries the model's Keras L2 term (see :func:`_optimizer`)."""
    inner = getattr(model, "model", model)
    return bool(cfg.train.keras_l2 and cfg.train.optimizer in ("adam", "sgd") and hasattr(inner, "l2_params"))


def _optimizer(cfg: Config, model: nn.Module):
    """The fold's optimiser, fused where the device has a fused kernel.

    A Keras ``l2(r)`` kernel regulariser adds ``r * sum(W**2)`` to the loss,
    i.e. ``2 r W`` to the kernel's gradient. Adam and SGD apply
    ``weight_decay`` exactly that way (coupled: ``grad += wd * W`` before the
    moments), so with ``keras_l2`` those kernels get ``weight_decay + 2 r``
    and the trainer leaves the loss term out (:func:`keras_l2_folded`): the
    same update, without the penalty's passes over the seed model's
    210M-parameter kernel. AdamW decays decoupled, so there the trainer adds
    the loss term instead.
    """
    t = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    groups: list[dict] | list[torch.nn.Parameter] = params
    if keras_l2_folded(cfg, model):
        inner = getattr(model, "model", model)
        reg = {id(p) for p in inner.l2_params()}
        groups = [{"params": [p for p in params if id(p) in reg], "weight_decay": t.weight_decay + 2 * inner.l2},
                  {"params": [p for p in params if id(p) not in reg], "weight_decay": t.weight_decay}]
    dev = params[0].device.type if params else "cpu"
    fused = {"fused": True} if dev in ("cpu", "cuda") else {}
    if t.optimizer == "adam":
        # Keras Adam defaults: eps 1e-7
        return torch.optim.Adam(groups, lr=t.lr, weight_decay=t.weight_decay, eps=1e-7, **fused)
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay, nesterov=True, **fused)
    return torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay, **fused)


# --------------------------------------------------------------------------- one fold
def epoch_order(balance: str, train_idx: np.ndarray, ytr: np.ndarray, gen: torch.Generator) -> np.ndarray:
    """The training rows of one epoch, in order: a permutation, or a class-balanced
    draw with replacement (``balance='sampler'``), from the fold's own generator."""
    if balance == "sampler":
        npos, nneg = float(ytr.sum()), float(len(ytr) - ytr.sum())
        w = np.where(ytr > 0.5, 0.5 / max(npos, 1), 0.5 / max(nneg, 1))
        return train_idx[torch.multinomial(torch.as_tensor(w), len(train_idx), replacement=True,
                                           generator=gen).numpy()]
    return train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]


@dataclass
class FoldResult:
    test_logits: np.ndarray
    threshold: float
    best_epoch: int
    history: pd.DataFrame
    test_metrics: dict = field(default_factory=dict)


def make_ema(cfg: Config, model: nn.Module):
    """The weight average that ``train.ema`` asks for (``None`` when unset).

    torch's :class:`~torch.optim.swa_utils.AveragedModel` with an exponential
    average of parameters *and* buffers (BatchNorm statistics), updated after
    every optimiser step; its first update copies the model.
    """
    if cfg.train.ema is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema), use_buffers=True)


def _save_state(path: Path, model, opt, sched, epoch, best, aug: Augment, gen: torch.Generator,
                ema=None) -> None:
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
             "epoch": epoch, "best_loss": best["loss"], "best_epoch": best["epoch"], "bad": best["bad"],
             "rng": torch.get_rng_state(), "gen": gen.get_state(), "aug": aug.state()}
    if ema is not None:
        state["ema"] = ema.state_dict()
    with atomic_write(path, "wb") as f:
        torch.save(state, f)


def _save_weights(path: Path, model: nn.Module) -> None:
    from safetensors.torch import save as st_save
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_write(path, "wb") as f:
        f.write(st_save(sd))


def safe_torch_load(path: Path, map_location=None):
    """``torch.load`` with ``weights_only=True``; a pickle that needs code is refused."""
    import pickle
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"refusing to load checkpoint: it is not a plain tensor file ({first[:160]}); "
                         "delete it to restart this fold", path=path) from None


def load_weights(path: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(path))


def fit_fold(cfg: Config, x: np.ndarray, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
             test_idx: np.ndarray, out: Path, *, seed: int, desc: str = "",
             resident: torch.Tensor | None = None) -> FoldResult:
    """Train a fresh model on ``train_idx``, select on ``val_idx``, predict ``test_idx``.

    Writes ``out/history.csv``, ``out/norm.json``, ``out/model.safetensors``
    (the selected checkpoint), ``out/state.pt`` (resume state) and finally
    ``out/done.json``.

    ``resident`` is ``x`` already on the training device (float16, see
    :func:`mammodecomp.scale.resident.make_resident`); with it, or with
    ``train.device_resident`` set, batches are indexed and augmented on the
    device and nothing returns to the host inside an epoch.
    """
    from .scale.resident import cudnn_benchmark, make_resident
    t = cfg.train
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = _device(t.device)
    if resident is None and t.device_resident:
        resident = make_resident(x, device)
    if resident is not None and resident.device != device:
        resident = resident.to(device)
    with cudnn_benchmark(t.cudnn_benchmark, device):
        return _fit_fold(cfg, x, y, train_idx, val_idx, test_idx, out, seed=seed, desc=desc, device=device,
                         resident=resident)


def training_kit(cfg: Config, model: nn.Module, y: np.ndarray, train_idx: np.ndarray, seed: int,
                 device: torch.device):
    """What one fold trains with, shared by the single-process and DDP trainers.

    Returns ``(optimiser, scheduler, steps_per_epoch, generator, augment,
    train_labels, pos_weight)``; the generator (data order) and the augmenter
    are seeded from the fold seed, and nothing here draws from the global RNG.
    """
    t = cfg.train
    opt = _optimizer(cfg, model)
    steps = max(1, math.ceil(len(train_idx) / t.batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, steps))
    gen = torch.Generator().manual_seed(seed + 7)
    aug = Augment(seed + 13)
    ytr = y[train_idx].astype(np.float32)
    npos, nneg = float(ytr.sum()), float(len(ytr) - ytr.sum())
    pos_weight = torch.tensor(nneg / max(npos, 1.0), device=device) if t.balance == "pos_weight" else None
    return opt, sched, steps, gen, aug, ytr, pos_weight


def _fit_fold(cfg, x, y, train_idx, val_idx, test_idx, out: Path, *, seed: int, desc: str, device: torch.device,
              resident: torch.Tensor | None) -> FoldResult:
    from .metrics import choose_threshold
    from .scale.resident import gather, maybe_compile
    t = cfg.train
    mean, std = fit_normalization(x, train_idx, t.normalize)
    write_json(out / "norm.json", {"mean": mean, "std": std})
    torch.manual_seed(seed)
    model = Normalized(build_model(cfg, x.shape[1]), mean, std).to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt, sched, steps, gen, aug, ytr, pos_weight = training_kit(cfg, model, y, train_idx, seed, device)
    ema = make_ema(cfg, model)
    best = {"loss": float("inf"), "epoch": -1, "bad": 0}
    history: list[dict] = []
    start = 0
    state_path, hist_path, best_path = out / "state.pt", out / "history.csv", out / "model.safetensors"
    if state_path.is_file():
        st = safe_torch_load(state_path, map_location=device)
        model.load_state_dict(st["model"])
        if ema is not None:
            ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        torch.set_rng_state(st["rng"])
        gen.set_state(st["gen"])
        aug.set_state(st["aug"])
        best = {"loss": st["best_loss"], "epoch": st["best_epoch"], "bad": st["bad"]}
        start = int(st["epoch"]) + 1
        if hist_path.is_file():
            history = pd.read_csv(hist_path).iloc[:start].to_dict("records")
    l2 = getattr(model.model, "l2_penalty", None) if t.keras_l2 else None
    l2_in_opt = keras_l2_folded(cfg, model)
    yt = torch.from_numpy(y.astype(np.float32))
    if resident is not None:
        yt = yt.to(device)
    fwd = maybe_compile(model, t.compile)
    # what is evaluated, early-stopped on and checkpointed: the weight average when there is one
    judged = model if ema is None else ema.module
    fwd_eval = fwd if ema is None else maybe_compile(judged, t.compile)
    pred_kw = {"device": device, "amp": t.amp, "channels_last": t.channels_last, "resident": resident}
    bar = progress(range(start, t.epochs), total=t.epochs - start, desc=desc or "epochs", leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        order = epoch_order(t.balance, train_idx, ytr, gen)
        reg_total = torch.zeros((), dtype=torch.float64, device=device)
        order_dev = torch.from_numpy(order).to(device) if resident is not None else None
        for s in range(0, len(order), t.batch_size):
            if resident is not None:   # index, augment and label on the device
                bd = order_dev[s:s + t.batch_size]
                xb = gather(resident, bd)
                if t.augment:
                    xb = aug(xb)
                yb = yt.index_select(0, bd)
            else:
                b = order[s:s + t.batch_size]
                xb = torch.from_numpy(np.ascontiguousarray(x[b], dtype=np.float32))
                if t.augment:
                    xb = aug(xb)
                xb = xb.to(device)
                yb = yt[b].to(device)
            if t.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            if t.label_smoothing:
                yb = yb * (1 - t.label_smoothing) + 0.5 * t.label_smoothing
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=(t.amp == "bf16")):
                logits = fwd(xb).float().reshape(-1)
            loss = F.binary_cross_entropy_with_logits(logits, yb, pos_weight=pos_weight)
            if l2 is not None:
                if l2_in_opt:   # the optimiser adds its gradient; the value is logged only
                    with torch.no_grad():
                        reg = l2()
                else:
                    reg = l2()
                    loss = loss + reg
                reg_total += reg.detach().double()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
        row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"]}
        row.update(_split_metrics(y[train_idx], predict_logits(fwd_eval, x, train_idx,
                                                              batch_size=max(64, t.batch_size), **pred_kw), "train"))
        row.update(_split_metrics(y[val_idx], predict_logits(fwd_eval, x, val_idx,
                                                            batch_size=max(64, t.batch_size), **pred_kw), "val"))
        if l2 is not None:
            row["reg_loss"] = float(reg_total) / steps
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        improved = row["val_loss"] < best["loss"] - 1e-6
        if improved:
            best.update(loss=row["val_loss"], epoch=epoch, bad=0)
        else:
            best["bad"] += 1
        if t.select == "last" or improved:
            _save_weights(best_path, judged)
        with atomic_write(hist_path, "w") as f:
            pd.DataFrame(history).to_csv(f, index=False)
        stop = t.early_stopping is not None and t.select != "last" and best["bad"] >= t.early_stopping
        _save_state(state_path, model, opt, sched, epoch if not stop else t.epochs - 1, best, aug, gen, ema)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(tr_auc=f"{row['train_auc']:.2f}", va_auc=f"{row['val_auc']:.2f}",
                            va_loss=f"{row['val_loss']:.2f}", refresh=False)  # shown at the bar's next redraw
        if stop:
            break
    judged.load_state_dict(load_weights(best_path))
    val_logits = predict_logits(fwd_eval, x, val_idx, batch_size=64, **pred_kw)
    threshold = float(choose_threshold(y[val_idx], _sigmoid(val_logits)))
    test_logits = predict_logits(fwd_eval, x, test_idx, batch_size=64, **pred_kw)
    hist = pd.DataFrame(history)
    best_epoch = int(best["epoch"]) if t.select != "last" else int(hist["epoch"].iloc[-1])
    return FoldResult(test_logits=test_logits, threshold=threshold, best_epoch=best_epoch, history=hist)


# --------------------------------------------------------------------------- probe recipe
def probe_features(cfg: Config, x: np.ndarray, cache_dir: Path | None = None, batch_size: int = 32) -> np.ndarray:
    """Frozen pretrained features, one block per channel, computed once and cached.

    Each channel of each ROI is min-max scaled to [0, 1] *within that ROI*
    (no statistic crosses ROIs, so nothing leaks between folds) and passed
    through the 1-channel sum-preserving version of the pretrained backbone;
    the features of the K channels are concatenated. ``train.probe_stages``
    None: the backbone's pooled head features; a list of stage indices: the
    spatial mean and standard deviation of each of those stages' outputs
    (timm ``forward_intermediates``; the backbone stops after the last one).
    ``train.probe_tta="dihedral"`` averages the features of the 8 flips and
    90-degree rotations of each ROI (a per-ROI operation, no label involved).
    """
    import hashlib
    from .models import create_model
    m, t = cfg.model, cfg.train
    stages = None if t.probe_stages is None else [int(i) for i in t.probe_stages]
    tag = f"{m.name}|{m.weights}|{m.kwargs}"
    if stages is not None or t.probe_tta != "none":   # the default keeps the key of older caches
        tag += f"|stages={stages}|tta={t.probe_tta}"
    key = hashlib.sha256(x.tobytes() + tag.encode()).hexdigest()[:20]
    path = (cache_dir / f"probe-{key}.npy") if cache_dir else None
    if path is not None and path.is_file():
        return np.load(path)
    device = _device(t.device)
    torch.manual_seed(0)
    model = create_model(m.name, in_chans=1, pretrained=m.pretrained, weights=m.weights,
                         stem_init="sum-preserving", input_size=cfg.data.roi_size, **dict(m.kwargs)).to(device).eval()
    backbone = getattr(model, "backbone", None)
    if stages is not None:
        if not hasattr(backbone, "forward_intermediates"):
            raise InputError(f"train.probe_stages needs a timm backbone with forward_intermediates; "
                             f"model '{m.name}' has none (set train.probe_stages=null)")
        n_st = len(getattr(backbone, "feature_info", []) or []) or None
        if not stages or min(stages) < 0 or (n_st is not None and max(stages) >= n_st):
            raise InputError(f"train.probe_stages={stages}: stage indices must lie in 0..{(n_st or 1) - 1}")

    def embed(v: torch.Tensor) -> torch.Tensor:
        if stages is None:
            return model.forward_head(model.forward_features(v), pre_logits=True)
        hs = backbone.forward_intermediates(v, indices=stages, stop_early=True, intermediates_only=True)
        return torch.cat([h.mean(dim=(2, 3)) for h in hs] + [h.std(dim=(2, 3), correction=0) for h in hs], 1)

    n_views = 8 if t.probe_tta == "dihedral" else 1
    N, C = x.shape[:2]
    feats = []
    with torch.no_grad():
        for s in progress(range(0, N, batch_size), desc="probe features"):
            xb = torch.from_numpy(np.ascontiguousarray(x[s:s + batch_size], dtype=np.float32))
            lo = xb.amin(dim=(2, 3), keepdim=True)
            hi = xb.amax(dim=(2, 3), keepdim=True)
            xb = (xb - lo) / (hi - lo).clamp_min(1e-6)
            B = xb.shape[0]
            flat = xb.reshape(B * C, 1, *xb.shape[2:]).to(device)
            f = 0
            for k in range(n_views):
                v = torch.rot90(flat, k % 4, dims=(2, 3))
                f = f + embed(torch.flip(v, dims=(3,)) if k >= 4 else v).float()
            f = f / n_views
            feats.append(f.reshape(B, C * f.shape[-1]).cpu().numpy())
    out = np.concatenate(feats).astype(np.float32)
    if path is not None:
        from .io import save_array
        save_array(path, out)
    return out


def fit_probe_fold(cfg: Config, feats: np.ndarray, y: np.ndarray, train_idx, val_idx, test_idx,
                   groups: np.ndarray | None = None) -> FoldResult:
    """Standardise, fit L2 logistic regression with C chosen inside the fold, predict.

    ``train.probe_select="val"``: C from the grid ``probe_C x (1e-3, 1e-2,
    1e-1, 1)`` by AUC on the inner validation split; the model is fit on the
    training part. ``"inner-cv"``: C from ``probe_C x 10^(-5, -4.5, ..., 0)``
    by the pooled AUC of a 5-fold CV over training + inner validation, grouped
    by ``groups`` (the patient ids; required) and stratified; the model is then
    refit on training + inner validation, and the threshold and the reported
    validation metrics come from the inner CV's out-of-fold scores. The test
    part is used only to predict.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler
    from .metrics import choose_threshold
    train_idx, val_idx, test_idx = (np.asarray(i, dtype=np.int64) for i in (train_idx, val_idx, test_idx))

    def fit(C, idx):
        sc = StandardScaler().fit(feats[idx])
        clf = LogisticRegression(C=C, max_iter=5000, class_weight="balanced").fit(sc.transform(feats[idx]), y[idx])
        return lambda i: clf.decision_function(sc.transform(feats[i]))

    row = {"epoch": 0, "lr": 0.0}
    inner = None
    if cfg.train.probe_select == "inner-cv":
        if groups is None:
            raise InputError("train.probe_select=inner-cv needs the patient ids (groups) of the ROIs")
        from sklearn.model_selection import StratifiedGroupKFold
        fit_idx = np.concatenate([train_idx, val_idx]) if not np.array_equal(val_idx, test_idx) else train_idx
        g = np.asarray(groups)[fit_idx]
        per_class = min(len(np.unique(g[y[fit_idx] == c])) for c in (0, 1))
        n_inner = min(5, per_class)
        if n_inner >= 2:
            grid = [cfg.train.probe_C * 10.0 ** e for e in np.arange(-5.0, 0.25, 0.5)]
            oof = np.zeros((len(grid), len(fit_idx)))
            for a, b in StratifiedGroupKFold(n_inner, shuffle=True, random_state=0).split(fit_idx, y[fit_idx], g):
                for j, C in enumerate(grid):
                    oof[j, b] = fit(C, fit_idx[a])(fit_idx[b])
            scores = [roc_auc_score(y[fit_idx], o) for o in oof]
            j = int(np.argmax(scores))
            inner = (grid[j], fit_idx, oof[j])
            row.update({"C": grid[j], "inner_cv_auc": float(scores[j]), "inner_folds": n_inner})
    if inner is not None:
        C_best, fit_idx, oof_best = inner
        predict = fit(C_best, fit_idx)
        pos = {int(r): k for k, r in enumerate(fit_idx)}
        if all(int(i) in pos for i in val_idx):   # out-of-fold scores of the validation ROIs
            z_val = oof_best[[pos[int(i)] for i in val_idx]]
        else:                                     # validated on the test fold (the seed protocol)
            z_val = predict(val_idx)
        thr_y, thr_z = y[fit_idx], oof_best
    else:   # the inner validation split (also the fallback when too few patients for an inner CV)
        grid = [cfg.train.probe_C * f for f in (1e-3, 1e-2, 1e-1, 1.0)]
        if len(np.unique(y[val_idx])) == 2:
            scores = [roc_auc_score(y[val_idx], fit(C, train_idx)(val_idx)) for C in grid]
            C_best = grid[int(np.argmax(scores))]
        else:
            C_best = grid[1]
        row["C"] = C_best
        predict = fit(C_best, train_idx)
        z_val = predict(val_idx)
        thr_y, thr_z = y[val_idx], z_val
    row.update(_split_metrics(y[train_idx], predict(train_idx), "train"))
    row.update(_split_metrics(y[val_idx], z_val, "val"))
    thr = float(choose_threshold(thr_y, _sigmoid(thr_z)))
    return FoldResult(test_logits=predict(test_idx), threshold=thr, best_epoch=0, history=pd.DataFrame([row]))


# --------------------------------------------------------------------------- cross-validation
RUN_FORMAT = 1


def _machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} {os.cpu_count()} cpu, {gpu}, torch {torch.__version__}"


def _check_existing(run_dir: Path, cfg: Config) -> dict:
    """Refuse to resume another format or config; returns the previous run.json ({} when none)."""
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        return {}
    info = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    if info.get("format") not in (None, RUN_FORMAT):
        from .errors import VersionMismatchError
        raise VersionMismatchError(f"run directory was written by mammodecomp {info.get('version')} "
                                   f"(run format {info.get('format')}); this is format {RUN_FORMAT}: "
                                   "use a new --out", path=run_dir)
    # compared as configs, not as text: a field added since (with its default) is no change
    if load_config(cfg_path) != cfg:
        raise InputError("run directory holds a run with a different config; resume needs the same config "
                         "(use a new --out, or --overwrite)", path=run_dir)
    return info


def _check_same_inputs(run_dir: Path, old: dict, inp) -> None:
    """A resumed run (``old``: its run.json) must see the rows and ROI pixels its finished folds
    were trained on."""
    was = {"manifest": old.get("manifest_hash"), "ROIs": Path(str(old.get("rois_path", ""))).name}
    now = {"manifest": inp.info["manifest_hash"], "ROIs": inp.rois_path.name}
    for what in was:
        if was[what] and was[what] != now[what]:
            raise InputError(f"run directory was trained on other {what} ({was[what]}; now {now[what]}): the data "
                             "or the ROI cropping changed since; use a new --out, or --overwrite", path=run_dir)


@dataclass
class FoldTask:
    """One (repeat, fold) of a run that still has to be trained.

    Row indices are positions in the run's manifest (and in ``Inputs.x``);
    ``out`` is the fold directory, ``seed`` the fold's seed and
    ``validated_on_test`` says that ``val_idx`` is the test fold (the seed
    protocol).
    """

    repeat: int
    fold: int
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    out: Path
    seed: int
    validated_on_test: bool


def write_fold_result(task: FoldTask, res: FoldResult, roi_ids: np.ndarray) -> None:
    """Write a finished fold's ``test.csv`` then ``done.json`` (the marker, last)."""
    fd = Path(task.out)
    fd.mkdir(parents=True, exist_ok=True)
    test = pd.DataFrame({"roi_id": np.asarray(roi_ids)[task.test_idx], "logit": res.test_logits})
    with atomic_write(fd / "test.csv", "w") as fh:
        test.to_csv(fh, index=False, float_format="%.10g")
    hist = res.history
    last = hist.iloc[-1].to_dict() if len(hist) else {}
    write_json(fd / "done.json", {"best_epoch": res.best_epoch, "threshold": res.threshold,
                                  "epochs_run": int(len(hist)), "validated_on_test": task.validated_on_test,
                                  "n_train": int(len(task.train_idx)), "n_val": int(len(task.val_idx)),
                                  "n_test": int(len(task.test_idx)),
                                  "final_train_auc": last.get("train_auc"), "final_val_auc": last.get("val_auc")})


def run_fold_task(cfg: Config, x: np.ndarray, y: np.ndarray, roi_ids: np.ndarray, task: FoldTask, *,
                  resident: torch.Tensor | None = None) -> None:
    """Train one fold with :func:`fit_fold` and write its result files.

    This is what every fold runner does for each task, wherever it runs.
    """
    res = fit_fold(cfg, x, y, task.train_idx, task.val_idx, task.test_idx, task.out, seed=task.seed,
                   desc=f"repeat {task.repeat} fold {task.fold}", resident=resident)
    write_fold_result(task, res, roi_ids)


def serial_fold_runner(cfg: Config, inputs, y: np.ndarray, tasks: list[FoldTask]) -> None:
    """The default fold runner: the folds one after the other in this process.

    With ``train.device_resident`` the inputs are copied to the device once
    for all folds.
    """
    resident = None
    if cfg.train.device_resident:
        from .scale.resident import make_resident
        resident = make_resident(inputs.x, _device(cfg.train.device))
    roi_ids = inputs.manifest["roi_id"].to_numpy()
    for task in progress(tasks, total=len(tasks), desc="folds", leave=True):
        run_fold_task(cfg, inputs.x, y, roi_ids, task, resident=resident)


def cross_validate(cfg: Config, out: str | Path, *, overwrite: bool = False, progress_bars: bool = True,
                   fold_runner=None) -> Path:
    """Run a recipe under cross-validation into ``out`` (a run directory).

    Resumable: folds with ``done.json`` are kept, the fold in progress restarts
    from its last completed epoch. Returns the run directory.

    ``fold_runner(cfg, inputs, y, tasks)`` trains the folds still to do
    (``tasks``: a list of :class:`FoldTask`; ``inputs``: the
    :class:`mammodecomp.data.Inputs`) and must leave each task's
    ``test.csv`` and ``done.json`` in ``task.out`` (see
    :func:`run_fold_task`); default :func:`serial_fold_runner`. Runners that
    spread folds over processes, GPUs or machines are in
    :mod:`mammodecomp.scale`. The probe recipe's folds always run here.

    Examples
    --------
    >>> from mammodecomp.config import resolve_config
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> cfg = resolve_config(recipe="small", overrides=["data.synth.n_patients=16", "data.roi_size=32",
    ...     "data.synth.size=64", "train.epochs=1", "cv.n_folds=2", "cv.n_boot=20",
    ...     f"decomposition.store={d}/store"])
    >>> run = cross_validate(cfg, d / "run", progress_bars=False)
    >>> sorted(p.name for p in run.iterdir() if not p.name.startswith("."))[:4]
    ['config.yaml', 'folds', 'manifest.parquet', 'oof.csv']
    """
    import shutil

    from .cv import check_plan, make_split_plan
    from .data import prepare_inputs
    from .metrics import pooled_oof_summary

    run_dir = Path(out)
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    previous = _check_existing(run_dir, cfg)
    if cfg.model.weights:   # a bad weights file fails now, not after the ROIs are decomposed
        from .models.weights import load_state_dict_file
        load_state_dict_file(cfg.model.weights)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    t_start = time.perf_counter()
    prev_quiet = os.environ.get("MAMMODECOMP_QUIET")
    if not progress_bars:
        os.environ["MAMMODECOMP_QUIET"] = "1"
    lock = None
    try:
        inp = prepare_inputs(cfg, run_dir, progress=progress_bars and not quiet())
        _check_same_inputs(run_dir, previous, inp)
        df = inp.manifest
        c = cfg.cv
        # the split plan is checked before anything is written: too few patients for the folds
        # leaves no half-made run directory behind
        plan = make_split_plan(df, n_folds=c.n_folds, n_repeats=c.n_repeats, seed=c.seed, scheme=c.scheme,
                               inner_fraction=c.inner_fraction)
        check_plan(plan, df, scheme=c.scheme)
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = _lock_run(run_dir)
        with atomic_write(run_dir / "config.yaml", "w") as f:
            f.write(dump_config(cfg))
        save_manifest(df, run_dir / "manifest.parquet")
        plan_path = run_dir / "splits.csv"
        with atomic_write(plan_path, "w") as f:
            plan.to_csv(f, index=False)
        run_info = {"format": RUN_FORMAT, "version": __version__, "recipe": cfg.recipe,
                    "manifest_hash": inp.info["manifest_hash"], "components_path": str(inp.components_path),
                    "rois_path": str(inp.rois_path), "channels": inp.channels, "n_rois": inp.info["n_rois"],
                    "n_patients": inp.info["n_patients"], "class_counts": inp.info["class_counts"],
                    "machine": _machine(),
                    "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        write_json(run_dir / "run.json", run_info)
        y = df["label"].to_numpy().astype(np.int64)
        pos = {rid: i for i, rid in enumerate(df["roi_id"])}
        feats = None   # the probe's frozen features: computed (or read from the store) once a fold needs them
        folds = sorted({(int(r), int(f)) for r, f in zip(plan["repeat"], plan["fold"])})
        roi_ids = df["roi_id"].to_numpy()
        tasks: list[FoldTask] = []
        for r, f in folds:
            fd = fold_dir(run_dir, r, f)
            sub = plan[(plan["repeat"] == r) & (plan["fold"] == f)]
            idx = {role: np.array([pos[i] for i in sub.loc[sub["role"] == role, "roi_id"]], dtype=np.int64)
                   for role in ("train", "val", "test")}
            validated_on_test = len(idx["val"]) == 0
            if validated_on_test:   # the seed protocol: its "validation" is the test fold
                idx["val"] = idx["test"]
            if (fd / "done.json").is_file():
                continue
            task = FoldTask(repeat=r, fold=f, train_idx=idx["train"], val_idx=idx["val"], test_idx=idx["test"],
                            out=fd, seed=fold_seed(cfg.train.seed, r, f), validated_on_test=validated_on_test)
            if cfg.recipe == "probe":
                if feats is None:
                    feats = probe_features(cfg, inp.x, inp.components_path.parent)
                res = fit_probe_fold(cfg, feats, y, idx["train"], idx["val"], idx["test"],
                                     groups=df["patient_id"].to_numpy())
                fd.mkdir(parents=True, exist_ok=True)
                with atomic_write(fd / "history.csv", "w") as fh:
                    res.history.to_csv(fh, index=False)
                write_fold_result(task, res, roi_ids)
            else:
                tasks.append(task)
        if tasks:
            (fold_runner or serial_fold_runner)(cfg, inp, y, tasks)
        missing = [f"r{t.repeat}f{t.fold}" for t in tasks if not (t.out / "done.json").is_file()]
        if missing:
            raise RuntimeError(f"fold runner returned without finishing fold(s) {', '.join(missing)}")
        rows = []
        for r, f in folds:
            fd = fold_dir(run_dir, r, f)
            d = read_json(fd / "done.json")
            test = pd.read_csv(fd / "test.csv", dtype={"roi_id": str})
            test["repeat"], test["fold"], test["threshold"] = r, f, d["threshold"]
            rows.append(test)
        oof = pd.concat(rows, ignore_index=True)
        meta = df.set_index("roi_id")
        oof["patient_id"] = meta.loc[oof["roi_id"], "patient_id"].to_numpy()
        oof["label"] = meta.loc[oof["roi_id"], "label"].to_numpy()
        oof["prob"] = _sigmoid(oof["logit"].to_numpy())
        lesion = ["lesion_id"] if "lesion_id" in meta.columns else []
        if lesion:
            oof["lesion_id"] = meta.loc[oof["roi_id"], "lesion_id"].to_numpy()
        oof = oof[["roi_id", "patient_id", *lesion, "label", "repeat", "fold", "prob", "logit", "threshold"]]
        with atomic_write(run_dir / "oof.csv", "w") as fh:
            oof.to_csv(fh, index=False, float_format="%.10g")
        summary = pooled_oof_summary(oof, n_boot=cfg.cv.n_boot, seed=cfg.cv.seed, manifest=df)
        dones = [read_json(fold_dir(run_dir, r, f) / "done.json") for r, f in folds]
        summary.update({
            "recipe": cfg.recipe, "model": cfg.model.name, "channels": inp.channels,
            "decomposition": cfg.decomposition.method, "variant": cfg.decomposition.variant,
            "cv_scheme": cfg.cv.scheme, "n_folds": cfg.cv.n_folds, "n_repeats": cfg.cv.n_repeats,
            "validated_on_test": any(d["validated_on_test"] for d in dones),
            "final_train_auc_mean": _nanmean([d.get("final_train_auc") for d in dones]),
            "final_val_auc_mean": _nanmean([d.get("final_val_auc") for d in dones]),
            "best_epochs": [d["best_epoch"] for d in dones],
            "n_rois": inp.info["n_rois"], "n_patients": inp.info["n_patients"],
            "n_rois_never_tested": int(len(df) - oof["roi_id"].nunique()),
            "elapsed_s": round(time.perf_counter() - t_start, 1), "machine": run_info["machine"],
            # training time summed over every fold's epochs, across resumed invocations too
            "train_seconds": round(sum(float(pd.read_csv(p).get("seconds", pd.Series(dtype=float)).sum())
                                       for p in (run_dir / "folds").glob("r*f*/history.csv")), 1),
        })
        write_json(run_dir / "summary.json", summary)
        run_info["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        run_info["elapsed_s"] = summary["elapsed_s"]
        write_json(run_dir / "run.json", run_info)
    finally:
        if lock is not None:
            lock.release()
        if not progress_bars:
            if prev_quiet is None:
                os.environ.pop("MAMMODECOMP_QUIET", None)
            else:
                os.environ["MAMMODECOMP_QUIET"] = prev_quiet
    return run_dir


def _lock_run(run_dir: Path):
    """Hold ``RUN/.lock`` for the whole run; clear temp files a killed run left behind.

    A second process on the same run directory gets a one-line error instead of
    interleaving its writes with the first one's.
    """
    from filelock import FileLock, Timeout
    lock = FileLock(str(run_dir / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise InputError("another mammodecomp process is writing this run directory; wait for it or "
                         "use another --out", path=run_dir) from None
    for stale in run_dir.rglob(".*.tmp"):      # atomic_write's temp files of a killed process
        stale.unlink(missing_ok=True)
    return lock


def _nanmean(v):
    a = np.array([np.nan if x is None else float(x) for x in v], dtype=float)
    return float(np.nanmean(a)) if np.isfinite(a).any() else None


# --------------------------------------------------------------------------- reading a run back
@dataclass
class Run:
    """A finished (or partial) run directory, read back."""

    path: Path
    config: Config
    info: dict
    manifest: pd.DataFrame
    plan: pd.DataFrame
    oof: pd.DataFrame | None
    summary: dict | None
    histories: dict

    def components(self) -> np.ndarray:
        return np.load(self.info["components_path"], mmap_mode="r")

    def rois(self) -> np.ndarray:
        return np.load(self.info["rois_path"], mmap_mode="r")

    def inputs(self) -> np.ndarray:
        """The model inputs (N, C, H, W) for this run's variant, in manifest order."""
        v = self.config.decomposition.variant
        if v == "raw":
            return np.asarray(self.rois(), dtype=np.float32)[:, None]
        comps = np.asarray(self.components(), dtype=np.float32)
        if v == "components+raw":
            return np.concatenate([comps, np.asarray(self.rois(), dtype=np.float32)[:, None]], 1)
        return comps


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory; a missing stage names the command that makes it."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise StageMissingError("not a run directory (no config.yaml); make one with `mammodecomp cv`",
                                path=run_dir)
    cfg = load_config(run_dir / "config.yaml")
    info = read_json(run_dir / "run.json")
    if info.get("format") != RUN_FORMAT:
        from .errors import VersionMismatchError
        raise VersionMismatchError(f"run format {info.get('format')} is not {RUN_FORMAT} "
                                   f"(written by mammodecomp {info.get('version')})", path=run_dir)
    df = pd.read_parquet(run_dir / "manifest.parquet")
    plan = pd.read_csv(run_dir / "splits.csv", dtype={"roi_id": str})
    oof = pd.read_csv(run_dir / "oof.csv", dtype={"roi_id": str, "patient_id": str}) \
        if (run_dir / "oof.csv").is_file() else None
    summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else None
    hists = {}
    for hp in sorted((run_dir / "folds").glob("r*f*/history.csv")):
        name = hp.parent.name
        r, f = name[1:].split("f")
        hists[(int(r), int(f))] = pd.read_csv(hp)
    return Run(path=run_dir, config=cfg, info=info, manifest=df, plan=plan, oof=oof, summary=summary,
               histories=hists)


def load_fold_model(run_dir: str | Path, repeat: int, fold: int, device: str = "cpu") -> nn.Module:
    """The selected checkpoint of one fold, with its normalisation, in eval mode."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    fd = fold_dir(run_dir, repeat, fold)
    if cfg.recipe == "probe":
        raise InputError("the probe recipe has no network checkpoint per fold (a logistic regression)",
                         path=run_dir)
    wpath = fd / "model.safetensors"
    if not wpath.is_file():
        raise StageMissingError(f"fold r{repeat}f{fold} has no checkpoint; run `mammodecomp cv` to finish it",
                                path=wpath)
    norm = read_json(fd / "norm.json")
    info = read_json(run_dir / "run.json")
    model = Normalized(build_model(cfg, len(info["channels"])), norm["mean"], norm["std"])
    model.load_state_dict(load_weights(wpath))
    return model.to(device).eval()
