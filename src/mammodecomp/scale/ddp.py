"""Data-parallel training of one fold over several processes (torchrun, DDP).

For a model too large or too slow for one GPU per fold, one fold is trained
by ``W`` processes (one per GPU; gloo on CPUs). The training loop is
:func:`mammodecomp.fit.fit_fold`, the same function a single process runs:
inside a process group it wraps the model in DistributedDataParallel, shares
each global batch between the ranks, shards and gathers evaluation and lets
rank 0 write the fold directory. This module only sets the process group up
and launches torchrun:

    torchrun --nproc_per_node 4 -m mammodecomp.scale.ddp RUN --repeat 0 --fold 0

or let :class:`TorchrunFoldRunner` launch torchrun for each pending fold of
``cross_validate``.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..fit import barrier, rank_world

__all__ = ["fit_fold_ddp", "TorchrunFoldRunner", "init_from_env", "main"]


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
        return rank_world()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return rank_world()


def fit_fold_ddp(cfg, x: np.ndarray, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
                 test_idx: np.ndarray, out: str | Path, *, seed: int, model_factory=None,
                 sync_batchnorm: bool = False, desc: str = ""):
    """Train one fold over the current process group: :func:`mammodecomp.fit.fit_fold`.

    Kept as the data-parallel entry by name; without a process group (or with
    one rank) this is a single-process run of the same recipe.
    """
    from ..fit import fit_fold
    return fit_fold(cfg, x, y, train_idx, val_idx, test_idx, out, seed=seed, model_factory=model_factory,
                    sync_batchnorm=sync_batchnorm, desc=desc or "epochs (ddp)")


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
    rank, world = rank_world()
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
    barrier(world)


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
