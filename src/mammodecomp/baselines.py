"""Cheap baselines on the same folds as the CNN, for the diagnosis.

Three questions a CNN result must survive:

1. Do hand-made texture features of the same channels (:func:`texture_features`)
   fed to an L2 logistic regression (:func:`fit_predict_oof`) do as well? If
   so, the CNN's capacity buys nothing.
2. Does one nuisance variable alone (lesion size, crop scale, brightness,
   background, view, source: :func:`shortcut_aucs`) predict the label? If so,
   "the model only learned size or brightness" is on the table.
3. Is the feature baseline better than chance at all
   (:func:`permutation_test`, labels permuted between patients)?

All three use the split plan of :mod:`mammodecomp.cv` and return the trainer's
out-of-fold format (``roi_id, patient_id, label, repeat, fold, prob,
logit``), so their numbers compare one to one with the CNN's.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.special import expit
from scipy.stats import kurtosis, skew
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
from skimage.transform import resize
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from .errors import InputError
from .metrics import auc_score, bootstrap_auc_ci

PERCENTILES = (5, 25, 50, 75, 95)
GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation")
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
#: manifest / ROI-meta columns tried by :func:`shortcut_aucs`, when present
SHORTCUT_COLUMNS = ("radius", "bbox_side", "crop_side_px", "scale", "mean_intensity",
                    "background_fraction", "border_fraction", "pixel_spacing_mm", "image_height",
                    "image_width", "view", "laterality", "source")
OOF_COLUMNS = ["roi_id", "patient_id", "label", "repeat", "fold", "prob", "logit"]
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)


def _downsample(x: np.ndarray, size: int) -> np.ndarray:
    """(M, H, W) -> (M, h, w) with h = min(size, H): block mean, else anti-aliased resize."""
    M, H, W = x.shape
    h, w = min(size, H), min(size, W)
    if (h, w) == (H, W):
        return x
    if H % h == 0 and W % w == 0:
        return x.reshape(M, h, H // h, w, W // w).mean(axis=(2, 4))
    return resize(x, (M, h, w), order=1, anti_aliasing=True, preserve_range=True).astype(np.float64)


def _quantise(x: np.ndarray, levels: int) -> np.ndarray:
    """Per image: clip to its 1st-99th percentiles, map to 0..levels-1 (uint8)."""
    lo, hi = np.percentile(x, [1, 99], axis=(1, 2), keepdims=True)
    span = hi - lo
    z = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.0)
    return np.clip(np.floor(z * levels), 0, levels - 1).astype(np.uint8)


def texture_features(x, size: int = 64, levels: int = 32, distances=(1, 2), angles=GLCM_ANGLES,
                     channel_names=None, index=None) -> pd.DataFrame:
    """Hand-made features of every channel of every ROI.

    Parameters
    ----------
    x : components (N, K, H, W) or ROIs (N, H, W), any float dtype.
    size : GLCM and LBP work on the channel downsampled to at most
        ``size x size`` (block mean when the side divides, else an
        anti-aliased bilinear resize), which keeps ~600 ROIs x 5 channels at a
        few seconds. Intensity statistics use full resolution.
    levels : grey levels for the GLCM (at most 256).
    distances, angles : GLCM offsets; the properties are averaged over them.
    channel_names : K names (default ``c0..c{K-1}``, or ``roi`` for 3-D input).
    index : index of the returned table (e.g. the roi_ids).

    Returns
    -------
    DataFrame (N rows) with, per channel ``ch``: ``ch_mean, ch_std,
    ch_skew, ch_kurtosis, ch_p5 ... ch_p95``, ``ch_glcm_contrast,
    ch_glcm_homogeneity, ch_glcm_energy, ch_glcm_correlation`` and
    ``ch_lbp_0 .. ch_lbp_9`` (uniform LBP, P=8, R=1, normalised histogram).

    Notes
    -----
    Every feature is a function of one ROI alone (no data-set-wide scaling),
    so computing them before splitting leaks nothing. The GLCM and LBP see the
    image quantised per ROI between its own 1st and 99th percentiles: they
    describe texture, not brightness (the intensity statistics carry that).
    Components may be negative; nothing assumes [0, 1]. A constant channel
    gives skew and kurtosis 0 (not NaN). All values are finite.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> f = texture_features(rng.random((3, 2, 32, 32)), size=16)
    >>> f.shape
    (3, 46)
    >>> np.allclose(f[[f"c1_lbp_{i}" for i in range(10)]].sum(axis=1), 1.0)
    True
    """
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
        default = ["roi"]
    elif x.ndim == 4:
        default = [f"c{k}" for k in range(x.shape[1])]
    else:
        raise InputError(f"expected (N, H, W) ROIs or (N, K, H, W) components, got shape {x.shape}")
    N, K, H, W = x.shape
    if N == 0 or H < 3 or W < 3:
        raise InputError(f"expected at least one ROI of at least 3x3 pixels, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError("images have NaN or infinite values")
    names = list(channel_names) if channel_names is not None else default
    if len(names) != K:
        raise InputError(f"{len(names)} channel names for {K} channels")
    if not 2 <= int(levels) <= 256:
        raise InputError(f"levels={levels!r}; expected 2..256")
    cols: dict[str, np.ndarray] = {}
    for k, ch in enumerate(names):
        xc = x[:, k].astype(np.float64)
        flat = xc.reshape(N, -1)
        sd = flat.std(axis=1)
        cols[f"{ch}_mean"] = flat.mean(axis=1)
        cols[f"{ch}_std"] = sd
        flat_ok = sd > 1e-12 * np.maximum(1.0, np.abs(flat).max(axis=1))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            cols[f"{ch}_skew"] = np.where(flat_ok, np.nan_to_num(skew(flat, axis=1)), 0.0)
            cols[f"{ch}_kurtosis"] = np.where(flat_ok, np.nan_to_num(kurtosis(flat, axis=1)), 0.0)
        for q, v in zip(PERCENTILES, np.percentile(flat, PERCENTILES, axis=1)):
            cols[f"{ch}_p{q}"] = v
        qimg = _quantise(_downsample(xc, int(size)), int(levels))
        glcm = np.empty((N, len(GLCM_PROPS)))
        lbp = np.empty((N, 10))
        for i in range(N):
            m = graycomatrix(qimg[i], list(distances), list(angles), levels=int(levels), symmetric=True, normed=True)
            for j, prop in enumerate(GLCM_PROPS):
                v = graycoprops(m, prop)
                glcm[i, j] = float(np.mean(v[np.isfinite(v)])) if np.isfinite(v).any() else 0.0
            codes = local_binary_pattern(qimg[i], 8, 1, method="uniform")
            lbp[i] = np.bincount(codes.astype(np.int64).ravel(), minlength=10)[:10] / codes.size
        for j, prop in enumerate(GLCM_PROPS):
            cols[f"{ch}_glcm_{prop}"] = glcm[:, j]
        for j in range(10):
            cols[f"{ch}_lbp_{j}"] = lbp[:, j]
    out = pd.DataFrame(cols, index=index)
    return out.fillna(0.0)


def _matrix(X, n: int) -> np.ndarray:
    X = X.to_numpy(dtype=np.float64) if isinstance(X, pd.DataFrame) else np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] != n:
        raise InputError(f"features have shape {X.shape}; expected ({n}, n_features), one row per manifest row")
    if np.isinf(X).any():
        raise InputError("features have infinite values (NaN is imputed, infinity is not)")
    return X


def _pipeline(C: float):
    return make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(),
                         LogisticRegression(C=C, max_iter=5000))


def _fit_predict(Xtr, ytr, Xte, C: float):
    """Fit on (Xtr, ytr), return (prob, logit) on Xte; constant when ytr has one class."""
    if np.unique(ytr).size < 2:
        warnings.warn("a training part has one class only; predicting its class share", UserWarning, stacklevel=3)
        prior = float(np.clip(np.mean(ytr), 1e-6, 1 - 1e-6))
        return np.full(len(Xte), prior), np.full(len(Xte), np.log(prior / (1 - prior)))
    pipe = _pipeline(C).fit(Xtr, ytr)
    logit = pipe.decision_function(Xte)
    return expit(logit), logit


def _positions(df: pd.DataFrame, plan: pd.DataFrame) -> np.ndarray:
    ids = df["roi_id"].astype(str).to_numpy()
    where = pd.Series(np.arange(ids.size), index=ids)
    pos = where.reindex(plan["roi_id"].astype(str).to_numpy())
    if pos.isna().any():
        raise InputError(f"plan roi '{pos.index[pos.isna()][0]}' is not in the manifest; "
                         "was the plan made from another manifest?")
    return pos.to_numpy(dtype=np.int64)


def fit_predict_oof(X, df: pd.DataFrame, plan: pd.DataFrame, model: str = "logreg", C="inner",
                    Cs=C_GRID) -> pd.DataFrame:
    """Out-of-fold predictions of a standardised L2 logistic regression.

    Parameters
    ----------
    X : features, one row per manifest row, in manifest order (array or
        DataFrame; NaN allowed, imputed).
    df : the manifest (``roi_id, patient_id, label``).
    plan : a split plan (:func:`mammodecomp.cv.make_split_plan`).
    model : ``"logreg"`` (the only one).
    C : inverse L2 strength, a number, or ``"inner"``: pick from ``Cs`` by
        the log-loss on the selection rows (``used_for_selection``, the inner
        validation set) of a fit on the ``train`` rows.
    Cs : the grid for ``C="inner"``.

    Returns
    -------
    DataFrame ``roi_id, patient_id, label, repeat, fold, prob, logit``, the
    test rows of every (repeat, fold), sorted by repeat, fold, manifest order.

    Notes
    -----
    Per (repeat, fold), everything is fitted on that fold's non-test rows
    only: the median imputer, the standard scaler, the model (after C is
    chosen, the final fit uses train + val). A test row's prediction depends
    on its own features and on the training rows, never on other test rows
    nor on any test label. With a contiguous (seed) plan the selection rows
    are the test fold, so ``C="inner"`` reproduces the seed's selection on
    the test fold.

    Examples
    --------
    >>> from mammodecomp.cv import make_split_plan
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"roi_id": [f"r{i}" for i in range(60)],
    ...                    "patient_id": [f"p{i}" for i in range(60)], "label": np.arange(60) % 2})
    >>> X = rng.normal(df["label"].to_numpy()[:, None], 1.0, size=(60, 3))
    >>> oof = fit_predict_oof(X, df, make_split_plan(df, n_folds=3))
    >>> len(oof), auc_score(oof["label"], oof["prob"]) > 0.7
    (60, True)
    """
    if model != "logreg":
        raise InputError(f"model={model!r}; expected 'logreg'")
    if not (C == "inner" or (isinstance(C, (int, float)) and not isinstance(C, bool) and C > 0)):
        raise InputError(f"C={C!r}; expected a positive number or 'inner'")
    for c in ("roi_id", "patient_id", "label"):
        if c not in df.columns:
            raise InputError(f"manifest lacks column '{c}'")
    Xm = _matrix(X, len(df))
    y = df["label"].astype(int).to_numpy()
    pos = _positions(df, plan)
    sel = (plan["used_for_selection"].astype(bool).to_numpy() if "used_for_selection" in plan.columns
           else (plan["role"] == "val").to_numpy())
    role = plan["role"].to_numpy()
    rep, fold = plan["repeat"].to_numpy(), plan["fold"].to_numpy()
    out = []
    keys = pd.DataFrame({"r": rep, "f": fold}).drop_duplicates().sort_values(["r", "f"]).to_numpy()
    with threadpool_limits(limits=1):  # many tiny fits: BLAS threads only contend
        for r, f in keys:
            out.append(_oof_fold(Xm, y, df, pos, sel, role, (rep == r) & (fold == f), int(r), int(f), C, Cs))
    return pd.concat(out, ignore_index=True)[OOF_COLUMNS]


def _oof_fold(Xm, y, df, pos, sel, role, here, r, f, C, Cs) -> pd.DataFrame:
    """One (repeat, fold) of :func:`fit_predict_oof`."""
    tr, te = pos[here & (role == "train")], pos[here & (role == "test")]
    fit = pos[here & (role != "test")]
    c = C
    if C == "inner":
        va = pos[here & sel]
        if va.size == 0 or np.unique(y[va]).size < 2 or np.unique(y[tr]).size < 2:
            c = 1.0
        else:
            losses = [log_loss(y[va], _fit_predict(Xm[tr], y[tr], Xm[va], ci)[0], labels=[0, 1]) for ci in Cs]
            c = float(Cs[int(np.argmin(losses))])
    te = np.sort(te)
    prob, logit = _fit_predict(Xm[fit], y[fit], Xm[te], float(c))
    return pd.DataFrame({"roi_id": df["roi_id"].astype(str).to_numpy()[te],
                         "patient_id": df["patient_id"].astype(str).to_numpy()[te],
                         "label": y[te], "repeat": r, "fold": f, "prob": prob, "logit": logit})


def _nuisance_table(meta_df: pd.DataFrame | None, df: pd.DataFrame) -> pd.DataFrame:
    base = df.assign(roi_id=df["roi_id"].astype(str)).reset_index(drop=True)
    if all(c in base.columns for c in ("bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1")):
        base["bbox_side"] = np.sqrt((base["bbox_row1"] - base["bbox_row0"]).astype(float)
                                    * (base["bbox_col1"] - base["bbox_col0"]).astype(float))
    if meta_df is None:
        return base
    meta = meta_df.copy()
    if "roi_id" in meta.columns:
        meta["roi_id"] = meta["roi_id"].astype(str)
        meta = base[["roi_id"]].merge(meta, on="roi_id", how="left")
        if len(meta) != len(base):
            raise InputError("roi meta has duplicate roi_id values")
    elif len(meta) == len(base):
        meta = meta.reset_index(drop=True).assign(roi_id=base["roi_id"])
    else:
        raise InputError(f"roi meta has {len(meta)} rows and no roi_id column; expected {len(base)} rows")
    keep = [c for c in base.columns if c not in meta.columns or c == "roi_id"]
    return base[keep].merge(meta, on="roi_id", how="left")


def shortcut_aucs(meta_df: pd.DataFrame | None, df: pd.DataFrame, plan: pd.DataFrame, columns=None,
                  n_boot: int = 1000, seed: int = 0, C: float = 1.0) -> pd.DataFrame:
    """Out-of-fold AUC of each nuisance variable alone.

    Parameters
    ----------
    meta_df : per-ROI metadata (e.g. from ``roi.extract_rois``: crop_side_px,
        scale, background_fraction, border_fraction, mean_intensity), with a
        ``roi_id`` column or in manifest order; None to use only ``df``.
    df : the manifest; its columns (radius, view, source, ...) are used too,
        plus ``bbox_side = sqrt(bbox area)`` when a bbox is given.
    plan : the split plan the CNN used.
    columns : the candidates (default :data:`SHORTCUT_COLUMNS`); those absent
        or constant are skipped.
    n_boot, seed : patient-bootstrap CI of each AUC.
    C : inverse L2 strength of the one-feature logistic regression.

    Returns
    -------
    DataFrame ``feature, kind ('numeric' | 'categorical'), n_missing, auc,
    ci_lo, ci_hi``, highest AUC first. An AUC near the CNN's says the CNN may
    have learned that shortcut.

    Notes
    -----
    Each variable goes through :func:`fit_predict_oof` with the same plan
    (fitting, scaling and imputation on training rows only). Categorical
    variables (non-numeric columns) are one-hot encoded, missing as its own
    level. The AUC pools every repeat's out-of-fold rows.

    Examples
    --------
    >>> from mammodecomp.cv import make_split_plan
    >>> df = pd.DataFrame({"roi_id": [f"r{i}" for i in range(40)],
    ...                    "patient_id": [f"p{i}" for i in range(40)], "label": np.arange(40) % 2,
    ...                    "radius": 10.0 + 5 * (np.arange(40) % 2), "view": "CC"})
    >>> t = shortcut_aucs(None, df, make_split_plan(df, n_folds=4), n_boot=100)
    >>> t["feature"].tolist(), float(t["auc"].iloc[0])
    (['radius'], 1.0)
    """
    table = _nuisance_table(meta_df, df)
    cands = list(SHORTCUT_COLUMNS if columns is None else columns)
    rows = []
    for col in cands:
        if col not in table.columns or col in ("roi_id", "patient_id", "label"):
            continue
        s = table[col]
        if s.nunique(dropna=False) < 2:
            continue
        num = pd.to_numeric(s, errors="coerce")
        numeric = bool(num.notna().sum() == s.notna().sum())
        if numeric:
            X = num.to_numpy(dtype=float)[:, None]
        else:
            X = pd.get_dummies(s.astype(str).where(s.notna(), "missing")).to_numpy(dtype=float)
        oof = fit_predict_oof(X, table, plan, C=float(C))
        auc = auc_score(oof["label"], oof["prob"])
        lo, hi = bootstrap_auc_ci(oof["label"].to_numpy(), oof["prob"].to_numpy(), oof["patient_id"].to_numpy(),
                                  n_boot=n_boot, seed=seed)
        rows.append({"feature": col, "kind": "numeric" if numeric else "categorical",
                     "n_missing": int(s.isna().sum()), "auc": auc, "ci_lo": lo, "ci_hi": hi})
    out = pd.DataFrame(rows, columns=["feature", "kind", "n_missing", "auc", "ci_lo", "ci_hi"])
    return out.sort_values("auc", ascending=False, kind="mergesort").reset_index(drop=True)


def permute_labels_by_patient(df: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Labels permuted between patients, keeping each patient's label pattern.

    Patients with the same number of ROIs are exchanged as blocks: patient j
    receives the label vector (in row order) of patient pi(j). Class counts,
    ROIs per patient and within-patient label patterns are kept.

    Examples
    --------
    >>> df = pd.DataFrame({"patient_id": ["a", "a", "b", "b", "c"], "label": [1, 1, 0, 0, 1]})
    >>> lab = permute_labels_by_patient(df, np.random.default_rng(3))
    >>> bool(lab[0] == lab[1] and lab[2] == lab[3] and lab[4] == 1)
    True
    """
    y = df["label"].astype(int).to_numpy()
    _, g = np.unique(df["patient_id"].astype(str).to_numpy(), return_inverse=True)
    order = np.argsort(g, kind="mergesort")
    sizes = np.bincount(g)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    new = y.copy()
    for size in np.unique(sizes):
        pats = np.flatnonzero(sizes == size)
        rows = order[starts[pats][:, None] + np.arange(size)[None, :]]  # (n_pat, size), row order kept
        new[rows] = y[rows[rng.permutation(pats.size)]]
    return new


def permutation_test(X, df: pd.DataFrame, plan: pd.DataFrame, n_permutations: int = 100, seed: int = 0,
                     C=1.0) -> dict:
    """Label-permutation test of the feature baseline's out-of-fold AUC.

    Parameters
    ----------
    X, df, plan : as for :func:`fit_predict_oof`.
    n_permutations : null resamples.
    seed : seed of the permutations.
    C : passed to :func:`fit_predict_oof`; a fixed number (1.0 by default)
        takes a fast path that fits the label-free imputer and scaler once
        per fold and refits only the model; ``"inner"`` reruns everything.

    Returns
    -------
    dict ``observed_auc, null_aucs (array), p_value, n_permutations``.

    Notes
    -----
    Labels are permuted between patients (:func:`permute_labels_by_patient`),
    so the null keeps the patient structure; the plan is held fixed. The
    whole out-of-fold pipeline is rerun on every permutation.
    ``p = (1 + #{null >= observed}) / (1 + n_permutations)``: never 0, valid
    at any n (Phipson & Smyth 2010).

    Examples
    --------
    >>> from mammodecomp.cv import make_split_plan
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"roi_id": [f"r{i}" for i in range(40)],
    ...                    "patient_id": [f"p{i}" for i in range(40)], "label": np.arange(40) % 2})
    >>> X = rng.normal(df["label"].to_numpy()[:, None] * 2.0, 1.0, size=(40, 2))
    >>> r = permutation_test(X, df, make_split_plan(df, n_folds=4), n_permutations=19)
    >>> r["p_value"]
    0.05
    """
    n_permutations = int(n_permutations)
    if n_permutations < 1:
        raise InputError(f"n_permutations={n_permutations}; expected >= 1")
    Xm = _matrix(X, len(df))
    oof = fit_predict_oof(Xm, df, plan, C=C)
    observed = auc_score(oof["label"], oof["prob"])
    rng = np.random.default_rng(seed)
    null = np.empty(n_permutations)
    if C == "inner":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for i in range(n_permutations):
                d = df.assign(label=permute_labels_by_patient(df, rng))
                o = fit_predict_oof(Xm, d, plan, C=C)
                null[i] = auc_score(o["label"], o["prob"])
    else:
        # the imputer and scaler do not see labels: fit them once per fold, refit only the model
        pos = _positions(df, plan)
        role = plan["role"].to_numpy()
        keys = plan[["repeat", "fold"]].to_numpy()
        folds = []
        for r, f in pd.DataFrame(keys).drop_duplicates().to_numpy():
            here = (keys[:, 0] == r) & (keys[:, 1] == f)
            fit, te = pos[here & (role != "test")], pos[here & (role == "test")]
            prep = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                                 StandardScaler()).fit(Xm[fit])
            folds.append((fit, te, prep.transform(Xm[fit]), prep.transform(Xm[te])))
        with threadpool_limits(limits=1):
            _null_fast(folds, df, rng, float(C), null)
    p = (1.0 + float(np.sum(null >= observed))) / (1.0 + n_permutations)
    return {"observed_auc": float(observed), "null_aucs": null, "p_value": p, "n_permutations": n_permutations}


def _null_fast(folds, df, rng, C, null) -> None:
    """Fill ``null`` with permuted-label OOF AUCs, refitting only the model."""
    for i in range(null.size):
        yp = permute_labels_by_patient(df, rng)
        ys, ps = [], []
        for fit, te, zf, zt in folds:
            if np.unique(yp[fit]).size < 2:
                prior = float(np.clip(yp[fit].mean(), 1e-6, 1 - 1e-6))
                ps.append(np.full(te.size, np.log(prior / (1 - prior))))
            else:
                ps.append(LogisticRegression(C=C, max_iter=5000).fit(zf, yp[fit]).decision_function(zt))
            ys.append(yp[te])
        null[i] = auc_score(np.concatenate(ys), np.concatenate(ps))
