"""Statistics that respect the patient: clustered AUC comparisons, operating
points, calibration, subgroups and the run's one headline AUC.

:mod:`mammodecomp.metrics` computes single numbers on a split; this module
puts uncertainty on them with the *patient* as the unit, because a patient's
views (CC and MLO, left and right) share errors and are not independent.

================================  ===========================================
:func:`compare_aucs`              paired difference of two AUCs on the same
                                  ROIs: Obuchowski's clustered variance (or a
                                  paired patient bootstrap); DeLong only when
                                  every patient has one ROI
:func:`corrected_resampled_ttest` Nadeau and Bengio's corrected t-test over
                                  the folds of repeated CV
:func:`operating_points`          sensitivity at 90% specificity, specificity
                                  at 90% sensitivity, McClish partial AUC,
                                  Brier, with patient-bootstrap CIs
:func:`calibration`               slope and intercept of the logistic
                                  recalibration, ECE, scikit-learn's curve
:func:`subgroups`                 AUC per view, laterality, density, ...
:func:`headline_auc`              the run's one headline AUC
================================  ===========================================

Every statistic is a function ``stat(y, p, W) -> (B,)`` of one weight matrix
``W`` (B, n): row b holds how many times each ROI enters resample b (a
patient drawn c times gives each of its ROIs weight c). The point estimate is
the same function with ``W = 1``, so the estimate and its bootstrap are one
code path, vectorised over resamples.

Conventions as in :mod:`mammodecomp.metrics`: ``y`` 0/1 (1 = malignant),
``p`` the probability of class 1, higher is more suspicious.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy.special import expit, logit, ndtr, ndtri
from scipy.stats import t as t_dist

from .errors import InputError
from .metrics import _check_yp, _delong_components, _weighted_aucs, delong_cov
from .io import strict_json as jsonable   # one strict-JSON conversion for the package

__all__ = ["compare_aucs", "obuchowski_cov", "corrected_resampled_ttest", "compare_repeated_cv",
           "sens_at_spec", "spec_at_sens", "partial_auc", "calibration_fit", "calibration_slope",
           "calibration_intercept", "brier", "ece",
           "patient_bootstrap", "operating_points", "calibration", "subgroups", "headline_auc",
           "SUBGROUP_COLUMNS", "MIN_CLASS", "jsonable"]

#: a subgroup with fewer ROIs than this in either class is reported as too small
MIN_CLASS = 10
#: a column with more distinct values than this is not a grouping (a continuous measure)
MAX_LEVELS = 12
#: subgroup name -> manifest columns that may hold it (the first present is used)
SUBGROUP_COLUMNS = {"view": ["view"], "laterality": ["laterality"],
                    "density": ["breast_density", "density", "background_tissue"],
                    "abnormality type": ["lesion_type"], "source": ["source"], "split": ["split"]}
#: fixed operating points
SPEC_TARGET = 0.9
SENS_TARGET = 0.9
MAX_FPR = 0.2
ECE_BINS = 10
_TOL = 1e-9      # floating tolerance of "specificity >= 0.9" (10/100 is not exactly 1 - 0.9)
_CHUNK = 2_000_000


def _groups(groups, n: int) -> tuple[np.ndarray, int]:
    """Patient index per ROI (``numpy.unique`` order of the ids as strings) and the count."""
    if groups is None:
        return np.arange(n), n
    g = np.asarray(groups)
    if g.shape != (n,):
        raise InputError(f"groups has {g.size} values for {n} ROIs; expected one patient id per ROI")
    _, gidx = np.unique(g.astype(str), return_inverse=True)
    return gidx.ravel(), int(gidx.max()) + 1 if n else 0


# --------------------------------------------------------------------------- comparisons
def obuchowski_cov(y, scores, groups) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their covariance matrix for clustered data (Obuchowski 1997).

    Parameters
    ----------
    y : 0/1 labels, one per ROI.
    scores : (k, n) scores of k readers/models on the same ROIs.
    groups : the cluster (patient) of each ROI.

    Returns
    -------
    ``(aucs (k,), cov (k, k))``.

    Notes
    -----
    With ``V10(X_ij)`` the DeLong structural component of positive ROI j of
    patient i (the fraction of all negatives it outranks, ties one half),
    ``V10_i`` its sum over the patient's ``m_i`` positives, and ``V01_i``,
    ``n_i`` the same for negatives, M and N the totals, I10 (I01) the
    patients with a positive (negative) ROI and I all patients::

        S10 = I10 / ((I10 - 1) M) * sum_i (V10_i - m_i A)(V10_i - m_i A)'
        S01 = I01 / ((I01 - 1) N) * sum_i (V01_i - n_i A)(V01_i - n_i A)'
        S11 = I / (I - 1)         * sum_i (V10_i - m_i A)(V01_i - n_i A)'
        cov = S10 / M + S01 / N + (S11 + S11') / (M N)

    With one ROI per patient ``S11 = 0`` and this is DeLong's covariance
    exactly (tested). Needs two patients with positives and two with
    negatives.
    """
    y, _ = _check_yp(y, np.asarray(scores)[0])
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    gidx, G = _groups(groups, y.size)
    pos = y == 1
    M, N = int(pos.sum()), int((~pos).sum())
    aucs, v10, v01 = _delong_components(y, s)
    m_i = np.bincount(gidx[pos], minlength=G).astype(float)
    n_i = np.bincount(gidx[~pos], minlength=G).astype(float)
    i10, i01 = int((m_i > 0).sum()), int((n_i > 0).sum())
    if i10 < 2 or i01 < 2:
        raise InputError(f"a clustered AUC variance needs 2 patients with each class; got {i10} with "
                         f"positives and {i01} with negatives")
    A = np.stack([np.bincount(gidx[pos], weights=v, minlength=G) for v in v10]) - m_i * aucs[:, None]
    B = np.stack([np.bincount(gidx[~pos], weights=v, minlength=G) for v in v01]) - n_i * aucs[:, None]
    s10 = i10 / ((i10 - 1) * M) * (A @ A.T)
    s01 = i01 / ((i01 - 1) * N) * (B @ B.T)
    s11 = G / (G - 1) * (A @ B.T)
    return aucs, s10 / M + s01 / N + (s11 + s11.T) / (M * N)


def _z_result(a1, a2, se, alpha) -> dict:
    diff = float(a1 - a2)
    if se > 0 and math.isfinite(se):
        z = diff / se
        p = float(2 * ndtr(-abs(z)))
    else:
        z, p = 0.0, 1.0
    h = float(ndtri(1 - alpha / 2)) * se
    return {"auc1": float(a1), "auc2": float(a2), "diff": diff, "se": float(se), "ci": (diff - h, diff + h),
            "z": float(z), "p": p}


def compare_aucs(y, p1, p2, groups=None, *, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05,
                 method: str = "auto") -> dict:
    """Paired comparison of two AUCs on the same ROIs, with the patient as the unit.

    Parameters
    ----------
    y : 0/1 labels, one per ROI.
    p1, p2 : the two arms' scores on the same ROIs (any monotone scale).
    groups : patient id per ROI; None means every ROI is its own patient.
    n_boot, seed : resamples and seed of the paired patient bootstrap
        (``method="bootstrap"`` only; the other tests are analytical).
    alpha : 1 - confidence level of the CI of the difference.
    method : ``"auto"`` (DeLong when every patient has one ROI, else
        Obuchowski), ``"obuchowski"``, ``"bootstrap"`` or ``"delong"``.

    Returns
    -------
    dict ``auc1, auc2, diff (auc1 - auc2), se, ci (lo, hi), z, p`` (two-sided),
    ``test`` (``"delong"``, ``"obuchowski"`` or ``"patient-bootstrap"``),
    ``n`` (ROIs), ``n_patients``, ``max_rois_per_patient``, ``alpha``.

    Notes
    -----
    * ``"obuchowski"``: the variance of the difference is
      ``c'Cc`` with C from :func:`obuchowski_cov` and ``c = (1, -1)``; z-test
      and normal CI. Deterministic.
    * ``"patient-bootstrap"``: patients are drawn with replacement (as in
      :func:`~mammodecomp.metrics.bootstrap_auc_ci`, same draws for a seed),
      both AUCs are recomputed on the same draw, and the standard deviation
      of the resampled differences is the standard error (z-test, normal
      CI). Draws without one of the classes are dropped.
    * ``"delong"`` counts each ROI as independent: with several ROIs per
      patient it is anti-conservative (the simulation in
      tests/test_stats.py measures by how much), and ``method="delong"``
      on clustered ROIs warns.
    * ``test`` always names what was computed; a p-value is never reported
      without it.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 100); pid = np.arange(200) // 2
    >>> r = compare_aucs(y, y + rng.normal(0, 1, 200), y + rng.normal(0, 1, 200), pid)
    >>> r["test"], bool(r["ci"][0] < r["diff"] < r["ci"][1])
    ('obuchowski', True)
    >>> compare_aucs(y, y + rng.normal(0, 1, 200), y + rng.normal(0, 1, 200))["test"]
    'delong'
    """
    y, a = _check_yp(y, p1, "p1")
    _, b = _check_yp(y, p2, "p2")
    if not 0 < alpha < 1:
        raise InputError(f"alpha={alpha!r}; expected a number in (0, 1)")
    if method not in ("auto", "obuchowski", "bootstrap", "delong"):
        raise InputError(f"method={method!r}; expected 'auto', 'obuchowski', 'bootstrap' or 'delong'")
    gidx, G = _groups(groups, y.size)
    sizes = np.bincount(gidx, minlength=G)
    clustered = bool(sizes.max() > 1)
    if method == "auto":
        method = "obuchowski" if clustered else "delong"
    info = {"n": int(y.size), "n_patients": G, "max_rois_per_patient": int(sizes.max()), "alpha": float(alpha)}
    if method == "delong":
        if clustered:
            warnings.warn("DeLong's test on ROIs of which several share a patient treats them as independent "
                          "(anti-conservative); use method='obuchowski'", UserWarning, stacklevel=2)
        aucs, cov = delong_cov(y, a, b)
        var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
        return {**_z_result(aucs[0], aucs[1], math.sqrt(max(var, 0.0)), alpha), "test": "delong", **info}
    if method == "obuchowski":
        aucs, cov = obuchowski_cov(y, np.stack([a, b]), gidx)
        var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
        return {**_z_result(aucs[0], aucs[1], math.sqrt(max(var, 0.0)), alpha), "test": "obuchowski", **info}
    if int(n_boot) < 2:
        raise InputError(f"n_boot={n_boot!r}; expected an integer >= 2")
    rng = np.random.default_rng(seed)
    d = np.empty(int(n_boot))
    chunk = max(1, _CHUNK // max(y.size, 1))
    for s in range(0, int(n_boot), chunk):
        nb = min(chunk, int(n_boot) - s)
        W = rng.multinomial(G, np.full(G, 1.0 / G), size=nb).astype(np.float64)[:, gidx]
        d[s:s + nb] = _weighted_aucs(y, a, W) - _weighted_aucs(y, b, W)
    d = d[np.isfinite(d)]
    if d.size < 2:
        raise InputError("every bootstrap draw lacked a class; too few patients for a bootstrap")
    a1, a2 = _weighted_aucs(y, a, np.ones((1, y.size)))[0], _weighted_aucs(y, b, np.ones((1, y.size)))[0]
    return {**_z_result(a1, a2, float(np.std(d, ddof=1)), alpha), "test": "patient-bootstrap",
            "n_boot": int(d.size), **info}


def corrected_resampled_ttest(diffs, n_train, n_test, alpha: float = 0.05) -> dict:
    """Nadeau and Bengio's (2003) corrected resampled t-test over CV folds.

    Parameters
    ----------
    diffs : the per-fold differences (arm A - arm B) of every repeat and fold
        (J = repeats x folds values), both arms on the same folds.
    n_train, n_test : training and test sizes of a fold (means if they vary).
    alpha : 1 - confidence level.

    Returns
    -------
    dict ``mean, se, t, df, p, ci, n_folds, test="nadeau-bengio"``.

    Notes
    -----
    The folds' training sets overlap, so the J differences are correlated
    and the naive variance ``s^2 / J`` is too small. The corrected variance
    is ``(1/J + n_test/n_train) s^2`` with ``t ~ t(J - 1)``.

    Examples
    --------
    >>> r = corrected_resampled_ttest([0.02, 0.01, 0.03, 0.0, 0.02], 80, 20)
    >>> r["test"], round(r["mean"], 3), r["df"]
    ('nadeau-bengio', 0.016, 4)
    """
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    J = d.size
    if J < 2:
        raise InputError(f"a corrected resampled t-test needs 2 folds or more; got {J}")
    if not (n_train > 0 and n_test > 0):
        raise InputError(f"n_train={n_train!r}, n_test={n_test!r}; expected positive sizes")
    m = float(d.mean())
    se = math.sqrt((1.0 / J + float(n_test) / float(n_train)) * float(np.var(d, ddof=1)))
    if se > 0:
        t = m / se
        p = float(2 * t_dist.sf(abs(t), J - 1))
    else:
        t, p = 0.0, 1.0
    h = float(t_dist.ppf(1 - alpha / 2, J - 1)) * se
    return {"mean": m, "se": se, "t": float(t), "df": J - 1, "p": p, "ci": (m - h, m + h), "n_folds": J,
            "test": "nadeau-bengio"}


def compare_repeated_cv(oof_a: pd.DataFrame, oof_b: pd.DataFrame, n_total: int | None = None,
                        alpha: float = 0.05) -> dict | None:
    """Corrected resampled t-test of two runs' per-fold AUCs on the same folds.

    Parameters
    ----------
    oof_a, oof_b : out-of-fold tables (``roi_id, label, repeat, fold, prob``).
    n_total : ROIs in the cross-validation (default: the ROIs tested in a
        repeat); a fold trains on ``n_total - n_test``.

    Returns
    -------
    :func:`corrected_resampled_ttest`'s dict plus ``fold_diffs``, or None when
    the runs do not share their (repeat, fold, roi) assignment or have fewer
    than 2 folds with both classes.
    """
    cols = ["repeat", "fold", "roi_id"]
    a = oof_a.assign(roi_id=oof_a["roi_id"].astype(str))
    b = oof_b.assign(roi_id=oof_b["roi_id"].astype(str))
    ka = a[cols].sort_values(cols).reset_index(drop=True)
    kb = b[cols].sort_values(cols).reset_index(drop=True)
    if len(ka) != len(kb) or not ka.equals(kb):
        return None
    j = a.merge(b[cols + ["prob"]], on=cols, suffixes=("_a", "_b"))
    from .metrics import auc_score
    diffs, sizes = [], []
    for _, g in j.groupby(["repeat", "fold"], sort=True):
        if g["label"].nunique() < 2:
            continue
        yy = g["label"].to_numpy()
        diffs.append(auc_score(yy, g["prob_a"].to_numpy(float)) - auc_score(yy, g["prob_b"].to_numpy(float)))
        sizes.append(len(g))
    if len(diffs) < 2:
        return None
    n_test = float(np.mean(sizes))
    if n_total is None:
        n_total = int(j.groupby("repeat")["roi_id"].nunique().max())
    out = corrected_resampled_ttest(diffs, max(n_total - n_test, 1.0), n_test, alpha)
    out["fold_diffs"] = [float(v) for v in diffs]
    return out


# --------------------------------------------------------------------------- weighted statistics
def _roc_points(y: np.ndarray, p: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted ROC curves (B, T+1) from (0, 0), one point per distinct score
    (scikit-learn's ``roc_curve`` points before dropping collinear ones)."""
    order = np.argsort(-p, kind="mergesort")
    ps, ys, Ws = p[order], y[order], W[:, order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    tp = np.cumsum(np.add.reduceat(Ws * ys, starts, axis=1), axis=1)
    fp = np.cumsum(np.add.reduceat(Ws * (1 - ys), starts, axis=1), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tp / tp[:, -1:]
        fpr = fp / fp[:, -1:]
    z = np.zeros((W.shape[0], 1))
    return np.concatenate([z, fpr], 1), np.concatenate([z, tpr], 1)


def sens_at_spec(y, p, W=None, spec: float = SPEC_TARGET) -> np.ndarray:
    """Highest sensitivity among thresholds with specificity >= ``spec``.

    The empirical ROC, no interpolation: ``max(tpr[fpr <= 1 - spec])`` on
    scikit-learn's ``roc_curve`` (tested). ``W``: (B, n) weights (default one
    row of ones); returns (B,).
    """
    y, p, W = _yw(y, p, W)
    fpr, tpr = _roc_points(y, p, W)
    return np.where(fpr <= 1 - spec + _TOL, tpr, -np.inf).max(1)


def spec_at_sens(y, p, W=None, sens: float = SENS_TARGET) -> np.ndarray:
    """Highest specificity among thresholds with sensitivity >= ``sens``
    (``max(1 - fpr[tpr >= sens])`` on the empirical ROC); (B,)."""
    y, p, W = _yw(y, p, W)
    fpr, tpr = _roc_points(y, p, W)
    return np.where(tpr >= sens - _TOL, 1 - fpr, -np.inf).max(1)


def partial_auc(y, p, W=None, max_fpr: float = MAX_FPR) -> np.ndarray:
    """McClish-standardised partial AUC over ``FPR <= max_fpr``; (B,).

    Equals ``sklearn.metrics.roc_auc_score(y, p, max_fpr=max_fpr)``: the area
    under the empirical ROC up to ``max_fpr`` (linearly interpolated there),
    mapped by ``0.5 * (1 + (A - m^2/2) / (m - m^2/2))`` so that chance is 0.5
    and a perfect ranking 1.
    """
    y, p, W = _yw(y, p, W)
    fpr, tpr = _roc_points(y, p, W)
    f0, f1, t0, t1 = fpr[:, :-1], fpr[:, 1:], tpr[:, :-1], tpr[:, 1:]
    f1c = np.minimum(f1, max_fpr)
    width = np.clip(f1c - np.minimum(f0, max_fpr), 0, None)
    step = np.where(f1 > f0, f1 - f0, 1.0)
    t1c = np.where(f1 > f0, t0 + (t1 - t0) * (f1c - f0) / step, t1)
    area = np.sum(width * (t0 + t1c) / 2, axis=1)
    lo, hi = max_fpr ** 2 / 2, max_fpr
    return 0.5 * (1 + (area - lo) / (hi - lo))


def brier(y, p, W=None) -> np.ndarray:
    """Weighted Brier score ``sum w (p - y)^2 / sum w``; (B,)."""
    y, p, W = _yw(y, p, W)
    return (W @ (p - y) ** 2) / W.sum(1)


def _bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    # scikit-learn's calibration_curve(strategy="uniform") binning
    return np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], p)


def ece(y, p, W=None, n_bins: int = ECE_BINS) -> np.ndarray:
    """Expected calibration error over ``n_bins`` equal-width bins; (B,).

    ``sum_b (n_b / n) |mean p - mean y|`` in bin b, with the bins of
    ``sklearn.calibration.calibration_curve(strategy="uniform")``.
    """
    y, p, W = _yw(y, p, W)
    E = np.zeros((p.size, n_bins))
    E[np.arange(p.size), _bins(p, n_bins)] = p - y
    return np.abs(W @ E).sum(1) / W.sum(1)


def _logistic(z, y, W, offset: bool, iters: int = 50, start=None):
    """Weighted logistic fits of y on z, vectorised over the rows of W.

    ``offset=False``: ``logit P = a + b z`` -> (a, b). ``offset=True``:
    ``logit P = a + z`` -> (a, nan). Newton-Raphson from ``start`` (default
    the fit with unit weights); rows that do not converge (separable data)
    give NaN.
    """
    B = W.shape[0]
    if start is None and B > 1:
        start = _logistic(z, y, np.ones((1, z.size)), offset, iters)
    a = np.zeros(B) if start is None or not np.isfinite(start[0][0]) else np.full(B, start[0][0])
    b = np.ones(B) if offset else (np.zeros(B) if start is None or not np.isfinite(start[1][0])
                                   else np.full(B, start[1][0]))
    ok = np.zeros(B, bool)
    live = np.ones(B, bool)
    for _ in range(iters):
        idx = np.flatnonzero(live & ~ok)
        if idx.size == 0:
            break
        Wi = W[idx]
        eta = a[idx, None] + (z if offset else b[idx, None] * z)
        mu = expit(eta)
        r = Wi * (y - mu)
        h = Wi * mu * (1 - mu)
        with np.errstate(invalid="ignore", divide="ignore"):
            if offset:
                da = r.sum(1) / h.sum(1)
                db = np.zeros_like(da)
            else:
                ga, gb = r.sum(1), r @ z
                haa, hab, hbb = h.sum(1), h @ z, h @ (z * z)
                det = haa * hbb - hab ** 2
                da = (hbb * ga - hab * gb) / det
                db = (haa * gb - hab * ga) / det
        a[idx] += da
        b[idx] += db
        ok[idx] = (np.abs(da) < 1e-9) & (np.abs(db) < 1e-9)
        live[idx] = np.isfinite(a[idx]) & np.isfinite(b[idx]) & (np.abs(b[idx]) < 1e4) & (np.abs(a[idx]) < 1e4)
    bad = ~ok | ~live
    a = np.where(bad, np.nan, a)
    b = np.full(B, np.nan) if offset else np.where(bad, np.nan, b)
    return a, b


def calibration_slope(y, z, W=None) -> np.ndarray:
    """b of ``logit P(y=1) = a + b z`` (ideal 1); (B,). See :func:`calibration_fit`."""
    y, z, W = _yw(y, z, W)
    return _logistic(z, y, W, offset=False)[1]


def calibration_intercept(y, z, W=None) -> np.ndarray:
    """a of ``logit P(y=1) = a + z`` (ideal 0); (B,). See :func:`calibration_fit`."""
    y, z, W = _yw(y, z, W)
    return _logistic(z, y, W, offset=True)[0]


def calibration_fit(y, z, W=None) -> dict:
    """Calibration slope and intercept of logits ``z`` (logistic recalibration).

    Returns
    -------
    dict of (B,) arrays: ``slope`` (b of ``logit P(y=1) = a + b z``, ideal 1),
    ``intercept`` (a of ``logit P(y=1) = a + z``, the calibration in the
    large with the slope fixed at 1, ideal 0).

    Notes
    -----
    Unpenalised maximum likelihood (equal to scikit-learn's
    ``LogisticRegression(penalty=None)`` for the slope, tested); NaN where
    the fit does not converge (classes separable by z).
    """
    return {"slope": calibration_slope(y, z, W), "intercept": calibration_intercept(y, z, W)}


def _yw(y, p, W):
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    W = np.ones((1, y.size)) if W is None else np.atleast_2d(np.asarray(W, dtype=np.float64))
    return y, p, W


# --------------------------------------------------------------------------- the patient bootstrap
def patient_bootstrap(stat, y, p, groups=None, repeats=None, *, n_boot: int = 2000, seed: int = 0,
                      alpha: float = 0.05) -> dict:
    """Estimate and percentile CI of a statistic, resampling patients.

    Parameters
    ----------
    stat : ``stat(y, p, W) -> (B,)`` vectorised over the rows of W.
    y, p : one value per row of the out-of-fold table.
    groups : patient id per row (None: each row its own patient).
    repeats : CV repeat per row (None: one repeat). The statistic is
        computed on each repeat's rows and averaged over repeats.
    n_boot, seed, alpha : resamples, ``numpy.random.default_rng`` seed and
        1 - confidence level.

    Returns
    -------
    dict ``estimate, ci [lo, hi], per_repeat [..], sd_repeats, n_boot``
    (resamples kept; those where the statistic is undefined are dropped).

    Notes
    -----
    One draw of patients serves every repeat (a patient's rows of all
    repeats enter together). The draws are those of
    :func:`~mammodecomp.metrics.bootstrap_auc_ci` for the same seed and row
    count, so with one repeat and the AUC as statistic the CI is the same
    number.
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    gidx, G = _groups(groups, y.size)
    rep = np.zeros(y.size, int) if repeats is None else pd.factorize(np.asarray(repeats), sort=True)[0]
    parts = [np.flatnonzero(rep == r) for r in range(int(rep.max()) + 1)]
    per = [float(stat(y[i], p[i], np.ones((1, i.size)))[0]) for i in parts]
    est = float(np.mean(per)) if all(np.isfinite(per)) else float("nan")
    rng = np.random.default_rng(seed)
    samples = np.empty(int(n_boot))
    chunk = max(1, _CHUNK // max(y.size, 1))
    for s in range(0, int(n_boot), chunk):
        b = min(chunk, int(n_boot) - s)
        counts = rng.multinomial(G, np.full(G, 1.0 / G), size=b).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            samples[s:s + b] = np.mean([stat(y[i], p[i], counts[:, gidx[i]]) for i in parts], axis=0)
    ok = np.isfinite(samples)
    lo = hi = float("nan")
    if ok.sum() >= 2:
        lo, hi = (float(v) for v in np.quantile(samples[ok], [alpha / 2, 1 - alpha / 2]))
    sd = float(np.std(per, ddof=1)) if len(per) > 1 else None
    return {"estimate": est, "ci": [lo, hi], "per_repeat": per, "sd_repeats": sd, "n_boot": int(ok.sum())}


def _auc_stat(y, p, W):
    return _weighted_aucs(y, p, W)


def _finite_auc(y, p, W):
    # sens/spec/pAUC are undefined without both classes in a draw
    n1 = W @ y
    n0 = W @ (1 - y)
    return (n1 > 0) & (n0 > 0)


def _guard(fn):
    def g(y, p, W):
        out = fn(y, p, W)
        return np.where(_finite_auc(y, p, W), out, np.nan)
    return g


def _table(oof: pd.DataFrame):
    y = oof["label"].to_numpy(dtype=float)
    prob = np.clip(oof["prob"].to_numpy(dtype=float), 0.0, 1.0)
    z = oof["logit"].to_numpy(dtype=float) if "logit" in oof.columns else logit(np.clip(prob, 1e-12, 1 - 1e-12))
    rep = oof["repeat"].to_numpy() if "repeat" in oof.columns else None
    return y, prob, z, oof["patient_id"].astype(str).to_numpy(), rep


def operating_points(oof: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Operating points of an out-of-fold table with patient-bootstrap CIs.

    Parameters
    ----------
    oof : ``label, prob, patient_id`` (and ``repeat``) per row.

    Returns
    -------
    JSON-ready dict: ``sens_at_90_spec``, ``spec_at_90_sens``, ``pauc_fpr_0.2``
    (McClish), ``brier``, each ``{"estimate", "ci", "per_repeat",
    "sd_repeats"}``, plus ``definition``.

    Notes
    -----
    Each statistic is computed on each repeat's pooled out-of-fold rows and
    averaged over repeats (the headline's definition); the CI resamples
    patients. Thresholds are chosen on the pooled OOF scores themselves
    (what the operating point *could* be), not carried from a validation
    split.
    """
    y, prob, _, g, rep = _table(oof)
    stats = {"sens_at_90_spec": _guard(lambda y_, p_, W: sens_at_spec(y_, p_, W, SPEC_TARGET)),
             "spec_at_90_sens": _guard(lambda y_, p_, W: spec_at_sens(y_, p_, W, SENS_TARGET)),
             f"pauc_fpr_{MAX_FPR:g}": _guard(lambda y_, p_, W: partial_auc(y_, p_, W, MAX_FPR)),
             "brier": brier}
    out = {k: patient_bootstrap(f, y, prob, g, rep, n_boot=n_boot, seed=seed, alpha=alpha)
           for k, f in stats.items()}
    out["definition"] = ("per repeat on the pooled out-of-fold predictions, averaged over repeats; "
                         f"{int(100 * (1 - alpha))}% CI: percentile patient bootstrap ({n_boot} draws); "
                         f"partial AUC for FPR <= {MAX_FPR:g}, McClish-standardised (sklearn max_fpr)")
    return jsonable(out)


def calibration(oof: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05,
                n_bins: int = ECE_BINS) -> dict:
    """Calibration of the out-of-fold probabilities with patient-bootstrap CIs.

    Returns
    -------
    JSON-ready dict: ``slope``, ``intercept`` (logistic recalibration of the
    OOF logits, :func:`calibration_fit`), ``ece`` (:func:`ece`), each
    ``{"estimate", "ci", ...}``, and ``curve``: ``prob_true, prob_pred,
    count`` per non-empty bin from ``sklearn.calibration.calibration_curve``
    (uniform bins) on all rows pooled.
    """
    from sklearn.calibration import calibration_curve
    y, prob, z, g, rep = _table(oof)
    out = {"slope": patient_bootstrap(calibration_slope, y, z, g, rep, n_boot=n_boot, seed=seed, alpha=alpha),
           "intercept": patient_bootstrap(calibration_intercept, y, z, g, rep, n_boot=n_boot, seed=seed,
                                          alpha=alpha),
           "ece": patient_bootstrap(lambda y_, p_, W: ece(y_, p_, W, n_bins), y, prob, g, rep,
                                    n_boot=n_boot, seed=seed, alpha=alpha)}
    if len(np.unique(y)) == 2:
        pt, pp = calibration_curve(y, prob, n_bins=n_bins, strategy="uniform")
        counts = np.bincount(_bins(prob, n_bins), minlength=n_bins)
        out["curve"] = {"prob_true": pt, "prob_pred": pp, "count": counts[counts > 0], "n_bins": n_bins,
                        "strategy": "uniform"}
    out["definition"] = ("slope: b of logit P(y=1) = a + b * logit(p) (ideal 1); intercept: a of "
                         "logit P(y=1) = a + logit(p) (calibration in the large, ideal 0); ECE over "
                         f"{n_bins} equal-width bins; per repeat, averaged over repeats; percentile patient "
                         "bootstrap CIs")
    return jsonable(out)


def subgroups(oof: pd.DataFrame, manifest: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0,
              alpha: float = 0.05, min_class: int = MIN_CLASS) -> dict:
    """AUC with a patient-bootstrap CI per subgroup of the manifest's columns.

    Parameters
    ----------
    oof : out-of-fold table (``roi_id, label, prob, patient_id, repeat``).
    manifest : the run's manifest; the columns of :data:`SUBGROUP_COLUMNS`
        that it has with two values or more are used (one with more than
        :data:`MAX_LEVELS` values is a measure, not a grouping: listed with
        ``skipped`` and no levels).
    min_class : a level with fewer ROIs than this in either class is
        ``{"too_small": true}`` with its counts and no AUC.

    Returns
    -------
    JSON-ready ``{name: {"column", "levels": [{"level", "n", "n_pos", "n_neg",
    "auc", "ci", "too_small"}]}}``; ``{}`` when no column applies.
    """
    m = manifest.assign(roi_id=manifest["roi_id"].astype(str)).set_index("roi_id")
    ids = oof["roi_id"].astype(str)
    y, prob, _, g, rep = _table(oof)
    out = {}
    for name, cands in SUBGROUP_COLUMNS.items():
        col = next((c for c in cands if c in m.columns), None)
        if col is None:
            continue
        vals = m[col].reindex(ids).to_numpy()
        present = pd.notna(vals)
        levels = sorted({str(v) for v in vals[present]})
        if len(levels) > MAX_LEVELS:
            out[name] = {"column": col, "levels": [], "skipped": f"{len(levels)} distinct values: not categorical"}
            continue
        if len(levels) < 2:
            continue
        rows = []
        sv = np.array([str(v) if ok else "" for v, ok in zip(vals, present)])
        for lev in levels:
            i = np.flatnonzero(present & (sv == lev))
            uniq = pd.DataFrame({"r": ids.to_numpy()[i], "y": y[i]}).drop_duplicates("r")
            npos, nneg = int(uniq["y"].sum()), int((uniq["y"] == 0).sum())
            row = {"level": lev, "n": int(len(uniq)), "n_pos": npos, "n_neg": nneg,
                   "n_patients": int(len(set(g[i]))), "auc": None, "ci": None, "too_small": False}
            if npos < min_class or nneg < min_class:
                row["too_small"] = True
            else:
                r = patient_bootstrap(_auc_stat, y[i], prob[i], g[i], None if rep is None else rep[i],
                                      n_boot=n_boot, seed=seed, alpha=alpha)
                row.update(auc=r["estimate"], ci=r["ci"])
            rows.append(row)
        out[name] = {"column": col, "levels": rows}
    return jsonable(out)


def headline_auc(oof: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """The run's one headline AUC, and the repeat-averaged (ensemble) AUC beside it.

    Returns
    -------
    dict ``auc`` (the mean over repeats of each repeat's pooled out-of-fold
    AUC), ``auc_ci`` (percentile patient bootstrap of that mean),
    ``repeat_aucs``, ``auc_sd_repeats`` (SD over repeats; None with one),
    ``definition``; with several repeats also ``ensemble_auc`` and
    ``ensemble_auc_ci``: the AUC of each ROI's probability averaged over
    repeats (an ensemble, labelled as such wherever it appears).

    Notes
    -----
    With one repeat the headline is the pooled OOF AUC and its CI is
    :func:`~mammodecomp.metrics.bootstrap_auc_ci` of the same seed exactly.
    """
    y, prob, _, g, rep = _table(oof)
    r = patient_bootstrap(_auc_stat, y, prob, g, rep, n_boot=n_boot, seed=seed, alpha=alpha)
    k = len(r["per_repeat"])
    out = {"auc": r["estimate"], "auc_ci": r["ci"], "repeat_aucs": r["per_repeat"],
           "auc_sd_repeats": r["sd_repeats"], "n_repeats": k,
           "definition": ("pooled out-of-fold AUC" if k == 1 else
                          f"mean over {k} repeats of each repeat's pooled out-of-fold AUC"
                          ) + f"; {int(round(100 * (1 - alpha)))}% CI: patient bootstrap"}
    if k > 1:
        e = oof.assign(roi_id=oof["roi_id"].astype(str)).groupby("roi_id", sort=True).agg(
            label=("label", "first"), prob=("prob", "mean"), patient_id=("patient_id", "first"))
        ey, ep = e["label"].to_numpy(float), e["prob"].to_numpy(float)
        er = patient_bootstrap(_auc_stat, ey, ep, e["patient_id"].astype(str).to_numpy(), None,
                               n_boot=n_boot, seed=seed, alpha=alpha)
        out.update(ensemble_auc=er["estimate"], ensemble_auc_ci=er["ci"],
                   ensemble_definition=f"AUC of each ROI's probability averaged over the {k} repeats "
                                       "(an ensemble of the repeats' models)")
    return out
