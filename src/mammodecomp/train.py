"""Cross-validate a recipe into a run directory: prepare the run, run the folds, collect.

* :func:`prepare_run` -- inputs (ROIs, components through the store), the
  split plan, the run directory's first files, and one :class:`FoldTask` per
  fold still to train.
* a fold runner -- trains the tasks (:func:`serial_fold_runner` here; Ray and
  torchrun runners in :mod:`mammodecomp.scale`), each through
  :func:`run_fold_task`, which calls :func:`mammodecomp.fit.fit_fold`.
* :func:`collect` -- the out-of-fold table and summary from the finished folds.

:func:`cross_validate` does the three in order. The run directory's layout
belongs to :mod:`mammodecomp.rundir`; one fold's training to
:mod:`mammodecomp.fit`; the probe's learner to :mod:`mammodecomp.probe`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from . import rundir
from .config import Config
from .fit import FoldResult, _sigmoid, fit_fold
from .progress import progress, quiet


def fold_seed(seed: int, repeat: int, fold: int) -> int:
    """The seed of one fold's model, data order and augmentation."""
    return int(seed) * 1_000_003 + repeat * 1009 + fold * 17 + 1


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


class FoldRunner(Protocol):
    """What trains a run's pending folds.

    Called as ``runner(cfg, inputs, y, tasks)``; must leave each task's
    ``test.csv`` and, last, ``done.json`` in ``task.out`` (what
    :func:`run_fold_task` writes), wherever the folds run.
    """

    def __call__(self, cfg: Config, inputs, y: np.ndarray, tasks: list[FoldTask]) -> None: ...


def fold_task(cfg: Config, run_dir: Path, plan: pd.DataFrame, row_of: dict, repeat: int, fold: int) -> FoldTask:
    """The :class:`FoldTask` of (repeat, fold): its rows, folder and seed.

    The seed protocol's plan has no inner validation rows; its "validation"
    is the test fold, as the question's code did.
    """
    idx = rundir.fold_rows(plan, row_of, repeat, fold)
    validated_on_test = len(idx["val"]) == 0
    return FoldTask(repeat=repeat, fold=fold, train_idx=idx["train"],
                    val_idx=idx["test"] if validated_on_test else idx["val"], test_idx=idx["test"],
                    out=rundir.fold_path(run_dir, repeat, fold), seed=fold_seed(cfg.train.seed, repeat, fold),
                    validated_on_test=validated_on_test)


def write_fold_result(task: FoldTask, res: FoldResult, roi_ids: np.ndarray) -> None:
    """Write a finished fold's ``test.csv`` then ``done.json`` (the marker, last)."""
    hist = res.history
    last = hist.iloc[-1].to_dict() if len(hist) else {}
    rundir.write_fold_result(task.out, roi_ids=np.asarray(roi_ids)[task.test_idx], test_logits=res.test_logits, done={
        "best_epoch": res.best_epoch, "threshold": res.threshold, "epochs_run": int(len(hist)),
        "validated_on_test": task.validated_on_test, "n_train": int(len(task.train_idx)),
        "n_val": int(len(task.val_idx)), "n_test": int(len(task.test_idx)),
        "final_train_auc": last.get("train_auc"), "final_val_auc": last.get("val_auc")})


def run_fold_task(cfg: Config, x: np.ndarray, y: np.ndarray, roi_ids: np.ndarray, task: FoldTask, *,
                  resident: torch.Tensor | None = None) -> None:
    """Train one fold with :func:`mammodecomp.fit.fit_fold` and write its result files.

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
        from .device import make_resident, resolve_device
        resident = make_resident(inputs.x, resolve_device(cfg.train.device))
    roi_ids = inputs.manifest["roi_id"].to_numpy()
    for task in progress(tasks, total=len(tasks), desc="folds", leave=True):
        run_fold_task(cfg, inputs.x, y, roi_ids, task, resident=resident)


@dataclass
class PreparedRun:
    """A run directory ready for its folds: what :func:`prepare_run` returns."""

    path: Path
    cfg: Config
    inputs: object            # mammodecomp.data.Inputs
    plan: pd.DataFrame
    info: dict                # run.json as written
    folds: list[tuple[int, int]]
    tasks: list[FoldTask]     # the folds still to train (network recipes)
    y: np.ndarray


def prepare_run(cfg: Config, out: str | Path, *, overwrite: bool = False, progress_bars: bool = True):
    """Make or resume a run directory; returns ``(PreparedRun, lock)``.

    Builds the inputs (ROIs and components through the store), the split
    plan (checked before anything is written: too few patients for the folds
    leave no half-made run directory), writes config.yaml, manifest.parquet,
    splits.csv and run.json, takes the run's lock, trains the probe recipe's
    folds (seconds: a regression on cached features) and lists the network
    folds still to train. The caller releases the lock.
    """
    import shutil

    from .cv import check_plan, make_split_plan
    from .data import prepare_inputs
    from .probe import fit_probe_fold, probe_features

    run_dir = Path(out)
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    previous = rundir.check_existing(run_dir, cfg)
    if cfg.model.weights:   # a bad weights file fails now, not after the ROIs are decomposed
        from .models.weights import load_state_dict_file
        load_state_dict_file(cfg.model.weights)
    inp = prepare_inputs(cfg, run_dir, progress=progress_bars and not quiet())
    rundir.check_same_inputs(run_dir, previous, inp.info["manifest_hash"], inp.rois_path)
    df = inp.manifest
    c = cfg.cv
    plan = make_split_plan(df, n_folds=c.n_folds, n_repeats=c.n_repeats, seed=c.seed, scheme=c.scheme,
                           inner_fraction=c.inner_fraction)
    check_plan(plan, df, scheme=c.scheme)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = rundir.lock(run_dir)
    try:
        info = rundir.write_start(run_dir, cfg, df, plan, {
            "recipe": cfg.recipe, "manifest_hash": inp.info["manifest_hash"],
            "components_path": inp.components_path, "rois_path": inp.rois_path, "channels": inp.channels,
            "n_rois": inp.info["n_rois"], "n_patients": inp.info["n_patients"],
            "class_counts": inp.info["class_counts"]})
        y = df["label"].to_numpy().astype(np.int64)
        row_of = {str(rid): i for i, rid in enumerate(df["roi_id"])}
        roi_ids = df["roi_id"].to_numpy()
        folds = sorted({(int(r), int(f)) for r, f in zip(plan["repeat"], plan["fold"])})
        tasks: list[FoldTask] = []
        feats = None   # the probe's frozen features: computed (or read from the store) once a fold needs them
        for r, f in folds:
            if rundir.is_fold_done(run_dir, r, f):
                continue
            task = fold_task(cfg, run_dir, plan, row_of, r, f)
            if cfg.recipe != "probe":
                tasks.append(task)
                continue
            if feats is None:
                feats = probe_features(cfg, inp.x, inp.components_path.parent)
            res = fit_probe_fold(cfg, feats, y, task.train_idx, task.val_idx, task.test_idx,
                                 groups=df["patient_id"].to_numpy())
            task.out.mkdir(parents=True, exist_ok=True)
            rundir.write_history(task.out, res.history)
            write_fold_result(task, res, roi_ids)
    except BaseException:
        lock.release()
        raise
    return PreparedRun(path=run_dir, cfg=cfg, inputs=inp, plan=plan, info=info, folds=folds, tasks=tasks,
                       y=y), lock


def collect(prep: PreparedRun, *, elapsed_s: float) -> dict:
    """Out-of-fold table and summary from the finished folds; writes oof.csv,
    summary.json and the finished run.json. Returns the summary."""
    from .metrics import pooled_oof_summary
    cfg, run_dir, df = prep.cfg, prep.path, prep.inputs.manifest
    missing = [rundir.fold_name(t.repeat, t.fold) for t in prep.tasks if not (t.out / rundir.DONE).is_file()]
    if missing:
        raise RuntimeError(f"fold runner returned without finishing fold(s) {', '.join(missing)}")
    oof, dones = rundir.read_fold_tests(run_dir, prep.folds)
    meta = df.set_index("roi_id")
    oof["patient_id"] = meta.loc[oof["roi_id"], "patient_id"].to_numpy()
    oof["label"] = meta.loc[oof["roi_id"], "label"].to_numpy()
    oof["prob"] = _sigmoid(oof["logit"].to_numpy())
    lesion = ["lesion_id"] if "lesion_id" in meta.columns else []
    if lesion:
        oof["lesion_id"] = meta.loc[oof["roi_id"], "lesion_id"].to_numpy()
    oof = oof[["roi_id", "patient_id", *lesion, "label", "repeat", "fold", "prob", "logit", "threshold"]]
    summary = pooled_oof_summary(oof, n_boot=cfg.cv.n_boot, seed=cfg.cv.seed, manifest=df)
    summary.update({
        "recipe": cfg.recipe, "model": cfg.model.name, "channels": prep.inputs.channels,
        "decomposition": cfg.decomposition.method, "variant": cfg.decomposition.variant,
        "cv_scheme": cfg.cv.scheme, "n_folds": cfg.cv.n_folds, "n_repeats": cfg.cv.n_repeats,
        "validated_on_test": any(d["validated_on_test"] for d in dones),
        "final_train_auc_mean": _nanmean([d.get("final_train_auc") for d in dones]),
        "final_val_auc_mean": _nanmean([d.get("final_val_auc") for d in dones]),
        "best_epochs": [d["best_epoch"] for d in dones],
        "n_rois": prep.inputs.info["n_rois"], "n_patients": prep.inputs.info["n_patients"],
        "n_rois_never_tested": int(len(df) - oof["roi_id"].nunique()),
        "elapsed_s": round(elapsed_s, 1), "machine": prep.info["machine"],
        "train_seconds": round(rundir.train_seconds(run_dir), 1),
    })
    rundir.write_finish(run_dir, oof, summary, prep.info)
    return summary


def cross_validate(cfg: Config, out: str | Path, *, overwrite: bool = False, progress_bars: bool = True,
                   fold_runner: FoldRunner | None = None) -> Path:
    """Run a recipe under cross-validation into ``out`` (a run directory).

    Resumable: folds with ``done.json`` are kept, the fold in progress restarts
    from its last completed epoch. Returns the run directory.

    ``fold_runner(cfg, inputs, y, tasks)`` trains the folds still to do (a
    :class:`FoldRunner`); default :func:`serial_fold_runner`. Runners that
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
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    t_start = time.perf_counter()
    prev_quiet = os.environ.get("MAMMODECOMP_QUIET")
    if not progress_bars:
        os.environ["MAMMODECOMP_QUIET"] = "1"
    lock = None
    try:
        prep, lock = prepare_run(cfg, out, overwrite=overwrite, progress_bars=progress_bars)
        if prep.tasks:
            (fold_runner or serial_fold_runner)(cfg, prep.inputs, prep.y, prep.tasks)
        collect(prep, elapsed_s=time.perf_counter() - t_start)
    finally:
        if lock is not None:
            lock.release()
        if not progress_bars:
            if prev_quiet is None:
                os.environ.pop("MAMMODECOMP_QUIET", None)
            else:
                os.environ["MAMMODECOMP_QUIET"] = prev_quiet
    return Path(out)


def _nanmean(v):
    a = np.array([np.nan if x is None else float(x) for x in v], dtype=float)
    return float(np.nanmean(a)) if np.isfinite(a).any() else None

