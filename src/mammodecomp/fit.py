"""Fit one fold: torchvision's ``train_one_epoch`` / ``evaluate`` shape, read top to bottom.

A fold's state (model, optimiser, scheduler, epoch, RNG states, history) is
saved after every epoch, so a killed run resumes from the last completed
epoch of the fold in progress and finishes with the same numbers as an
uninterrupted run.

Invariants
----------
* A fresh model per fold, initialised from the fold's seed.
* Normalisation statistics are fitted on the fold's training part only.
* Early stopping, checkpoint choice and the decision threshold use the inner
  validation part; the outer test fold is predicted once, at the end.
* Metrics are computed over whole splits, never averaged over batches.
* No training batch holds a single ROI (BatchNorm cannot train on one): a
  remainder of one joins the batch before it (:func:`batch_starts`).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import rundir
from .augment import Augment
from .config import Config
from .device import resolve_device
from .errors import InputError, StageMissingError
from .io import atomic_write, read_json, write_json
from .progress import progress

HISTORY_METRICS = ["loss", "auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity",
                   "precision", "f1", "brier"]


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
    :func:`mammodecomp.device.make_resident`) batches are gathered on
    the device; either way the logits come back to the host once, at the end.
    """
    model.eval()
    out = []
    idx_dev = torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(device) if resident is not None else None
    for s in range(0, len(idx), batch_size):
        if resident is not None:
            from .device import gather
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
def batch_starts(n: int, batch_size: int, min_size: int = 2) -> list[tuple[int, int]]:
    """``(start, stop)`` of each training batch over ``n`` rows.

    BatchNorm cannot train on a batch of one ROI, so a last batch smaller
    than ``min_size`` joins the batch before it; nothing is dropped. Data
    parallel training passes ``min_size = 2 * world`` so every rank's share
    holds two ROIs or more. Fewer than ``min_size`` rows in all make one
    batch (the split plan never gives a fold so few training ROIs).

    >>> batch_starts(81 - 16, 8)[-2:]
    [(48, 56), (56, 65)]
    >>> batch_starts(10, 5), batch_starts(1, 8), batch_starts(11, 4, min_size=4)
    ([(0, 5), (5, 10)], [(0, 1)], [(0, 4), (4, 11)])
    """
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < min_size:
        starts.pop()
    return [(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


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


def min_batch(model: nn.Module, world: int) -> int:
    """The smallest training batch: two ROIs, and two per rank when W ranks share a
    BatchNorm model's batch (BatchNorm cannot train on one ROI). A BatchNorm-free
    model keeps the one-process batches under any W, so W ranks equal one."""
    bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return 2 * world if (world > 1 and bn) else 2


def training_kit(cfg: Config, model: nn.Module, y: np.ndarray, train_idx: np.ndarray, seed: int,
                 device: torch.device, world: int = 1):
    """What one fold trains with: optimiser, schedule, data order, augmentation, class weight.

    Returns ``(optimiser, scheduler, steps_per_epoch, generator, augment,
    train_labels, pos_weight)``; the generator (data order) and the augmenter
    are seeded from the fold seed, and nothing here draws from the global RNG.
    """
    t = cfg.train
    opt = _optimizer(cfg, model)
    steps = max(1, len(batch_starts(len(train_idx), t.batch_size, min_size=min_batch(model, world))))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, steps))
    gen = torch.Generator().manual_seed(seed + 7)
    aug = Augment(seed + 13)
    ytr = y[train_idx].astype(np.float32)
    npos, nneg = float(ytr.sum()), float(len(ytr) - ytr.sum())
    pos_weight = torch.tensor(nneg / max(npos, 1.0), device=device) if t.balance == "pos_weight" else None
    return opt, sched, steps, gen, aug, ytr, pos_weight


def rank_world() -> tuple[int, int]:
    """This process's rank and the world size (0, 1 without a process group)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist
        dist.barrier()


def evaluate(model: nn.Module, x: np.ndarray, idx: np.ndarray, *, rank: int = 0, world: int = 1,
             **kw) -> np.ndarray:
    """Logits of rows ``idx`` in eval mode, the same on every rank.

    Rank ``r`` predicts rows ``r::W`` (:func:`predict_logits`) and the shares
    are gathered back into ``idx`` order; with one rank both are the identity.
    """
    idx = np.asarray(idx)
    local = predict_logits(model, x, idx[rank::world], **kw)
    if world == 1:
        return local
    import torch.distributed as dist
    parts: list = [None] * world
    dist.all_gather_object(parts, local)
    out = np.empty(len(idx), dtype=np.float64)
    for r, part in enumerate(parts):
        out[r::world] = part
    return out


@dataclass
class _Fold:
    """What one fold trains with (built once by :func:`fit_fold`, read by :func:`train_one_epoch`)."""

    cfg: Config
    x: np.ndarray
    y: torch.Tensor               # labels as float32 on the device
    train_idx: np.ndarray
    model: nn.Module              # the module whose weights train
    net: nn.Module                # what the step calls: DDP-wrapped and/or compiled
    opt: torch.optim.Optimizer
    sched: object
    gen: torch.Generator
    aug: Augment
    ytr: np.ndarray
    pos_weight: torch.Tensor | None
    ema: object
    device: torch.device
    resident: torch.Tensor | None
    rank: int
    world: int


def train_one_epoch(f: _Fold) -> tuple[float | None, list[dict]]:
    """One pass over the fold's training rows; returns (mean Keras-L2 value or None, per-step losses).

    Every rank draws the same epoch order and the same augmentation for the
    whole *global* batch (``train.batch_size``), then keeps its contiguous
    share; each rank's loss is its share's sum scaled by ``W / global batch``,
    so the gradient average equals the gradient of the global batch mean. With
    one rank the loss is the batch mean, as it always was.
    """
    t, device, world = f.cfg.train, f.device, f.world
    f.model.train()
    order = epoch_order(t.balance, f.train_idx, f.ytr, f.gen)
    order_dev = torch.from_numpy(order).to(device) if f.resident is not None or world > 1 else None
    l2 = getattr(f.model.model, "l2_penalty", None) if t.keras_l2 else None
    l2_in_opt = keras_l2_folded(f.cfg, f.model)
    reg_total = torch.zeros((), dtype=torch.float64, device=device)
    sums, sizes = [], []
    batches = batch_starts(len(order), t.batch_size, min_size=min_batch(f.model, world))
    for s, e in batches:
        n_glob = e - s
        share = np.array_split(np.arange(n_glob), world)[f.rank]
        lo, hi = int(share[0]), int(share[-1]) + 1
        # with augmentation every rank makes the global batch's draws (identical on all ranks) and
        # keeps its share; without it, a rank reads its share only
        a, b = (s, e) if (t.augment or world == 1) else (s + lo, s + hi)
        if f.resident is not None:   # index, augment and label on the device
            from .device import gather
            xb = gather(f.resident, order_dev[a:b])
        else:
            xb = torch.from_numpy(np.ascontiguousarray(f.x[order[a:b]], dtype=np.float32))
        if t.augment:
            xb = f.aug(xb)
        if world > 1 and t.augment:
            xb = xb[lo:hi]
        xb = xb.to(device)
        if t.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        if order_dev is not None:
            yb = f.y.index_select(0, order_dev[s + lo:s + hi])
        else:
            yb = f.y[order[s + lo:s + hi]].to(device)
        if t.label_smoothing:
            yb = yb * (1 - t.label_smoothing) + 0.5 * t.label_smoothing
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=(t.amp == "bf16")):
            logits = f.net(xb).float().reshape(-1)
        if world == 1:
            loss = F.binary_cross_entropy_with_logits(logits, yb, pos_weight=f.pos_weight)
            lsum = loss.detach() * n_glob
        else:
            lsum = F.binary_cross_entropy_with_logits(logits, yb, pos_weight=f.pos_weight, reduction="sum")
            loss = lsum * (world / n_glob)
            lsum = lsum.detach()
        if l2 is not None:
            if l2_in_opt:   # the optimiser adds its gradient (see _optimizer); the value is logged only
                with torch.no_grad():
                    reg = l2()
            else:
                reg = l2()
                loss = loss + reg
            reg_total += reg.detach().double()
        f.opt.zero_grad(set_to_none=True)
        loss.backward()
        f.opt.step()
        f.sched.step()
        if f.ema is not None:
            f.ema.update_parameters(f.model)
        sums.append(lsum)
        sizes.append(n_glob)
    step_sum = torch.stack(sums).double() if sums else torch.zeros(0, dtype=torch.float64, device=device)
    if world > 1:
        import torch.distributed as dist
        dist.all_reduce(step_sum)   # once per epoch: no host round-trip per step
    steps = [{"step": i, "batch": n, "loss": v / n} for i, (v, n) in enumerate(zip(step_sum.cpu().tolist(), sizes))]
    return (float(reg_total) / max(1, len(batches)) if l2 is not None else None), steps


def fit_fold(cfg: Config, x: np.ndarray, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
             test_idx: np.ndarray, out: Path, *, seed: int, desc: str = "",
             resident: torch.Tensor | None = None, model_factory=None, sync_batchnorm: bool = False) -> FoldResult:
    """Train a fresh model on ``train_idx``, select on ``val_idx``, predict ``test_idx``.

    One loop for one process or many: inside a ``torch.distributed`` process
    group of W ranks (torchrun; see :mod:`mammodecomp.scale.ddp`) the model
    is wrapped in DistributedDataParallel, ``train.batch_size`` is the global
    batch, evaluation is sharded and gathered (:func:`evaluate`), and rank 0
    writes the fold directory; with no group (W = 1) every one of those is
    the identity. Every training option works for any W.

    Writes ``out/history.csv``, ``out/steps.csv``, ``out/norm.json``,
    ``out/model.safetensors`` (the selected checkpoint) and ``out/state.pt``
    (resume state, after every epoch).

    Parameters
    ----------
    resident : ``x`` already on the training device (float16, see
        :func:`mammodecomp.device.make_resident`); with it, or with
        ``train.device_resident`` set, batches are indexed and augmented on
        the device and nothing returns to the host inside an epoch.
    model_factory : ``(cfg, in_chans) -> nn.Module``; default :func:`build_model`.
    sync_batchnorm : convert BatchNorm to SyncBatchNorm (CUDA process groups).

    Notes
    -----
    Equality of W ranks with one holds for models without BatchNorm and
    dropout: BatchNorm normalises each rank's share with that share's
    statistics (use SyncBatchNorm on GPUs) and dropout masks are drawn per rank.
    """
    from .device import cudnn_benchmark, make_resident, maybe_compile
    from .metrics import choose_threshold
    t = cfg.train
    rank, world = rank_world()
    out = Path(out)
    device = resolve_device(t.device, local_rank=int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else None)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if resident is None and t.device_resident:
        resident = make_resident(x, device)
    if resident is not None and resident.device != device:
        resident = resident.to(device)
    mean, std = fit_normalization(x, train_idx, t.normalize)
    if rank == 0:
        write_json(out / rundir.NORM, {"mean": mean, "std": std})
    torch.manual_seed(seed)
    model = Normalized((model_factory or build_model)(cfg, x.shape[1]), mean, std).to(device)
    if sync_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if rank:   # dropout masks: a stream per rank (rank 0 keeps the single-process stream)
        torch.manual_seed(seed * 7919 + rank)
    opt, sched, _, gen, aug, ytr, pos_weight = training_kit(cfg, model, y, train_idx, seed, device, world=world)
    ema = make_ema(cfg, model)   # every rank keeps the same average of the same synchronised weights
    best = {"loss": float("inf"), "epoch": -1, "bad": 0}
    history: list[dict] = []
    step_rows: list[dict] = []
    start = 0
    state_path, hist_path, best_path = out / rundir.STATE, out / rundir.HISTORY, out / rundir.WEIGHTS
    steps_path = out / rundir.STEPS
    barrier(world)
    if state_path.is_file():
        st = safe_torch_load(state_path, map_location=device)
        model.load_state_dict(st["model"])
        if ema is not None:
            ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        if rank == 0:
            torch.set_rng_state(st["rng"])
        gen.set_state(st["gen"])
        aug.set_state(st["aug"])
        best = {"loss": st["best_loss"], "epoch": st["best_epoch"], "bad": st["bad"]}
        start = int(st["epoch"]) + 1
        if hist_path.is_file():
            history = pd.read_csv(hist_path).iloc[:start].to_dict("records")
        if steps_path.is_file():
            step_rows = [r for r in pd.read_csv(steps_path).to_dict("records") if r["epoch"] < start]
    if world > 1:
        ddp_kw = {"device_ids": [device.index]} if device.type == "cuda" else {}
        net = torch.nn.parallel.DistributedDataParallel(model, **ddp_kw)
    else:
        net = model
    net = maybe_compile(net, t.compile)
    yt = torch.from_numpy(y.astype(np.float32))
    if resident is not None or world > 1:
        yt = yt.to(device)
    # what is evaluated, early-stopped on and checkpointed: the weight average when there is one
    judged = model if ema is None else ema.module
    judged_fwd = maybe_compile(judged, t.compile) if (ema is not None or world > 1) else net
    fold = _Fold(cfg=cfg, x=x, y=yt, train_idx=np.asarray(train_idx), model=model, net=net, opt=opt, sched=sched,
                 gen=gen, aug=aug, ytr=ytr, pos_weight=pos_weight, ema=ema, device=device, resident=resident,
                 rank=rank, world=world)
    ev = {"device": device, "amp": t.amp, "channels_last": t.channels_last, "resident": resident, "rank": rank,
          "world": world}
    bar = progress(range(start, t.epochs), total=t.epochs - start, desc=desc or "epochs", leave=False,
                   disable=None if rank == 0 else True)
    with cudnn_benchmark(t.cudnn_benchmark, device):
        for epoch in bar:
            t0 = time.perf_counter()
            reg, steps = train_one_epoch(fold)
            step_rows += [{"epoch": epoch, **r} for r in steps]
            row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"]}
            row.update(_split_metrics(y[train_idx], evaluate(judged_fwd, x, train_idx, batch_size=max(64, t.batch_size),
                                                             **ev), "train"))
            row.update(_split_metrics(y[val_idx], evaluate(judged_fwd, x, val_idx, batch_size=max(64, t.batch_size),
                                                           **ev), "val"))
            if reg is not None:
                row["reg_loss"] = reg
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            improved = row["val_loss"] < best["loss"] - 1e-6
            if improved:
                best.update(loss=row["val_loss"], epoch=epoch, bad=0)
            else:
                best["bad"] += 1
            stop = t.early_stopping is not None and t.select != "last" and best["bad"] >= t.early_stopping
            if rank == 0:
                if t.select == "last" or improved:
                    _save_weights(best_path, judged)
                with atomic_write(hist_path, "w") as fh:
                    pd.DataFrame(history).to_csv(fh, index=False)
                with atomic_write(steps_path, "w") as fh:
                    pd.DataFrame(step_rows).to_csv(fh, index=False, float_format="%.10g")
                _save_state(state_path, model, opt, sched, epoch if not stop else t.epochs - 1, best, aug, gen, ema)
            barrier(world)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(tr_auc=f"{row['train_auc']:.2f}", va_auc=f"{row['val_auc']:.2f}",
                                va_loss=f"{row['val_loss']:.2f}", refresh=False)  # shown at the bar's next redraw
            if stop:
                break
        judged.load_state_dict(load_weights(best_path))
        val_logits = evaluate(judged_fwd, x, val_idx, batch_size=64, **ev)
        threshold = float(choose_threshold(y[val_idx], _sigmoid(val_logits)))
        test_logits = evaluate(judged_fwd, x, test_idx, batch_size=64, **ev)
    hist = pd.DataFrame(history)
    best_epoch = int(best["epoch"]) if t.select != "last" else int(hist["epoch"].iloc[-1])
    return FoldResult(test_logits=test_logits, threshold=threshold, best_epoch=best_epoch, history=hist)


def load_fold_model(run_dir: str | Path, repeat: int, fold: int, device: str = "cpu") -> nn.Module:
    """The selected checkpoint of one fold, with its normalisation, in eval mode.

    The model takes *raw* components (N, K, H, W) and applies the fold's
    normalisation itself.
    """
    from .config import load_config
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / rundir.CONFIG)
    fd = rundir.fold_path(run_dir, repeat, fold)
    if cfg.recipe == "probe":
        raise InputError("the probe recipe has no network checkpoint per fold (a logistic regression)",
                         path=run_dir)
    wpath = fd / rundir.WEIGHTS
    if not wpath.is_file():
        raise StageMissingError(f"fold {rundir.fold_name(repeat, fold)} has no checkpoint; run `mammodecomp cv` "
                                "to finish it", path=wpath)
    norm = read_json(fd / rundir.NORM)
    info = read_json(run_dir / rundir.RUN_JSON)
    model = Normalized(build_model(cfg, len(info["channels"])), norm["mean"], norm["std"])
    model.load_state_dict(load_weights(wpath))
    return model.to(device).eval()
