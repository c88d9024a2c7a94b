"""Read a run directory (or a study of sibling runs) for diagnosis.

The diagnosis reads the plain files that ``train.cross_validate`` writes
(docs/architecture.md, "The run directory"): CSV, JSON, YAML, parquet and
``.npy``. It does not need the training code to read them, so a run can be
diagnosed on a machine that only has the run directory; only the model-based
evidence (capacity from the checkpoint, occlusion, Grad-CAM) loads models.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..errors import InputError, StageMissingError
from ..io import read_json

_FOLD_DIR = re.compile(r"^r(\d+)f(\d+)$")


@dataclass
class RunFiles:
    """The files of one finished run, read once.

    Attributes
    ----------
    path : the run directory.
    name : its name inside a study (the folder name).
    config : the resolved config as a plain dict (sections ``data``,
        ``decomposition``, ``model``, ``train``, ``cv``, ``recipe``).
    info : ``run.json``.
    manifest : the manifest with ROI meta columns, in row order.
    plan : ``splits.csv`` (``repeat, fold, roi_id, role``).
    oof : ``oof.csv`` (``roi_id, patient_id, label, repeat, fold, prob, logit``).
    summary : ``summary.json`` (empty dict when absent).
    histories : ``(repeat, fold) -> history DataFrame``.
    done : ``(repeat, fold) -> done.json`` dict.
    """

    path: Path
    name: str
    config: dict
    info: dict
    manifest: pd.DataFrame
    plan: pd.DataFrame
    oof: pd.DataFrame
    summary: dict = field(default_factory=dict)
    histories: dict = field(default_factory=dict)
    done: dict = field(default_factory=dict)

    # ---- convenience -------------------------------------------------
    @property
    def recipe(self) -> str:
        r = self.config.get("recipe") or self.info.get("recipe") or "unknown"
        return r if isinstance(r, str) else str(r.get("name", "unknown"))

    def cfg(self, dotted: str, default=None):
        """A config value by dotted key (``"train.batch_size"``), or *default*."""
        cur = self.config
        for part in dotted.split("."):
            if not isinstance(cur, dict) or part not in cur:
                return default
            cur = cur[part]
        return cur

    @property
    def folds(self) -> list[tuple[int, int]]:
        """The (repeat, fold) pairs of the plan, sorted."""
        pairs = self.plan[["repeat", "fold"]].drop_duplicates()
        return sorted((int(r), int(f)) for r, f in pairs.itertuples(index=False))

    @cached_property
    def row_of(self) -> dict:
        """roi_id -> manifest row index (the row order of the arrays)."""
        return {rid: i for i, rid in enumerate(self.manifest["roi_id"].astype(str))}

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

    def _array(self, key: str):
        p = self.info.get(key)
        if not p:
            return None
        p = Path(p)
        if not p.is_absolute():
            p = self.path / p
        if not p.is_file():
            return None
        return np.load(p, mmap_mode="r")

    def components(self):
        """The (N,K,H,W) components memmap in manifest order, or None."""
        return self._array("components_path")

    def rois(self):
        """The (N,H,W) raw ROIs memmap in manifest order; the sum of the
        components when ``rois_path`` is absent; None when neither exists."""
        r = self._array("rois_path")
        if r is None:
            c = self.components()
            if c is not None:
                r = np.asarray(c, dtype=np.float32).sum(axis=1)
        return r

    def norm(self, repeat: int, fold: int) -> dict | None:
        p = self.path / "folds" / f"r{repeat}f{fold}" / "norm.json"
        return read_json(p) if p.is_file() else None

    def train_rows(self, repeat: int, fold: int, roles=("train",)) -> np.ndarray:
        sel = self.plan[(self.plan["repeat"] == repeat) & (self.plan["fold"] == fold)
                        & self.plan["role"].isin(roles)]
        return np.array([self.row_of[r] for r in sel["roi_id"].astype(str) if r in self.row_of], dtype=int)


def is_run_dir(path: Path) -> bool:
    return (path / "oof.csv").is_file() and (path / "splits.csv").is_file()


def load_run_files(path: str | Path, name: str | None = None) -> RunFiles:
    """Read a finished run directory.

    Raises
    ------
    StageMissingError
        When the directory lacks the files a finished run has; the message
        names the command that makes them.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError("run directory not found", path=path)
    for need in ("manifest.parquet", "splits.csv", "oof.csv"):
        if not (path / need).is_file():
            raise StageMissingError(f"{need} missing: not a finished run directory; run "
                                    "`mammodecomp cv` (train.cross_validate) first", path=path)
    config: dict = {}
    if (path / "config.yaml").is_file():
        try:
            config = yaml.safe_load((path / "config.yaml").read_text()) or {}
        except yaml.YAMLError as e:
            raise InputError(f"config.yaml is not valid YAML ({str(e).splitlines()[0]})", path=path) from None
    info = read_json(path / "run.json") if (path / "run.json").is_file() else {}
    from ..train import RUN_FORMAT
    if isinstance(info, dict) and info.get("format") not in (None, RUN_FORMAT):
        from ..errors import VersionMismatchError
        raise VersionMismatchError(f"run format {info.get('format')} is not {RUN_FORMAT} "
                                   f"(written by mammodecomp {info.get('version')}); rerun `mammodecomp cv` "
                                   "with this version", path=path)
    manifest = pd.read_parquet(path / "manifest.parquet").reset_index(drop=True)
    manifest["roi_id"] = manifest["roi_id"].astype(str)
    manifest["patient_id"] = manifest["patient_id"].astype(str)
    plan = pd.read_csv(path / "splits.csv", dtype={"roi_id": str})
    oof = pd.read_csv(path / "oof.csv", dtype={"roi_id": str, "patient_id": str})
    for df, cols, name_ in ((plan, ["repeat", "fold", "roi_id", "role"], "splits.csv"),
                            (oof, ["roi_id", "label", "prob"], "oof.csv")):
        miss = [c for c in cols if c not in df.columns]
        if miss:
            raise InputError(f"{name_} lacks column(s) {miss}", path=path)
    if "repeat" not in oof.columns:
        oof["repeat"] = 0
    if "patient_id" not in oof.columns:
        oof["patient_id"] = oof["roi_id"].map(dict(zip(manifest["roi_id"], manifest["patient_id"])))
    if "fold" not in oof.columns:
        test = plan[plan["role"] == "test"]
        oof["fold"] = oof["roi_id"].map(dict(zip(test["roi_id"], test["fold"])))
    summary = read_json(path / "summary.json") if (path / "summary.json").is_file() else {}
    histories, done = {}, {}
    folds_dir = path / "folds"
    if folds_dir.is_dir():
        for d in sorted(folds_dir.iterdir()):
            m = _FOLD_DIR.match(d.name)
            if not m:
                continue
            key = (int(m.group(1)), int(m.group(2)))
            if (d / "history.csv").is_file():
                h = pd.read_csv(d / "history.csv")
                if len(h):
                    histories[key] = h
            if (d / "done.json").is_file():
                done[key] = read_json(d / "done.json")
    return RunFiles(path=path, name=name or path.name, config=config, info=info, manifest=manifest,
                    plan=plan, oof=oof, summary=summary, histories=histories, done=done)


@dataclass
class Study:
    """A run to diagnose and its siblings (other recipes or ablation
    variants on the same data), when the input is a study directory."""

    path: Path
    primary: RunFiles
    siblings: dict = field(default_factory=dict)   # name -> RunFiles (primary excluded)
    is_study: bool = False


def _primary_name(runs: dict, meta: dict) -> str:
    want = meta.get("primary") if isinstance(meta, dict) else None
    if isinstance(want, str) and want in runs:
        return want
    for name, r in runs.items():
        if r.recipe == "seed":
            return name
    if "seed" in runs:
        return "seed"
    return next(iter(runs))


def load_study(path: str | Path) -> Study:
    """A run directory, or a study directory of sibling runs.

    The study's primary run is ``study.json``'s ``"primary"`` when given,
    else the run made with the ``seed`` recipe, else the first listed.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError("run or study directory not found", path=path)
    if is_run_dir(path):
        return Study(path=path, primary=load_run_files(path), is_study=False)
    meta = read_json(path / "study.json") if (path / "study.json").is_file() else {}
    listed = (meta.get("arms") or meta.get("runs")) if isinstance(meta, dict) else None
    names: list[str] = []
    if isinstance(listed, dict):    # study.run_study writes {"arms": {name: {"path": ...}}}
        names = [str(v.get("path", k)) if isinstance(v, dict) else k for k, v in listed.items()]
    elif isinstance(listed, list):
        names = [x if isinstance(x, str) else str(x.get("name")) for x in listed]
    names += sorted(d.name for d in path.iterdir() if d.is_dir() and d.name not in names)
    runs = {n: load_run_files(path / n, n) for n in names if is_run_dir(path / n)}
    if not runs:
        raise StageMissingError("neither a run directory (oof.csv, splits.csv) nor a study of run "
                                "directories; run `mammodecomp cv` first", path=path)
    first = _primary_name(runs, meta)
    primary = runs.pop(first)
    return Study(path=path, primary=primary, siblings=runs, is_study=True)
