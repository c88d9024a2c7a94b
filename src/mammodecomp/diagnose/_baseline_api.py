"""The calls into :mod:`mammodecomp.baselines` used by the diagnosis, in one place.

Each function takes the run and returns plain numpy/dicts, so the evidence
modules do not depend on the exact shapes the baselines module returns.
Probabilities are aligned with the manifest rows (NaN for ROIs never tested),
averaged over repeats.
"""
from __future__ import annotations

import numpy as np


def _plan_rows(run):
    """The run's split plan restricted to ROIs in the manifest."""
    return run.plan[run.plan["roi_id"].astype(str).isin(run.row_of)]


def texture_features(images) -> np.ndarray:
    """Texture features per ROI: (N,H,W) or (N,K,H,W) -> (N,F) float array."""
    from .. import baselines
    out = baselines.texture_features(images)
    if isinstance(out, tuple):
        out = out[0]
    return np.asarray(getattr(out, "values", out), dtype=np.float64)


def oof_probs(X: np.ndarray, run, seed: int = 0) -> np.ndarray:
    """Out-of-fold probabilities of the logistic-regression baseline on *X*
    with the run's folds, one per manifest row (mean over repeats)."""
    from .. import baselines
    out = baselines.fit_predict_oof(X, run.manifest, _plan_rows(run))
    return _align(out, run)


def _align(out, run) -> np.ndarray:
    import pandas as pd
    n = len(run.manifest)
    if isinstance(out, pd.DataFrame):
        col = "prob" if "prob" in out.columns else out.columns[-1]
        g = out.groupby(out["roi_id"].astype(str))[col].mean()
        return run.manifest["roi_id"].map(g).astype(float).to_numpy()
    arr = np.asarray(out, dtype=np.float64)
    if arr.ndim == 2:              # (repeats, N)
        arr = np.nanmean(arr, axis=0)
    if arr.shape != (n,):
        raise ValueError(f"baselines.fit_predict_oof returned shape {arr.shape}; expected ({n},)")
    return arr


def shortcut_aucs(run, plan=None) -> dict:
    """Nuisance feature -> out-of-fold AUC on the run's folds (or *plan*)."""
    from .. import baselines
    plan = _plan_rows(run) if plan is None else plan
    # the run's manifest carries the ROI meta columns itself
    out = baselines.shortcut_aucs(None, run.manifest, plan, n_boot=200)
    return {str(k): float(v) for k, v in zip(out["feature"], out["auc"])}


def permutation_test(X: np.ndarray, run, n_permutations: int, seed: int, plan=None) -> dict:
    """Label-permutation test of the feature baseline on the run's folds (or
    *plan*): ``{"observed", "null" (list), "p"}``."""
    from .. import baselines
    plan = _plan_rows(run) if plan is None else plan
    out = baselines.permutation_test(X, run.manifest, plan, n_permutations=n_permutations, seed=seed)
    null = np.asarray(out["null_aucs"], dtype=float)
    return {"observed": float(out["observed_auc"]), "null": null.tolist(), "p": float(out["p_value"])}
