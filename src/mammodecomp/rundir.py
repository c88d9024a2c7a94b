"""The run directory: its layout, the paths it records, and reading it back.

This module is the run directory's only owner. Training writes a run through
it, and diagnosis, the report, prediction, export and the scale-out runners
read runs through it; nobody else spells a file name of a run.

Layout (docs/architecture.md, "The run directory")::

    RUN/
      config.yaml  run.json  manifest.parquet  splits.csv  oof.csv  summary.json
      folds/r{R}f{F}/{history.csv, steps.csv, norm.json, model.safetensors, state.pt, test.csv, done.json}
      .lock

Paths a run records (``run.json``'s ``components_path`` and ``rois_path``:
the decomposition store's arrays) are stored **relative to the run
directory** when they can be, so a run typed with relative paths from any
working directory, or moved together with its store, still finds its
inputs. :func:`resolve_input` is the one place that turns a recorded path
back into a file: relative to the run directory, else as recorded (an
absolute path), else under a store folder the user names (``--store``);
a file found nowhere is a one-line :class:`~mammodecomp.errors.InputError`
naming what is missing and how to point at it, never a silent skip.

Examples
--------
>>> fold_name(0, 3), parse_fold_name("r1f2"), parse_fold_name("notes")
('r0f3', (1, 2), None)
>>> import pathlib
>>> record_path(pathlib.Path("runs/demo/small"), pathlib.Path("runs/demo/.store/x.npy"))
'../.store/x.npy'
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config, dump_config, load_config
from .errors import InputError, StageMissingError, VersionMismatchError
from .io import atomic_write, read_json, write_json

RUN_FORMAT = 1

CONFIG = "config.yaml"
RUN_JSON = "run.json"
MANIFEST = "manifest.parquet"
SPLITS = "splits.csv"
OOF = "oof.csv"
SUMMARY = "summary.json"
FOLDS = "folds"
LOCK = ".lock"
STUDY_JSON = "study.json"
# inside a fold folder
HISTORY = "history.csv"
STEPS = "steps.csv"       # global loss per optimiser step
NORM = "norm.json"
WEIGHTS = "model.safetensors"
STATE = "state.pt"
TEST = "test.csv"
DONE = "done.json"

#: the keys of run.json that name input arrays
INPUT_KEYS = ("components_path", "rois_path")

_FOLD_NAME = re.compile(r"^r(\d+)f(\d+)$")


# --------------------------------------------------------------------------- names and paths
def fold_name(repeat: int, fold: int) -> str:
    """The folder name of one (repeat, fold): ``r{R}f{F}``."""
    return f"r{int(repeat)}f{int(fold)}"


def parse_fold_name(name: str) -> tuple[int, int] | None:
    """``"r1f2"`` -> ``(1, 2)``; anything else -> None."""
    m = _FOLD_NAME.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def fold_path(run_dir: str | Path, repeat: int, fold: int) -> Path:
    """``RUN/folds/r{R}f{F}``."""
    return Path(run_dir) / FOLDS / fold_name(repeat, fold)


def fold_paths(run_dir: str | Path) -> dict[tuple[int, int], Path]:
    """The fold folders that exist, ``(repeat, fold) -> path``, sorted."""
    d = Path(run_dir) / FOLDS
    found = {}
    if d.is_dir():
        for p in d.iterdir():
            key = parse_fold_name(p.name)
            if key is not None and p.is_dir():
                found[key] = p
    return dict(sorted(found.items()))


def fold_rows(plan: pd.DataFrame, row_of: dict, repeat: int, fold: int) -> dict[str, np.ndarray]:
    """Manifest row positions of one fold's ``train``, ``val`` and ``test`` parts.

    ``row_of`` maps roi_id -> row position (the row order of the input
    arrays). The seed protocol's plan has no ``val`` rows; its "validation"
    is the test fold, which the caller decides on.
    """
    sub = plan[(plan["repeat"] == repeat) & (plan["fold"] == fold)]
    return {role: np.array([row_of[str(i)] for i in sub.loc[sub["role"] == role, "roi_id"] if str(i) in row_of],
                           dtype=np.int64)
            for role in ("train", "val", "test")}


def record_path(run_dir: str | Path, path: str | Path) -> str:
    """How run.json records ``path``: relative to ``run_dir`` (POSIX form)
    when both are on one file system tree, else absolute."""
    a, r = os.path.abspath(path), os.path.abspath(run_dir)
    try:
        return Path(os.path.relpath(a, r)).as_posix()
    except ValueError:   # another drive (Windows)
        return a


def resolve_input(run_dir: str | Path, info: dict, key: str, *, store: str | Path | None = None) -> Path:
    """The file run.json's ``key`` names, found as the module docstring says.

    Raises
    ------
    InputError
        When run.json names no such file, or the file is found nowhere.
    """
    run_dir = Path(run_dir)
    rec = info.get(key)
    if not rec:
        raise InputError(f"run.json names no {key}; the run is incomplete or from an older mammodecomp "
                         "(rerun `mammodecomp cv`)", path=run_dir / RUN_JSON)
    p = Path(str(rec))
    tried = []
    cands = [p] if p.is_absolute() else [run_dir / p]
    if store is not None:
        cands.append(Path(store) / p.name)
    for c in cands:
        tried.append(str(c))
        if c.is_file():
            return c
    hint = ("pass the store folder that holds it with --store DIR" if store is None
            else f"the store {store} does not hold {p.name} either")
    raise InputError(f"{key} '{rec}' not found (looked at {', '.join(tried)}): the run's decomposition "
                     f"store moved or was deleted; {hint}", path=run_dir / RUN_JSON)


def is_run_dir(path: str | Path) -> bool:
    """A finished run: it has out-of-fold predictions and a split plan."""
    path = Path(path)
    return (path / OOF).is_file() and (path / SPLITS).is_file()


def machine() -> str:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} {os.cpu_count()} cpu, {gpu}, torch {torch.__version__}"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- writing (training's side)
def check_existing(run_dir: Path, cfg: Config) -> dict:
    """Refuse to resume another format or config; returns the previous run.json ({} when none)."""
    cfg_path = Path(run_dir) / CONFIG
    if not cfg_path.is_file():
        return {}
    info = read_json(run_dir / RUN_JSON) if (run_dir / RUN_JSON).is_file() else {}
    if info.get("format") not in (None, RUN_FORMAT):
        raise VersionMismatchError(f"run directory was written by mammodecomp {info.get('version')} "
                                   f"(run format {info.get('format')}); this is format {RUN_FORMAT}: "
                                   "use a new --out", path=run_dir)
    # compared as configs, not as text: a field added since (with its default) is no change
    if load_config(cfg_path) != cfg:
        raise InputError("run directory holds a run with a different config; resume needs the same config "
                         "(use a new --out, or --overwrite)", path=run_dir)
    return info


def check_same_inputs(run_dir: Path, old: dict, manifest_hash: str, rois_path: Path) -> None:
    """A resumed run (``old``: its run.json) must see the rows and ROI pixels its finished
    folds were trained on (the ROI file's name is the hash of its pixels)."""
    was = {"manifest": old.get("manifest_hash"), "ROIs": Path(str(old.get("rois_path", ""))).name}
    now_ = {"manifest": manifest_hash, "ROIs": Path(rois_path).name}
    for what in was:
        if was[what] and was[what] != now_[what]:
            raise InputError(f"run directory was trained on other {what} ({was[what]}; now {now_[what]}): the "
                             "data or the ROI cropping changed since; use a new --out, or --overwrite",
                             path=run_dir)


def lock(run_dir: Path):
    """Hold ``RUN/.lock`` for the whole run; clear temp files a killed run left behind.

    A second process on the same run directory gets a one-line error instead of
    interleaving its writes with the first one's.
    """
    from filelock import FileLock, Timeout
    lk = FileLock(str(Path(run_dir) / LOCK))
    try:
        lk.acquire(timeout=0)
    except Timeout:
        raise InputError("another mammodecomp process is writing this run directory; wait for it or "
                         "use another --out", path=run_dir) from None
    for stale in Path(run_dir).rglob(".*.tmp"):      # atomic_write's temp files of a killed process
        stale.unlink(missing_ok=True)
    return lk


def write_start(run_dir: Path, cfg: Config, manifest: pd.DataFrame, plan: pd.DataFrame, info: dict) -> dict:
    """Write config.yaml, manifest.parquet, splits.csv and run.json; return run.json's dict.

    ``info`` holds the run's facts (recipe, manifest hash, channels, counts)
    and the absolute input paths under :data:`INPUT_KEYS`, which are
    recorded relative to the run directory.
    """
    from . import __version__
    from .manifest import save_manifest
    run_dir = Path(run_dir)
    with atomic_write(run_dir / CONFIG, "w") as f:
        f.write(dump_config(cfg))
    save_manifest(manifest, run_dir / MANIFEST)
    with atomic_write(run_dir / SPLITS, "w") as f:
        plan.to_csv(f, index=False)
    run_info = {"format": RUN_FORMAT, "version": __version__, **info, "machine": machine(), "started": now()}
    for key in INPUT_KEYS:
        if key in run_info:
            run_info[key] = record_path(run_dir, run_info[key])
    write_json(run_dir / RUN_JSON, run_info)
    return run_info


def write_fold_result(fold_dir: Path, *, roi_ids: np.ndarray, test_logits: np.ndarray, done: dict) -> None:
    """A finished fold's ``test.csv``, then ``done.json`` (the marker, last)."""
    fd = Path(fold_dir)
    fd.mkdir(parents=True, exist_ok=True)
    test = pd.DataFrame({"roi_id": np.asarray(roi_ids), "logit": np.asarray(test_logits)})
    with atomic_write(fd / TEST, "w") as fh:
        test.to_csv(fh, index=False, float_format="%.10g")
    write_json(fd / DONE, done)


def write_history(fold_dir: Path, history: pd.DataFrame) -> None:
    with atomic_write(Path(fold_dir) / HISTORY, "w") as fh:
        history.to_csv(fh, index=False)


def is_fold_done(run_dir: Path, repeat: int, fold: int) -> bool:
    return (fold_path(run_dir, repeat, fold) / DONE).is_file()


def read_fold_tests(run_dir: Path, folds: list[tuple[int, int]]) -> tuple[pd.DataFrame, list[dict]]:
    """The finished folds' test predictions (``roi_id, logit, repeat, fold, threshold``)
    and their done.json dicts, in ``folds`` order."""
    rows, dones = [], []
    for r, f in folds:
        fd = fold_path(run_dir, r, f)
        d = read_json(fd / DONE)
        test = pd.read_csv(fd / TEST, dtype={"roi_id": str})
        test["repeat"], test["fold"], test["threshold"] = r, f, d["threshold"]
        rows.append(test)
        dones.append(d)
    return pd.concat(rows, ignore_index=True), dones


def train_seconds(run_dir: Path) -> float:
    """Training time summed over every fold's epochs (across resumed invocations too)."""
    return float(sum(float(pd.read_csv(p / HISTORY).get("seconds", pd.Series(dtype=float)).sum())
                     for p in fold_paths(run_dir).values() if (p / HISTORY).is_file()))


def write_finish(run_dir: Path, oof: pd.DataFrame, summary: dict, run_info: dict) -> None:
    """oof.csv, summary.json, then run.json with the finish time."""
    with atomic_write(Path(run_dir) / OOF, "w") as fh:
        oof.to_csv(fh, index=False, float_format="%.10g")
    write_json(Path(run_dir) / SUMMARY, summary)
    run_info = dict(run_info, finished=now(), elapsed_s=summary.get("elapsed_s"))
    write_json(Path(run_dir) / RUN_JSON, run_info)


# --------------------------------------------------------------------------- reading
@dataclass
class Run:
    """A run directory, read once.

    Attributes
    ----------
    path : the run directory.
    name : its name inside a study (the folder name).
    config : the resolved :class:`~mammodecomp.config.Config`.
    info : ``run.json``.
    manifest : the manifest with ROI meta columns, in row order (roi_id and
        patient_id as strings).
    plan : ``splits.csv`` (``repeat, fold, roi_id, role``).
    oof : ``oof.csv``, or None for a run that has not finished.
    summary : ``summary.json`` (empty dict when absent).
    histories : ``(repeat, fold) -> history DataFrame``.
    done : ``(repeat, fold) -> done.json`` dict.
    store : a folder to look for the input arrays in when the recorded
        paths do not lead to them (``--store``).
    """

    path: Path
    name: str
    config: Config
    info: dict
    manifest: pd.DataFrame
    plan: pd.DataFrame
    oof: pd.DataFrame | None
    summary: dict = field(default_factory=dict)
    histories: dict = field(default_factory=dict)
    done: dict = field(default_factory=dict)
    store: Path | None = None

    # ---- config ------------------------------------------------------
    @property
    def recipe(self) -> str:
        return str(self.config.recipe)

    @cached_property
    def config_dict(self) -> dict:
        return self.config.model_dump(mode="json")

    def cfg(self, dotted: str, default=None):
        """A config value by dotted key (``"train.batch_size"``), or *default*."""
        cur = self.config_dict
        for part in dotted.split("."):
            if not isinstance(cur, dict) or part not in cur:
                return default
            cur = cur[part]
        return cur

    # ---- folds -------------------------------------------------------
    @property
    def folds(self) -> list[tuple[int, int]]:
        """The (repeat, fold) pairs of the plan, sorted."""
        pairs = self.plan[["repeat", "fold"]].drop_duplicates()
        return sorted((int(r), int(f)) for r, f in pairs.itertuples(index=False))

    def fold_dir(self, repeat: int, fold: int) -> Path:
        return fold_path(self.path, repeat, fold)

    @cached_property
    def row_of(self) -> dict:
        """roi_id -> manifest row index (the row order of the arrays)."""
        return {rid: i for i, rid in enumerate(self.manifest["roi_id"].astype(str))}

    def fold_rows(self, repeat: int, fold: int) -> dict[str, np.ndarray]:
        """Row positions of the fold's train, val and test parts (see :func:`fold_rows`)."""
        return fold_rows(self.plan, self.row_of, repeat, fold)

    def train_rows(self, repeat: int, fold: int, roles=("train",)) -> np.ndarray:
        rows = self.fold_rows(repeat, fold)
        return np.sort(np.concatenate([rows[r] for r in roles])).astype(int)

    def norm(self, repeat: int, fold: int) -> dict | None:
        p = self.fold_dir(repeat, fold) / NORM
        return read_json(p) if p.is_file() else None

    @cached_property
    def pooled(self) -> pd.DataFrame:
        """One out-of-fold prediction per tested ROI: probabilities averaged
        over repeats; columns ``roi_id, patient_id, label, prob, fold`` (fold of
        the first repeat), in manifest order."""
        o = self.oof.copy()
        o["roi_id"] = o["roi_id"].astype(str)
        g = o.groupby("roi_id", sort=False)
        out = g.agg(patient_id=("patient_id", "first"), label=("label", "first"),
                    prob=("prob", "mean"), fold=("fold", "first")).reset_index()
        out["row"] = out["roi_id"].map(self.row_of)
        out = out.dropna(subset=["row"]).sort_values("row").reset_index(drop=True)
        out["row"] = out["row"].astype(int)
        out["label"] = out["label"].astype(int)
        out["patient_id"] = out["patient_id"].astype(str)
        return out

    # ---- input arrays ------------------------------------------------
    def input_path(self, key: str) -> Path:
        """The file run.json's ``key`` names (see :func:`resolve_input`)."""
        return resolve_input(self.path, self.info, key, store=self.store)

    def components(self) -> np.ndarray:
        """The (N,K,H,W) components memmap in manifest order."""
        return np.load(self.input_path("components_path"), mmap_mode="r")

    def rois(self) -> np.ndarray:
        """The (N,H,W) raw ROIs memmap in manifest order."""
        return np.load(self.input_path("rois_path"), mmap_mode="r")

    def check_inputs(self) -> None:
        """Resolve every input array run.json names: a missing one is a one-line
        :class:`~mammodecomp.errors.InputError` now, not a skipped check later."""
        for key in INPUT_KEYS:
            self.input_path(key)

    @property
    def store_dir(self) -> Path:
        """The folder of the run's decomposition store entry."""
        return self.input_path("components_path").parent

    def inputs(self) -> np.ndarray:
        """The model inputs (N, C, H, W) for this run's variant, in manifest order."""
        v = self.config.decomposition.variant
        if v == "raw":
            return np.asarray(self.rois(), dtype=np.float32)[:, None]
        comps = np.asarray(self.components(), dtype=np.float32)
        if v == "components+raw":
            return np.concatenate([comps, np.asarray(self.rois(), dtype=np.float32)[:, None]], 1)
        return comps


def read_run(path: str | Path, name: str | None = None, *, store: str | Path | None = None,
             finished: bool = True) -> Run:
    """Read a run directory.

    Parameters
    ----------
    path : the run directory.
    name : its name in a study (default: the folder name).
    store : a folder holding the run's input arrays when the paths run.json
        records do not lead to them (a run moved without its store).
    finished : require oof.csv (a finished run); False reads a partial run.

    Raises
    ------
    StageMissingError
        When a file the stage needs is missing; the message names the
        command that makes it.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError("run directory not found", path=path)
    needs = (CONFIG, MANIFEST, SPLITS) + ((OOF,) if finished else ())
    for need in needs:
        if not (path / need).is_file():
            raise StageMissingError(f"{need} missing: not a {'finished ' if finished else ''}run directory; "
                                    "make one with `mammodecomp cv`", path=path)
    info = read_json(path / RUN_JSON) if (path / RUN_JSON).is_file() else {}
    if not isinstance(info, dict):
        raise InputError("run.json is not a JSON object", path=path / RUN_JSON)
    if info.get("format") not in (None, RUN_FORMAT):
        raise VersionMismatchError(f"run format {info.get('format')} is not {RUN_FORMAT} "
                                   f"(written by mammodecomp {info.get('version')}); rerun `mammodecomp cv` "
                                   "with this version", path=path)
    cfg = load_config(path / CONFIG)
    manifest = pd.read_parquet(path / MANIFEST).reset_index(drop=True)
    manifest["roi_id"] = manifest["roi_id"].astype(str)
    manifest["patient_id"] = manifest["patient_id"].astype(str)
    plan = pd.read_csv(path / SPLITS, dtype={"roi_id": str})
    oof = pd.read_csv(path / OOF, dtype={"roi_id": str, "patient_id": str}) if (path / OOF).is_file() else None
    for df, cols, file in ((plan, ["repeat", "fold", "roi_id", "role"], SPLITS),
                           (oof, ["roi_id", "label", "prob"], OOF)):
        miss = [] if df is None else [c for c in cols if c not in df.columns]
        if miss:
            raise InputError(f"lacks column(s) {miss}", path=path / file)
    if oof is not None:
        if "repeat" not in oof.columns:
            oof["repeat"] = 0
        if "patient_id" not in oof.columns:
            oof["patient_id"] = oof["roi_id"].map(dict(zip(manifest["roi_id"], manifest["patient_id"])))
        if "fold" not in oof.columns:
            test = plan[plan["role"] == "test"]
            oof["fold"] = oof["roi_id"].map(dict(zip(test["roi_id"], test["fold"])))
    summary = read_json(path / SUMMARY) if (path / SUMMARY).is_file() else {}
    histories, done = {}, {}
    for key, d in fold_paths(path).items():
        if (d / HISTORY).is_file():
            h = pd.read_csv(d / HISTORY)
            if len(h):
                histories[key] = h
        if (d / DONE).is_file():
            done[key] = read_json(d / DONE)
    return Run(path=path, name=name or path.name, config=cfg, info=info, manifest=manifest, plan=plan, oof=oof,
               summary=summary, histories=histories, done=done, store=Path(store) if store else None)


@dataclass
class Study:
    """A run to diagnose and its siblings (other recipes or ablation
    variants on the same data), when the input is a study directory."""

    path: Path
    primary: Run
    siblings: dict = field(default_factory=dict)   # name -> Run (primary excluded)
    is_study: bool = False


def _primary_name(runs: dict, meta: dict) -> str:
    want = meta.get("primary") if isinstance(meta, dict) else None
    if isinstance(want, str) and want in runs:
        return want
    for name, r in runs.items():
        if r.recipe == "seed":
            return name
    return next(iter(runs))


def study_arm_names(path: Path, meta: dict) -> list[str]:
    """The arms a study directory's study.json (``meta``) lists, then any other sub-folders."""
    listed = (meta.get("arms") or meta.get("runs")) if isinstance(meta, dict) else None
    names: list[str] = []
    if isinstance(listed, dict):    # study.run_study writes {"arms": {name: {"path": ...}}}
        names = [str(v.get("path", k)) if isinstance(v, dict) else k for k, v in listed.items()]
    elif isinstance(listed, list):
        names = [x if isinstance(x, str) else str(x.get("name")) for x in listed]
    names += sorted(d.name for d in path.iterdir() if d.is_dir() and d.name not in names)
    return names


def load_study(path: str | Path, *, store: str | Path | None = None) -> Study:
    """A run directory, or a study directory of sibling runs.

    The study's primary run is ``study.json``'s ``"primary"`` when given,
    else the run made with the ``seed`` recipe, else the first listed.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError("run or study directory not found", path=path)
    if is_run_dir(path):
        return Study(path=path, primary=read_run(path, store=store), is_study=False)
    meta = read_json(path / STUDY_JSON) if (path / STUDY_JSON).is_file() else {}
    runs = {n: read_run(path / n, n, store=store) for n in study_arm_names(path, meta) if is_run_dir(path / n)}
    if not runs:
        raise StageMissingError("neither a run directory (oof.csv, splits.csv) nor a study of run "
                                "directories; run `mammodecomp cv` or `mammodecomp study` first", path=path)
    primary = runs.pop(_primary_name(runs, meta))
    return Study(path=path, primary=primary, siblings=runs, is_study=True)
