"""Metrics on a whole split, patient-level bootstrap CIs and DeLong's test.

Every metric here is computed once on the whole split (all ROIs of a fold, or
the pooled out-of-fold table), never averaged over mini-batches; the one
exception, :func:`batchwise_metrics`, exists to show how far the seed
question's Keras ``f1_m``/``recall_m``/``precision_m`` (per-batch values
averaged over batches) drift from the whole-split values.

Conventions: ``y`` holds 0/1 labels (1 = malignant, the positive class),
``p`` holds probabilities of class 1, and a ROI is called positive when
``p >= threshold``. AUC ties count one half (the Mann-Whitney statistic).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy.special import logit, ndtr, ndtri
from scipy.stats import rankdata
from sklearn.metrics import precision_recall_curve, roc_curve

from .errors import InputError

#: Keras ``K.epsilon()``; also the clip used by the cross-entropy loss
EPS = 1e-7


def _check_yp(y, p, name: str = "p") -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1:
        raise InputError(f"expected 1-D y and {name}, got shapes {y.shape} and {p.shape}")
    if y.shape != p.shape:
        raise InputError(f"y has {y.size} values but {name} has {p.size}; expected the same length")
    if y.size == 0:
        raise InputError("no values to score")
    try:
        yf = y.astype(np.float64)
    except (TypeError, ValueError):
        raise InputError("labels must be 0 or 1") from None
    if not np.all((yf == 0) | (yf == 1)):
        raise InputError(f"labels must be 0 or 1, found {sorted(set(np.unique(y).tolist()) - {0, 1})[:3]}")
    if not np.all(np.isfinite(p)):
        raise InputError(f"{name} has NaN or infinite values")
    return yf.astype(np.int64), p


def auc_score(y, p) -> float:
    """ROC AUC by the rank (Mann-Whitney) formula; NaN when one class is absent.

    Examples
    --------
    >>> auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> auc_score([0, 1], [0.5, 0.5])
    0.5
    """
    y, p = _check_yp(y, p)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(p)
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def binary_metrics(y, p, threshold: float = 0.5) -> dict:
    """Whole-split metrics of probabilities ``p`` against labels ``y``.

    Parameters
    ----------
    y : 0/1 labels.
    p : probabilities of class 1, in [0, 1].
    threshold : a ROI is predicted positive when ``p >= threshold``.

    Returns
    -------
    dict with ``auc, accuracy, balanced_accuracy, sensitivity, specificity,
    precision, f1, brier, loss`` plus ``n, n_pos, threshold``; plain floats.

    Notes
    -----
    ``loss`` is the mean binary cross-entropy with ``p`` clipped to
    ``[1e-7, 1 - 1e-7]`` (Keras' clip). Undefined values are NaN rather than
    0: ``auc``, ``balanced_accuracy`` with one class; ``sensitivity`` without
    positives; ``specificity`` without negatives; ``precision`` without
    predicted positives; ``f1 = 2TP / (2TP + FP + FN)`` when that denominator
    is 0.

    Examples
    --------
    >>> m = binary_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    >>> m["auc"], m["accuracy"], m["sensitivity"], m["specificity"], m["f1"]
    (0.75, 0.5, 0.5, 0.5, 0.5)
    """
    y, p = _check_yp(y, p)
    if np.any((p < 0) | (p > 1)):
        raise InputError("probabilities must lie in [0, 1]; pass sigmoid(logit), not logits")
    threshold = float(threshold)
    pred = p >= threshold
    pos = y == 1
    tp = int(np.sum(pred & pos))
    fp = int(np.sum(pred & ~pos))
    fn = int(np.sum(~pred & pos))
    tn = int(np.sum(~pred & ~pos))

    def div(a, b):
        return a / b if b else float("nan")

    sens = div(tp, tp + fn)
    spec = div(tn, tn + fp)
    pc = np.clip(p, EPS, 1 - EPS)
    loss = -np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))
    return {"auc": auc_score(y, p), "accuracy": (tp + tn) / y.size,
            "balanced_accuracy": (sens + spec) / 2.0, "sensitivity": sens, "specificity": spec,
            "precision": div(tp, tp + fp), "f1": div(2 * tp, 2 * tp + fp + fn),
            "brier": float(np.mean((p - y) ** 2)), "loss": float(loss),
            "n": int(y.size), "n_pos": int(pos.sum()), "threshold": threshold}


def choose_threshold(y, p, rule: str = "youden") -> float:
    """Pick a decision threshold on a validation split.

    Parameters
    ----------
    y, p : labels and probabilities of the validation split (never the test
        fold).
    rule : ``"youden"`` (maximise sensitivity + specificity - 1) or ``"f1"``
        (maximise F1).

    Returns
    -------
    float in [0, 1], for use as ``p >= threshold``.

    Warns
    -----
    UserWarning
        when ``y`` has one class only; 0.5 is returned.

    Notes
    -----
    The candidates are the observed scores; ties between candidates go to the
    highest threshold (sklearn's curve order), so the choice is deterministic.

    Examples
    --------
    >>> choose_threshold([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.8])
    0.6
    >>> choose_threshold([0, 0, 1, 1], [0.1, 0.7, 0.6, 0.8], rule="f1")
    0.6
    """
    y, p = _check_yp(y, p)
    if rule not in ("youden", "f1"):
        raise InputError(f"rule={rule!r}; expected 'youden' or 'f1'")
    if np.unique(y).size < 2:
        warnings.warn("threshold chosen on a split with one class only; using 0.5", UserWarning, stacklevel=2)
        return 0.5
    if rule == "youden":
        fpr, tpr, thr = roc_curve(y, p)
        t = thr[int(np.argmax(tpr - fpr))]
    else:
        prec, rec, thr = precision_recall_curve(y, p)
        f1 = np.where(prec[:-1] + rec[:-1] > 0, 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-300), 0)
        best = np.flatnonzero(f1 == f1.max())
        t = thr[best[-1]]  # highest threshold among ties
    return float(min(max(t, 0.0), 1.0))


def _weighted_aucs(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUC for each row of a weight matrix ``w`` (B, n), ties counting one half."""
    order = np.argsort(p, kind="mergesort")
    ps, ys, ws = p[order], y[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    wpos = np.add.reduceat(ws * (ys == 1), starts, axis=1)
    wneg = np.add.reduceat(ws * (ys == 0), starts, axis=1)
    below = np.cumsum(wneg, axis=1) - wneg
    num = np.sum(wpos * (below + 0.5 * wneg), axis=1)
    den = wpos.sum(1) * wneg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def bootstrap_auc_ci(y, p, groups=None, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05,
                     return_samples: bool = False):
    """Percentile bootstrap CI of the AUC, resampling patients.

    Parameters
    ----------
    y, p : labels and probabilities, one per ROI.
    groups : patient id per ROI (None: each ROI its own patient).
    n_boot : number of resamples.
    seed : seed of ``numpy.random.default_rng``.
    alpha : 1 - confidence level.
    return_samples : also return the array of resampled AUCs.

    Returns
    -------
    ``(lo, hi)``, or ``(lo, hi, samples)`` with ``return_samples``.

    Notes
    -----
    Resampling: the G distinct patients (``numpy.unique`` order of the ids as
    strings) are drawn
    with replacement, ``counts = default_rng(seed).multinomial(G, [1/G]*G,
    size=n_boot)``; every ROI of a patient drawn c times enters with weight c.
    Each resample's AUC is the weighted Mann-Whitney statistic, all resamples
    at once from one sort (O(n_boot * n) memory and time). Resamples without
    one of the classes are dropped (warned if more than 1%). Duplicating every
    ROI of every patient leaves the CI unchanged: the unit is the patient.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 100); p = rng.normal(y, 1.0) / 8 + 0.5
    >>> lo, hi = bootstrap_auc_ci(y, p, groups=np.arange(200) // 2, n_boot=500)
    >>> bool(lo < auc_score(y, p) < hi)
    True
    """
    y, p = _check_yp(y, p)
    if not 0 < alpha < 1:
        raise InputError(f"alpha={alpha!r}; expected a number in (0, 1)")
    if int(n_boot) < 1:
        raise InputError(f"n_boot={n_boot!r}; expected an integer >= 1")
    if groups is None:
        groups = np.arange(y.size)
    groups = np.asarray(groups)
    if groups.shape != y.shape:
        raise InputError(f"groups has {groups.size} values for {y.size} ROIs; expected one per ROI")
    _, gidx = np.unique(groups.astype(str), return_inverse=True)
    G = int(gidx.max()) + 1
    rng = np.random.default_rng(seed)
    samples = np.empty(int(n_boot))
    chunk = max(1, int(2_000_000 // max(y.size, 1)))
    for s in range(0, int(n_boot), chunk):
        b = min(chunk, int(n_boot) - s)
        counts = rng.multinomial(G, np.full(G, 1.0 / G), size=b).astype(np.float64)
        samples[s:s + b] = _weighted_aucs(y, p, counts[:, gidx])
    ok = np.isfinite(samples)
    if not ok.any():
        out = (float("nan"), float("nan"))
        return (*out, samples) if return_samples else out
    if (~ok).mean() > 0.01:
        warnings.warn(f"{int((~ok).sum())} of {n_boot} bootstrap resamples had one class only and were "
                      "dropped; the CI is unreliable", UserWarning, stacklevel=2)
    lo, hi = np.quantile(samples[ok], [alpha / 2, 1 - alpha / 2])
    out = (float(lo), float(hi))
    return (*out, samples) if return_samples else out


def _delong_components(y: np.ndarray, scores: np.ndarray):
    """Fast DeLong (Sun & Xu 2014): AUCs and structural components.

    ``scores`` is (k, n). Returns aucs (k,), v10 (k, m) for the m positives,
    v01 (k, q) for the q negatives.
    """
    pos = scores[:, y == 1]
    neg = scores[:, y == 0]
    m, q = pos.shape[1], neg.shape[1]
    tx = rankdata(pos, axis=1)
    ty = rankdata(neg, axis=1)
    tz = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    aucs = tz[:, :m].sum(axis=1) / m / q - (m + 1.0) / (2.0 * q)
    v10 = (tz[:, :m] - tx) / q
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return aucs, v10, v01


def delong_cov(y, *scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of one or more score vectors and DeLong's covariance matrix.

    Returns
    -------
    ``(aucs (k,), cov (k, k))`` with ``cov = S10 / m + S01 / n`` (DeLong et
    al. 1988), computed by the O(n log n) algorithm of Sun & Xu (2014).

    Examples
    --------
    >>> aucs, cov = delong_cov([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> float(aucs[0])
    0.75
    """
    if not scores:
        raise InputError("delong_cov needs at least one score vector")
    y, _ = _check_yp(y, scores[0])
    s = np.stack([_check_yp(y, si)[1] for si in scores])
    m, q = int(y.sum()), int((1 - y).sum())
    if m < 2 or q < 2:
        raise InputError(f"DeLong needs at least 2 ROIs of each class; got {m} positive, {q} negative")
    aucs, v10, v01 = _delong_components(y, s)
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / q
    return aucs, cov


def delong_test(y, p1, p2, alpha: float = 0.05) -> dict:
    """DeLong's test for two correlated AUCs on the same ROIs.

    Parameters
    ----------
    y : 0/1 labels.
    p1, p2 : scores of the two models on the same ROIs (any monotone scale).
    alpha : 1 - confidence level of the CI of the difference.

    Returns
    -------
    dict ``auc1, auc2, diff (auc1 - auc2), se, ci (lo, hi), z, p``
    (two-sided), plain floats.

    Notes
    -----
    The ROIs are treated as independent; with several ROIs per patient the
    variance is optimistic (use :func:`bootstrap_auc_ci` for patient-level
    uncertainty). When ``se == 0`` (identical rankings) ``z = 0`` and
    ``p = 1``.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> y = np.repeat([0, 1], 50)
    >>> r = delong_test(y, y + rng.normal(0, 0.5, 100), y + rng.normal(0, 3.0, 100))
    >>> r["diff"] > 0 and r["p"] < 0.05
    True
    """
    aucs, cov = delong_cov(y, p1, p2)
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    diff = float(aucs[0] - aucs[1])
    if se > 0:
        z = diff / se
        pval = float(2 * ndtr(-abs(z)))
    else:
        z, pval = 0.0, 1.0
    h = float(ndtri(1 - alpha / 2)) * se
    return {"auc1": float(aucs[0]), "auc2": float(aucs[1]), "diff": diff, "se": se,
            "ci": (diff - h, diff + h), "z": float(z), "p": pval}


def batchwise_metrics(y, p, batch_size: int = 32, threshold: float = 0.5) -> dict:
    """The seed question's Keras ``f1_m, recall_m, precision_m``, batch-averaged.

    Per batch of ``batch_size`` consecutive ROIs (the last one may be
    shorter), with rounded predictions ``pred = p > threshold``::

        recall    = TP / (positives + 1e-7)
        precision = TP / (predicted positives + 1e-7)
        f1        = 2 * P * R / (P + R + 1e-7)

    and each is averaged over batches with equal weight (Keras reports the
    mean of a metric function's per-batch values).

    Returns
    -------
    dict ``f1_m, recall_m, precision_m`` (batch means), ``f1, recall,
    precision`` (the same formulas on the whole split) and ``n_batches``.

    Notes
    -----
    With the default threshold ``p > 0.5`` equals Keras' ``K.round(p) == 1``
    (round half to even sends 0.5 to 0). A batch without positives scores
    recall 0 and f1 0, not "undefined", which drags the means down; the
    batch means depend on the order of ``y, p`` (Keras shuffles training
    batches each epoch; validation batches keep the data order).

    Examples
    --------
    >>> m = batchwise_metrics([1, 1, 0, 0, 0, 0], [0.9, 0.8, 0.1, 0.2, 0.3, 0.1], batch_size=2)
    >>> round(m["f1_m"], 4), round(m["f1"], 4)
    (0.3333, 1.0)
    """
    y, p = _check_yp(y, p)
    bs = int(batch_size)
    if bs < 1:
        raise InputError(f"batch_size={batch_size!r}; expected an integer >= 1")
    pred = (p > float(threshold)).astype(np.float64)
    yt = y.astype(np.float64)
    nb = -(-y.size // bs)
    idx = np.arange(y.size) // bs
    tp = np.bincount(idx, weights=yt * pred, minlength=nb)
    pp = np.bincount(idx, weights=pred, minlength=nb)
    ap = np.bincount(idx, weights=yt, minlength=nb)

    def prf(tp, pp, ap):
        r = tp / (ap + EPS)
        pr = tp / (pp + EPS)
        return pr, r, 2 * (pr * r) / (pr + r + EPS)

    pb, rb, fb = prf(tp, pp, ap)
    pw, rw, fw = prf(tp.sum(), pp.sum(), ap.sum())
    return {"f1_m": float(fb.mean()), "recall_m": float(rb.mean()), "precision_m": float(pb.mean()),
            "f1": float(fw), "recall": float(rw), "precision": float(pw), "n_batches": int(nb)}


OOF_REQUIRED = ["roi_id", "patient_id", "label", "repeat", "fold", "prob"]


def pooled_oof_summary(oof_df: pd.DataFrame, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Summarise an out-of-fold table: pooled AUC with a patient bootstrap CI.

    Parameters
    ----------
    oof_df : columns ``roi_id, patient_id, label, repeat, fold, prob``; each
        ROI at most once per repeat.
    n_boot, seed, alpha : passed to :func:`bootstrap_auc_ci`.

    Returns
    -------
    dict (JSON-ready) with

    - ``auc``: AUC of all rows pooled (all folds, all repeats), and
      ``auc_ci``: its patient-bootstrap CI (a patient's rows of every repeat
      are drawn together);
    - ``repeat_aucs``: the pooled AUC of each repeat, with ``repeat_auc_mean``
      and ``repeat_auc_sd``;
    - ``fold_aucs``: list of ``{repeat, fold, n, auc}``, with
      ``fold_auc_mean`` and ``fold_auc_sd`` (sample SD, folds with one class
      skipped);
    - ``metrics``: :func:`binary_metrics` of the pooled rows at 0.5;
    - counts ``n_rows, n_rois, n_patients, n_pos, n_repeats, n_folds``.

    Notes
    -----
    Pooling folds assumes their scores are on one scale; the fold mean/SD
    shows how much fold-to-fold spread there is. Undefined values are NaN.

    Examples
    --------
    >>> oof = pd.DataFrame({"roi_id": list("abcdef"), "patient_id": list("aabbcc"),
    ...                     "label": [0, 1, 0, 1, 0, 1], "repeat": 0, "fold": [0, 0, 1, 1, 2, 2],
    ...                     "prob": [0.2, 0.7, 0.4, 0.6, 0.65, 0.9]})
    >>> s = pooled_oof_summary(oof, n_boot=200)
    >>> s["auc"], s["fold_auc_mean"], s["n_patients"]
    (0.8888888888888888, 1.0, 3)
    """
    missing = [c for c in OOF_REQUIRED if c not in oof_df.columns]
    if missing:
        raise InputError(f"out-of-fold table lacks column(s) {missing}; expected {OOF_REQUIRED}")
    d = oof_df.assign(roi_id=oof_df["roi_id"].astype(str), patient_id=oof_df["patient_id"].astype(str))
    dup = d.duplicated(["repeat", "roi_id"])
    if dup.any():
        raise InputError(f"roi '{d['roi_id'][dup].iloc[0]}' appears twice in repeat "
                         f"{d['repeat'][dup].iloc[0]}; each ROI is tested once per repeat")
    y = d["label"].to_numpy()
    p = d["prob"].to_numpy(dtype=float)
    lo, hi = bootstrap_auc_ci(y, p, d["patient_id"].to_numpy(), n_boot=n_boot, seed=seed, alpha=alpha)
    reps = [auc_score(g["label"].to_numpy(), g["prob"].to_numpy(float)) for _, g in d.groupby("repeat", sort=True)]
    folds = [{"repeat": int(r), "fold": int(f), "n": int(len(g)),
              "auc": auc_score(g["label"].to_numpy(), g["prob"].to_numpy(float))}
             for (r, f), g in d.groupby(["repeat", "fold"], sort=True)]
    fa = np.array([f["auc"] for f in folds], dtype=float)
    fa = fa[np.isfinite(fa)]
    ra = np.array(reps, dtype=float)

    def sd(a):
        return float(np.std(a, ddof=1)) if a.size > 1 else float("nan")

    out = {"auc": auc_score(y, p), "auc_ci": [lo, hi], "alpha": float(alpha), "n_boot": int(n_boot),
            "repeat_aucs": [float(a) for a in reps],
            "repeat_auc_mean": float(np.nanmean(ra)) if np.isfinite(ra).any() else float("nan"),
            "repeat_auc_sd": sd(ra[np.isfinite(ra)]),
            "fold_aucs": folds, "fold_auc_mean": float(fa.mean()) if fa.size else float("nan"),
            "fold_auc_sd": sd(fa), "metrics": binary_metrics(y, np.clip(p, 0, 1), 0.5),
            "n_rows": int(len(d)), "n_rois": int(d["roi_id"].nunique()),
            "n_patients": int(d["patient_id"].nunique()), "n_pos": int(d.drop_duplicates("roi_id")["label"].sum()),
            "n_repeats": int(d["repeat"].nunique()), "n_folds": int(d["fold"].nunique())}
    les = lesion_level(d)
    if les is not None:
        ly, ls = les["label"].to_numpy(), les["score"].to_numpy(float)
        llo, lhi = bootstrap_auc_ci(ly, ls, les["patient_id"].to_numpy(), n_boot=n_boot, seed=seed, alpha=alpha)
        out["lesion"] = {"auc": auc_score(ly, ls), "auc_ci": [llo, lhi], "n_lesions": int(les["lesion_id"].nunique()),
                         "max_rois_per_lesion": int(les["n_rois"].max())}
    return out


def lesion_level(oof_df: pd.DataFrame) -> pd.DataFrame | None:
    """One score per lesion and repeat: the mean logit of its ROIs (its views), and their number.

    A lesion seen in several views (CC and MLO) is one finding; averaging the
    views' log-odds is the usual case-level fusion. Needs a ``lesion_id``
    column; returns ``None`` when there is none or when no lesion has more
    than one ROI (then the ROI-level AUC is already the lesion-level one).
    The views of a lesion are always in one test fold: a lesion belongs to
    one patient (checked by the manifest) and folds are grouped by patient.

    >>> oof = pd.DataFrame({"roi_id": list("abcd"), "patient_id": list("ppqq"), "lesion_id": list("xxyy"),
    ...                     "label": [1, 1, 0, 0], "repeat": 0, "fold": 0, "prob": [0.9, 0.3, 0.5, 0.2]})
    >>> lesion_level(oof)[["lesion_id", "label"]].to_dict("list")
    {'lesion_id': ['x', 'y'], 'label': [1, 0]}
    """
    if "lesion_id" not in oof_df.columns or oof_df["lesion_id"].isna().any():
        return None
    d = oof_df.assign(lesion_id=oof_df["lesion_id"].astype(str))
    if not d.duplicated(["repeat", "lesion_id"]).any():
        return None
    if "logit" in d.columns:
        score = d["logit"].to_numpy(float)
    else:
        score = logit(np.clip(d["prob"].to_numpy(float), 1e-12, 1 - 1e-12))
    g = d.assign(score=score).groupby(["repeat", "lesion_id"], sort=True)
    if (g["label"].nunique() > 1).any():
        bad = g["label"].nunique()
        raise InputError(f"lesion '{bad[bad > 1].index[0][1]}' has ROIs labelled 0 and 1; "
                         "the views of one lesion share its label")
    return g.agg(patient_id=("patient_id", "first"), label=("label", "first"),
                 score=("score", "mean"), n_rois=("score", "size")).reset_index()


# ---------------------------------------------------------------------------------------------------
# compare_aucs: interim; replaced by the issue-16 implementation at merge
# (issue 19's `mammodecomp runs compare` needs its signature and output keys only)
def compare_aucs(y, p1, p2, groups=None, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Paired AUC comparison on the same ROIs, resampling patients (interim).

    Returns dict ``auc1, auc2, diff (auc1 - auc2), ci (percentile bootstrap
    of diff), p (two-sided: twice the smaller share of resampled differences
    on either side of 0), test``.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> y = np.repeat([0, 1], 50)
    >>> r = compare_aucs(y, y + rng.normal(0, 0.5, 100), y + rng.normal(0, 3.0, 100),
    ...                  groups=np.arange(100) // 2, n_boot=300)
    >>> r["diff"] > 0 and r["ci"][0] > 0 and r["p"] < 0.05
    True
    """
    y, p1 = _check_yp(y, p1, "p1")
    _, p2 = _check_yp(y, p2, "p2")
    groups = np.arange(y.size) if groups is None else np.asarray(groups)
    if groups.shape != y.shape:
        raise InputError(f"groups has {groups.size} values for {y.size} ROIs; expected one per ROI")
    _, gidx = np.unique(groups.astype(str), return_inverse=True)
    G = int(gidx.max()) + 1
    rng = np.random.default_rng(seed)
    d = np.empty(int(n_boot))
    chunk = max(1, int(1_000_000 // max(y.size, 1)))
    for s in range(0, int(n_boot), chunk):
        b = min(chunk, int(n_boot) - s)
        w = rng.multinomial(G, np.full(G, 1.0 / G), size=b).astype(np.float64)[:, gidx]
        d[s:s + b] = _weighted_aucs(y, p1, w) - _weighted_aucs(y, p2, w)
    d = d[np.isfinite(d)]
    a1, a2 = auc_score(y, p1), auc_score(y, p2)
    if d.size == 0:
        return {"auc1": a1, "auc2": a2, "diff": a1 - a2, "ci": (float("nan"), float("nan")), "p": float("nan"),
                "test": "patient bootstrap (interim)"}
    lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2 * min(float((d <= 0).mean()), float((d >= 0).mean())))
    return {"auc1": a1, "auc2": a2, "diff": a1 - a2, "ci": (float(lo), float(hi)), "p": p,
            "test": f"paired patient bootstrap, {d.size} resamples (interim)"}
