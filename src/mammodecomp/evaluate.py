"""Held-out evaluation: a finished run's fold ensemble on rows no fold ever saw.

:func:`evaluate` applies the run's fold models (through
:func:`mammodecomp.predict.predict`, the run's own preprocessing) to the
held-out rows of a manifest, the rows whose ``split`` is ``test`` (the
official test split that the CBIS-DDSM and VinDr sources fill in) or, when
the manifest has no ``split`` column, all its rows. It reports the held-out
AUC, operating points and calibration with patient-bootstrap CIs next to the
run's out-of-fold numbers (``summary.json``) and the gap between them.

Invariants
----------
* A held-out row was never in any fold: it shares no ``roi_id``, no image
  and coordinates, and no patient with the rows the run cross-validated.
  Otherwise :func:`evaluate` refuses with one line naming the file, the row
  and the field, before any model is loaded.
* The run directory is only read (through ``rundir.read_run`` and
  ``predict.predict``); the results go to ``out`` (default
  ``RUN/evaluation/``), written atomically, strict JSON.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .io import atomic_write, write_json

__all__ = ["evaluate", "heldout_rows", "check_never_in_folds", "EVALUATION_FILE"]

EVALUATION_FILE = "evaluation.json"
#: values of ``split`` that mark held-out rows (case-insensitive)
TEST_SPLITS = ("test",)
_COORDS = ["center_row", "center_col", "radius", "bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1"]


def _read_manifest(path: Path) -> pd.DataFrame:
    from .manifest import validate_manifest
    if not path.is_file():
        raise InputError("manifest not found", path=path)
    if path.suffix.lower() == ".csv":
        df = pd.read_csv(path, dtype={"roi_id": str, "patient_id": str})
    else:
        df = pd.read_parquet(path)
    return validate_manifest(df, path=path, require_both_classes=False)


def heldout_rows(df: pd.DataFrame, path: Path | str | None = None) -> pd.DataFrame:
    """The held-out rows of a manifest: ``split == test`` when it has a
    ``split`` column, else every row. Keeps a ``_row`` column (1-based data
    row in the file) for error messages."""
    df = df.reset_index(drop=True).assign(_row=lambda d: np.arange(1, len(d) + 1))
    if "split" in df.columns:
        sel = df["split"].astype(str).str.strip().str.lower().isin(TEST_SPLITS)
        if not sel.any():
            found = sorted(df["split"].astype(str).unique())[:5]
            raise InputError(f"no row with split in {list(TEST_SPLITS)} (found {found}); pass a manifest of "
                             "held-out rows", path=path, field="split")
        df = df[sel]
    if df["label"].nunique() < 2:
        raise InputError(f"the held-out rows have one class only (label {int(df['label'].iloc[0])}); an AUC needs both",
                         path=path, field="label")
    return df.reset_index(drop=True)


def _image_keys(df: pd.DataFrame) -> pd.Series:
    cols = [c for c in _COORDS if c in df.columns]
    parts = [df["image_path"].astype(str).map(lambda p: str(Path(p).resolve()))]
    parts += [df[c].astype(float).round(3).astype(str) for c in cols]
    key = parts[0]
    for p in parts[1:]:
        key = key + "|" + p
    return key


def check_never_in_folds(held: pd.DataFrame, folds: pd.DataFrame, path=None) -> None:
    """Raise :class:`InputError` (one line) when a held-out row was in a fold.

    Checks, in order: the same ``roi_id``; the same image with the same
    coordinates; the same patient. ``held`` may carry ``_row`` (the file's
    1-based data row) for the message.
    """
    def fail(i, field, what):
        r = held.iloc[i]
        raise InputError(f"held-out roi '{r['roi_id']}' {what} was in the run's cross-validation folds; "
                         "evaluate only on rows no fold ever saw", path=path,
                         row=int(r["_row"]) if "_row" in held.columns else i + 1, field=field)

    ids = set(folds["roi_id"].astype(str))
    hit = np.flatnonzero(held["roi_id"].astype(str).isin(ids).to_numpy())
    if hit.size:
        fail(hit[0], "roi_id", "(this roi_id)")
    cols = [c for c in _COORDS if c in held.columns or c in folds.columns]
    h = held.reindex(columns=["image_path", *cols])
    f = folds.reindex(columns=["image_path", *cols])
    keys = set(_image_keys(f))
    hit = np.flatnonzero(_image_keys(h).isin(keys).to_numpy())
    if hit.size:
        fail(hit[0], "image_path", f"(image {Path(str(held['image_path'].iloc[hit[0]])).name}, same coordinates)")
    pats = set(folds["patient_id"].astype(str))
    hit = np.flatnonzero(held["patient_id"].astype(str).isin(pats).to_numpy())
    if hit.size:
        fail(hit[0], "patient_id", f"(patient '{held['patient_id'].iloc[hit[0]]}')")


def _block(y, p, groups, *, n_boot, seed, alpha) -> dict:
    from . import stats
    from .metrics import EPS
    d = pd.DataFrame({"label": y, "prob": p, "patient_id": groups,
                      "logit": np.log(np.clip(p, EPS, 1 - EPS)) - np.log1p(-np.clip(p, EPS, 1 - EPS))})
    auc = stats.patient_bootstrap(stats._auc_stat, d["label"].to_numpy(float), d["prob"].to_numpy(float),
                                  d["patient_id"].to_numpy(), n_boot=n_boot, seed=seed, alpha=alpha)
    return {"auc": auc["estimate"], "auc_ci": auc["ci"],
            "operating_points": stats.operating_points(d, n_boot=n_boot, seed=seed, alpha=alpha),
            "calibration": stats.calibration(d, n_boot=n_boot, seed=seed, alpha=alpha),
            "n_rois": int(len(d)), "n_patients": int(d["patient_id"].nunique()), "n_pos": int(d["label"].sum())}


def _gaps(held: dict, oof: dict) -> dict:
    out = {"auc": None if held["auc"] is None or oof.get("auc") is None else held["auc"] - oof["auc"]}
    for sec in ("operating_points", "calibration"):
        for k, v in (held.get(sec) or {}).items():
            o = (oof.get(sec) or {}).get(k)
            if isinstance(v, dict) and isinstance(o, dict) and v.get("estimate") is not None \
                    and o.get("estimate") is not None:
                out[k] = v["estimate"] - o["estimate"]
    return out


def evaluate(run_dir: str | Path, manifest: str | Path | None = None, *, out: str | Path | None = None,
             device: str = "cpu", n_boot: int = 2000, seed: int = 0, alpha: float = 0.05,
             predict_fn=None, store: str | Path | None = None) -> dict:
    """Evaluate a finished run's fold ensemble on held-out rows.

    Parameters
    ----------
    run_dir : a finished run directory.
    manifest : the manifest holding the held-out rows (``split == test``, or
        every row without a ``split`` column); default: the run's
        ``data.manifest``.
    out : folder for ``evaluation.json`` and ``heldout_predictions.csv``
        (default ``RUN/evaluation``).
    device : where the fold models run.
    n_boot, seed, alpha : the patient bootstrap of every CI.
    predict_fn : ``(run_dir, manifest_df, device) -> DataFrame(roi_id, prob,
        n_models)``; :func:`mammodecomp.predict.predict` by default (tests
        pass a stand-in).

    Returns
    -------
    dict (the content of ``evaluation.json``): ``heldout`` (AUC, operating
    points and calibration with CIs), ``oof`` (the run's ``summary.json``
    numbers), ``gap`` (held-out minus OOF, per measure), ``definition``,
    counts and paths.

    Notes
    -----
    The held-out score of a ROI is the mean probability of all the run's
    fold models (every repeat and fold): an ensemble, which the OOF headline
    (one model per ROI and repeat) is not; part of a gap can be the
    ensemble's gain. Raises :class:`InputError` when a held-out row shares
    its ``roi_id``, image and coordinates, or patient with the run's rows.
    """
    from .stats import jsonable
    from .rundir import read_run
    run = read_run(run_dir, store=store)
    if manifest is None:
        manifest = run.config.data.manifest
        if not manifest:
            raise InputError("the run has no data.manifest to take held-out rows from; pass --manifest",
                             path=run_dir)
    mpath = Path(manifest)
    held = heldout_rows(_read_manifest(mpath), mpath)
    check_never_in_folds(held, run.manifest, mpath)
    if predict_fn is None:
        from .predict import predict

        def predict_fn(r, df, dev):
            return predict(r, df, device=dev, store=store)
    pred = predict_fn(run.path, held.drop(columns="_row"), device)
    pr = pred.set_index(pred["roi_id"].astype(str))["prob"]
    p = pr.reindex(held["roi_id"].astype(str)).to_numpy(float)
    if not np.all(np.isfinite(p)):
        raise InputError("the fold ensemble returned no probability for some held-out rows", path=mpath)
    y = held["label"].to_numpy(int)
    h = _block(y, p, held["patient_id"].astype(str).to_numpy(), n_boot=n_boot, seed=seed, alpha=alpha)
    s = run.summary or {}
    oof = {"auc": s.get("auc"), "auc_ci": s.get("auc_ci"), "auc_definition": s.get("auc_definition"),
           "operating_points": s.get("operating_points"), "calibration": s.get("calibration"),
           "n_rois": s.get("n_rois")}
    n_models = int(pred["n_models"].iloc[0]) if "n_models" in pred.columns else None
    res = jsonable({
        "run": str(run.path.resolve()), "manifest": str(mpath.resolve()),
        "heldout_selection": "split == test" if "split" in held.columns else "every row of the manifest",
        "definition": (f"held-out: mean probability of the run's {n_models} fold models per ROI (an ensemble); "
                       "OOF: the run's headline (summary.json); gap = held-out - OOF; CIs: percentile "
                       f"patient bootstrap ({n_boot} draws)"),
        "n_models": n_models, "heldout": h, "oof": oof, "gap": _gaps(h, oof)})
    out = Path(out) if out is not None else run.path / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "heldout_predictions.csv", "w") as f:
        pd.DataFrame({"roi_id": held["roi_id"], "patient_id": held["patient_id"], "label": y, "prob": p}).to_csv(
            f, index=False, float_format="%.8g")
    write_json(out / EVALUATION_FILE, res)
    return res
