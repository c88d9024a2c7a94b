"""Data-parallel training of one fold over several processes (torchrun, DDP).

For a model too large or too slow for one GPU per fold, one fold is trained
by ``W`` processes (one per GPU; gloo on CPUs) under
:class:`torch.nn.parallel.DistributedDataParallel`. :func:`fit_fold_ddp`
follows :func:`mammodecomp.train.fit_fold` step for step, so a data-parallel
fold is the same training recipe, not a different one:

* every rank draws the same epoch order (the fold's generator) and the same
  augmentation for the whole *global* batch, then keeps its contiguous share
  of it; the global batch is ``train.batch_size``, whatever ``W`` is;
* each rank's loss is its share's *sum* scaled by ``W / global batch``, so
  DDP's gradient average equals the gradient of the global batch mean, also
  for a last, uneven batch;
* evaluation is sharded (rank ``r`` predicts rows ``r::W``) and gathered, so
  early stopping, the checkpoint and the threshold are the same on every rank;
* rank 0 writes the fold directory (``norm.json``, ``history.csv``,
  ``model.safetensors``, ``state.pt``, ``test.csv``, ``done.json``) and
  ``steps.csv`` (global loss per optimiser step).

Run with torchrun on an existing run directory::

    torchrun --nproc_per_node 4 -m mammodecomp.scale.ddp RUN --repeat 0 --fold 0

or let :class:`TorchrunFoldRunner` launch torchrun for each pending fold of
``cross_validate``.

Notes
-----
Equality with one process holds for models without BatchNorm and without
dropout: BatchNorm normalises each rank's share with that share's statistics
(use a BatchNorm-free model, or SyncBatchNorm on GPUs with
``sync_batchnorm=True``) and dropout masks are drawn per rank. A final
global batch smaller than ``W`` is skipped (it would leave a rank empty).
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["fit_fold_ddp", "TorchrunFoldRunner", "init_from_env", "main"]


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _ddp_device(name: str) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when CUDA is used."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local)
    return dev


def init_from_env(backend: str | None = None) -> tuple[int, int]:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ...).

    Parameters
    ----------
    backend : str or None
        ``"nccl"`` or ``"gloo"``; None: nccl when CUDA is available, else gloo.

    Returns
    -------
    (rank, world_size)
    """
    if dist.is_initialized():
        return _rank_world()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return _rank_world()


def _gather_logits(local: np.ndarray, n: int, rank: int, world: int) -> np.ndarray:
    """Reassemble rows ``r::W`` predicted by each rank into the order 0..n-1."""
    if world == 1:
        return local
    parts: list = [None] * world
    dist.all_gather_object(parts, local)
    out = np.empty(n, dtype=np.float64)
    for r, p in enumerate(parts):
        out[r::world] = p
    return out


def _predict(model, x, idx, rank, world, **kw) -> np.ndarray:
    from ..fit import predict_logits
    idx = np.asarray(idx)
    local = predict_logits(model, x, idx[rank::world], **kw)
    return _gather_logits(local, len(idx), rank, world)


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def fit_fold_ddp(cfg, x: np.ndarray, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
                 test_idx: np.ndarray, out: str | Path, *, seed: int, model_factory=None,
                 sync_batchnorm: bool = False, desc: str = ""):
    """Train one fold data-parallel over the current process group.

    Without a process group (or with one rank) this is a single-process run
    of the same recipe.

    Parameters
    ----------
    cfg : Config
        The study config; ``train.batch_size`` is the *global* batch.
    x, y, train_idx, val_idx, test_idx, seed :
        As for :func:`mammodecomp.train.fit_fold` (every rank holds ``x``;
        a memmap is fine).
    out : str or Path
        The fold directory (rank 0 writes it; every rank reads it to resume
        and to reload the selected checkpoint, so ranks on several machines
        need a shared file system).
    model_factory : callable or None
        ``model_factory(cfg, in_chans) -> nn.Module`` (one logit per
        image); default :func:`mammodecomp.train.build_model`.
    sync_batchnorm : bool
        Convert BatchNorm layers to SyncBatchNorm (CUDA only).
    desc : str
        Progress bar label.

    Returns
    -------
    FoldResult
        The same on every rank.
    """
    from ..io import atomic_write, write_json
    from ..metrics import choose_threshold
    from ..progress import progress
    from .. import rundir
    from ..device import gather, make_resident
    from ..fit import (FoldResult, Normalized, _save_state, _save_weights, _sigmoid, _split_metrics, batch_starts,
                       build_model, epoch_order, fit_normalization, keras_l2_folded, load_weights, make_ema, safe_torch_load,
                       training_kit)

    t = cfg.train
    rank, world = _rank_world()
    out = Path(out)
    device = _ddp_device(t.device)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
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
    resident = make_resident(x, device) if t.device_resident else None
    opt, sched, _, gen, aug, ytr, pos_weight = training_kit(cfg, model, y, train_idx, seed, device)
    ema = make_ema(cfg, model)   # every rank keeps the same average of the same synchronised weights
    judged = model if ema is None else ema.module
    B = t.batch_size
    best = {"loss": float("inf"), "epoch": -1, "bad": 0}
    history: list[dict] = []
    step_rows: list[dict] = []
    start = 0
    state_path, hist_path, best_path = out / rundir.STATE, out / rundir.HISTORY, out / rundir.WEIGHTS
    steps_path = out / "steps.csv"
    _barrier(world)
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
    l2 = getattr(model.model, "l2_penalty", None) if t.keras_l2 else None
    l2_in_opt = keras_l2_folded(cfg, model)
    yt = torch.from_numpy(y.astype(np.float32)).to(device)
    pred_kw = {"device": device, "amp": t.amp, "channels_last": t.channels_last, "resident": resident,
               "batch_size": max(64, B)}
    bar = progress(range(start, t.epochs), total=t.epochs - start, desc=desc or "epochs (ddp)", leave=False,
                   disable=None if rank == 0 else True)
    for epoch in bar:
        t0 = time.perf_counter()
        net.train()
        order = epoch_order(t.balance, train_idx, ytr, gen)
        order_dev = torch.from_numpy(order).to(device)
        sums, sizes = [], []
        for s, e in batch_starts(len(order), B, min_size=2 * world):
            n_glob = e - s
            share = np.array_split(np.arange(n_glob), world)[rank]
            lo, hi = int(share[0]), int(share[-1]) + 1
            # with augmentation every rank makes the global batch's draws (identical on all ranks)
            # and keeps its share; without it, a rank reads its share only
            a, b = (s, s + n_glob) if t.augment else (s + lo, s + hi)
            if resident is not None:
                xb = gather(resident, order_dev[a:b])
            else:
                xb = torch.from_numpy(np.ascontiguousarray(x[order[a:b]], dtype=np.float32))
            if t.augment:
                xb = aug(xb)[lo:hi]
            xb = xb.to(device)
            if t.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = yt.index_select(0, order_dev[s + lo:s + hi])
            if t.label_smoothing:
                yb = yb * (1 - t.label_smoothing) + 0.5 * t.label_smoothing
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=(t.amp == "bf16")):
                logits = net(xb).float().reshape(-1)
            lsum = F.binary_cross_entropy_with_logits(logits, yb, pos_weight=pos_weight, reduction="sum")
            loss = lsum * (world / n_glob)
            if l2 is not None and not l2_in_opt:   # else the optimiser adds it (train._optimizer)
                loss = loss + l2()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            sums.append(lsum.detach())
            sizes.append(n_glob)
        step_sum = torch.stack(sums).double() if sums else torch.zeros(0, dtype=torch.float64, device=device)
        if world > 1:
            dist.all_reduce(step_sum)   # once per epoch: no host round-trip per step
        for i, (v, n) in enumerate(zip(step_sum.cpu().tolist(), sizes)):
            step_rows.append({"epoch": epoch, "step": i, "batch": n, "loss": v / n})
        row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"]}
        row.update(_split_metrics(y[train_idx], _predict(judged, x, train_idx, rank, world, **pred_kw), "train"))
        row.update(_split_metrics(y[val_idx], _predict(judged, x, val_idx, rank, world, **pred_kw), "val"))
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
            with atomic_write(hist_path, "w") as f:
                pd.DataFrame(history).to_csv(f, index=False)
            with atomic_write(steps_path, "w") as f:
                pd.DataFrame(step_rows).to_csv(f, index=False, float_format="%.10g")
            _save_state(state_path, model, opt, sched, epoch if not stop else t.epochs - 1, best, aug, gen, ema)
        _barrier(world)
        if stop:
            break
    judged.load_state_dict(load_weights(best_path))
    val_logits = _predict(judged, x, val_idx, rank, world, **dict(pred_kw, batch_size=64))
    threshold = float(choose_threshold(y[val_idx], _sigmoid(val_logits)))
    test_logits = _predict(judged, x, test_idx, rank, world, **dict(pred_kw, batch_size=64))
    hist = pd.DataFrame(history)
    best_epoch = int(best["epoch"]) if t.select != "last" else int(hist["epoch"].iloc[-1])
    return FoldResult(test_logits=test_logits, threshold=threshold, best_epoch=best_epoch, history=hist)


def _fold_task(run, repeat: int, fold: int):
    """The :class:`mammodecomp.train.FoldTask` of (repeat, fold) in a run directory."""
    from ..errors import InputError
    from ..train import fold_task
    if (repeat, fold) not in run.folds:
        raise InputError(f"the run has no repeat {repeat} fold {fold}", path=run.path / "splits.csv")
    return fold_task(run.config, run.path, run.plan, run.row_of, repeat, fold)


def train_run_fold(run_dir: str | Path, repeat: int, fold: int, *, backend: str | None = None,
                   sync_batchnorm: bool = False) -> None:
    """Train (repeat, fold) of a prepared run directory with every rank of torchrun.

    Parameters
    ----------
    run_dir : str or Path
        A run directory with ``config.yaml``, ``run.json``, ``manifest.parquet``
        and ``splits.csv`` (``cross_validate`` writes them before any fold).
    repeat, fold : int
        Which fold.
    backend : str or None
        Process-group backend (see :func:`init_from_env`).
    sync_batchnorm : bool
        See :func:`fit_fold_ddp`.
    """
    from ..rundir import DONE, read_run
    from ..train import write_fold_result
    if "WORLD_SIZE" in os.environ:
        init_from_env(backend)
    rank, world = _rank_world()
    run = read_run(run_dir, finished=False)
    if run.config.train.threads:
        torch.set_num_threads(run.config.train.threads)
    task = _fold_task(run, repeat, fold)
    if (task.out / DONE).is_file():
        return
    x = run.inputs()
    y = run.manifest["label"].to_numpy().astype(np.int64)
    res = fit_fold_ddp(run.config, x, y, task.train_idx, task.val_idx, task.test_idx, task.out, seed=task.seed,
                       sync_batchnorm=sync_batchnorm, desc=f"repeat {repeat} fold {fold} (ddp x{world})")
    if rank == 0:
        write_fold_result(task, res, run.manifest["roi_id"].to_numpy())
    _barrier(world)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a single-node rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TorchrunFoldRunner:
    """A ``fold_runner`` that trains each pending fold with torchrun on this machine.

    Parameters
    ----------
    nproc_per_node : int
        Processes per fold (one per GPU; on CPUs, gloo processes).
    backend : str or None
        Process-group backend; None: nccl with CUDA, else gloo.
    extra_env : dict or None
        Extra environment for the launched processes.
    sync_batchnorm : bool
        See :func:`fit_fold_ddp`.

    Notes
    -----
    The folds run one after the other, each over all ``nproc_per_node``
    processes. For several machines, start
    ``torchrun --nnodes N ... -m mammodecomp.scale.ddp RUN --repeat R --fold F``
    on each, then rerun ``mammodecomp cv`` with the same config and
    ``--out RUN`` to gather the folds (finished folds are kept).

    Examples
    --------
    >>> TorchrunFoldRunner(nproc_per_node=2).command("RUN", 0, 1, 29500)[-6:]
    ['mammodecomp.scale.ddp', 'RUN', '--repeat', '0', '--fold', '1']
    """

    def __init__(self, nproc_per_node: int = 2, *, backend: str | None = None, extra_env: dict | None = None,
                 sync_batchnorm: bool = False):
        from ..errors import InputError
        if nproc_per_node < 1:
            raise InputError(f"nproc_per_node must be >= 1, got {nproc_per_node}")
        self.nproc_per_node = int(nproc_per_node)
        self.backend = backend
        self.extra_env = dict(extra_env or {})
        self.sync_batchnorm = sync_batchnorm

    def command(self, run_dir, repeat: int, fold: int, port: int) -> list[str]:
        """The torchrun command line for one fold."""
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
               "--nproc_per_node", str(self.nproc_per_node), "--master_addr", "127.0.0.1",
               "--master_port", str(port), "-m", "mammodecomp.scale.ddp", str(run_dir),
               "--repeat", str(repeat), "--fold", str(fold)]
        if self.backend:
            cmd += ["--backend", self.backend]
        if self.sync_batchnorm:
            cmd += ["--sync-batchnorm"]
        return cmd

    def __call__(self, cfg, inputs, y, tasks) -> None:
        """Run ``tasks`` (see :func:`mammodecomp.train.cross_validate`)."""
        env = dict(os.environ, MAMMODECOMP_QUIET=os.environ.get("MAMMODECOMP_QUIET", "1"), **self.extra_env)
        env.setdefault("OMP_NUM_THREADS", str(cfg.train.threads or 1))
        for task in tasks:
            run_dir = Path(task.out).parent.parent
            cmd = self.command(run_dir, task.repeat, task.fold, free_port())
            p = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if p.returncode != 0:
                tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-15:])
                raise RuntimeError(f"torchrun for fold r{task.repeat}f{task.fold} failed "
                                   f"(exit {p.returncode}):\n{tail}")


def main(argv: list[str] | None = None) -> None:
    """``python -m mammodecomp.scale.ddp RUN --repeat R --fold F`` (under torchrun)."""
    ap = argparse.ArgumentParser(prog="mammodecomp.scale.ddp", description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--repeat", type=int, default=0)
    ap.add_argument("--fold", type=int, required=True)
    ap.add_argument("--backend", default=None, choices=["nccl", "gloo"])
    ap.add_argument("--sync-batchnorm", action="store_true")
    a = ap.parse_args(argv)
    try:
        train_run_fold(a.run_dir, a.repeat, a.fold, backend=a.backend, sync_batchnorm=a.sync_batchnorm)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
