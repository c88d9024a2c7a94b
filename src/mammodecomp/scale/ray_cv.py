"""Cross-validation folds and repeats as Ray tasks, one fold per GPU (or less).

:class:`RayFoldRunner` is a ``fold_runner`` for
:func:`mammodecomp.train.cross_validate`: the driver still resolves the
config, builds the inputs (through the store), writes ``config.yaml``,
``splits.csv``, ``run.json`` and, at the end, ``oof.csv`` and
``summary.json``; only the folds run remotely. Each task trains one
(repeat, fold) with :func:`mammodecomp.train.run_fold_task` (the very code of
a single-machine run) in a scratch folder on its worker and returns the
fold's files, which the driver writes into ``RUN/folds/r{R}f{F}/``, the
``done.json`` marker last. The run directory is therefore the same as a
serial run's, whether or not the workers share a file system with the
driver.

Ray is an optional extra (``pip install mammodecomp[ray]``); it is imported
only when a runner is called.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

__all__ = ["RayFoldRunner", "import_ray"]

#: files of a fold directory a task sends back, ``done.json`` last
from .. import rundir

#: the files a fold task returns (done.json, the marker, is written last)
FOLD_FILES = (rundir.NORM, rundir.HISTORY, rundir.STEPS, rundir.WEIGHTS, rundir.STATE, rundir.TEST, rundir.DONE)


def import_ray():
    """Import Ray, or raise an InputError that names the extra to install.

    Returns
    -------
    module
        The ``ray`` module.
    """
    try:
        import ray
    except ImportError:
        from ..errors import InputError
        raise InputError("Ray is not installed; install the extra with `pip install mammodecomp[ray]` "
                         "(or `pip install 'ray[data]'`)") from None
    return ray


def ensure_ray(address: str | None = None, **init_kwargs) -> bool:
    """Connect to (or start) Ray unless this process already is connected.

    Parameters
    ----------
    address : str or None
        ``"auto"`` or ``"ray://host:10001"`` for a running cluster; None starts
        a local one (all cores of this machine unless ``num_cpus`` is given).
    **init_kwargs
        Passed to ``ray.init``.

    Returns
    -------
    bool
        True when this call started the connection (the caller then shuts it
        down), False when one was already open.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    kw = {"include_dashboard": False, "log_to_driver": False}
    kw.update(init_kwargs)
    ray.init(address=address, **kw)
    return True


def _train_fold_remote(cfg_yaml: str, x: np.ndarray, y: np.ndarray, roi_ids: np.ndarray, task, threads: int):
    """Body of one Ray task: train ``task`` in a scratch folder, return its files."""
    import torch
    import yaml

    from ..config import Config
    from ..train import run_fold_task

    os.environ["MAMMODECOMP_QUIET"] = "1"
    cfg = Config.model_validate(yaml.safe_load(cfg_yaml))
    torch.set_num_threads(int(cfg.train.threads or threads))
    with tempfile.TemporaryDirectory(prefix="mammodecomp-fold-") as d:
        local = replace(task, out=Path(d) / Path(task.out).name)
        run_fold_task(cfg, x, y, roi_ids, local)
        return {name: (local.out / name).read_bytes() for name in FOLD_FILES if (local.out / name).is_file()}


def write_fold_files(out: Path, files: dict[str, bytes]) -> None:
    """Write a fold's returned files atomically, ``done.json`` last.

    Parameters
    ----------
    out : Path
        The fold directory in the run directory.
    files : dict
        File name -> content, as returned by a fold task.
    """
    from ..io import atomic_write
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in sorted(files, key=lambda n: n == rundir.DONE):
        with atomic_write(out / name, "wb") as f:
            f.write(files[name])


class RayFoldRunner:
    """Train the pending folds of a run as Ray tasks.

    Parameters
    ----------
    address : str or None
        Ray cluster address (``"auto"`` on a cluster node, ``"ray://..."``
        through a Ray client); None starts a local Ray on this machine.
        Ignored when this process is already connected.
    num_gpus_per_fold : float or None
        GPUs reserved per fold task. None: 1 when the cluster has GPUs and
        ``train.device`` is not ``"cpu"``, else 0. A fraction (0.25) packs
        several small-model folds on one GPU, each in its own worker process.
    num_cpus_per_fold : float
        CPUs reserved per fold task; also its torch thread count unless
        ``train.threads`` is set.
    init_kwargs : dict or None
        Passed to ``ray.init`` when this runner starts Ray.

    Notes
    -----
    The inputs go to the object store once (``ray.put``) and are shared by
    every task of a node. A fold killed on a worker restarts from its first
    epoch when the run is resumed (completed folds are kept: their files
    are in the run directory). With ``train.device_resident`` each task
    copies the inputs to its GPU once, before its first epoch.

    Examples
    --------
    >>> runner = RayFoldRunner(num_gpus_per_fold=0.5)   # two folds per GPU
    >>> runner.num_gpus_per_fold
    0.5
    """

    def __init__(self, *, address: str | None = None, num_gpus_per_fold: float | None = None,
                 num_cpus_per_fold: float = 1, init_kwargs: dict | None = None):
        from ..errors import InputError
        if num_gpus_per_fold is not None and num_gpus_per_fold < 0:
            raise InputError(f"num_gpus_per_fold must be >= 0, got {num_gpus_per_fold}")
        if num_cpus_per_fold <= 0:
            raise InputError(f"num_cpus_per_fold must be > 0, got {num_cpus_per_fold}")
        self.address = address
        self.num_gpus_per_fold = num_gpus_per_fold
        self.num_cpus_per_fold = num_cpus_per_fold
        self.init_kwargs = dict(init_kwargs or {})

    def _gpus(self, ray, cfg) -> float:
        if self.num_gpus_per_fold is not None:
            return float(self.num_gpus_per_fold)
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        return 1.0 if has_gpu and cfg.train.device != "cpu" else 0.0

    def __call__(self, cfg, inputs, y: np.ndarray, tasks: list) -> None:
        """Run ``tasks`` (see :func:`mammodecomp.train.cross_validate`)."""
        from ..config import dump_config
        from ..progress import progress

        ray = import_ray()
        started = ensure_ray(self.address, **self.init_kwargs)
        try:
            remote = ray.remote(_train_fold_remote).options(num_cpus=self.num_cpus_per_fold,
                                                            num_gpus=self._gpus(ray, cfg), max_retries=0)
            x_ref = ray.put(np.ascontiguousarray(inputs.x))
            y_ref = ray.put(np.asarray(y))
            ids_ref = ray.put(inputs.manifest["roi_id"].to_numpy())
            cfg_yaml = dump_config(cfg)
            threads = max(1, int(self.num_cpus_per_fold))
            pending = {remote.remote(cfg_yaml, x_ref, y_ref, ids_ref, t, threads): t for t in tasks}
            bar = progress(total=len(tasks), desc="folds (ray)", leave=True)
            try:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    task = pending.pop(ready[0])
                    write_fold_files(task.out, ray.get(ready[0]))
                    bar.update(1)
            finally:
                for ref in pending:
                    ray.cancel(ref, force=True)
                bar.close()
        finally:
            if started:
                ray.shutdown()
