"""Split hygiene: class balance, shared patients, near duplicates, manifest order.

Every check reads the run's own split plan (``splits.csv``) and manifest.

* class balance per fold: positive fraction of each test fold against the
  whole manifest;
* patients shared between the training (train + val) and test parts of a
  fold: must be zero, listed when not;
* near-duplicate ROIs across folds: Pearson correlation of 32x32 thumbnails
  above :data:`DUPLICATE_CORR`, computed as one matrix product in row blocks;
  a pair counts when its two ROIs are tested in different folds (so one was
  in training when the other was tested);
* manifest order: whether labels or patients come in runs, and the class
  ratio per fold that the question's contiguous ``kfold_indices`` split
  would have had on this manifest (``cv.make_split_plan(scheme="contiguous")``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ._common import Finding, fmt
from .checks import register_check

#: thumbnail side for the near-duplicate search
THUMB = 32
#: thumbnails correlated above this are near duplicates
DUPLICATE_CORR = 0.98
#: a fold whose positive fraction differs from the manifest's by more is skewed
FOLD_SKEW_MEDIUM = 0.10
FOLD_SKEW_HIGH = 0.25
#: label runs below this fraction of the number expected under random order
#: mean the manifest is sorted by label
ORDERED_RUNS_RATIO = 0.5
#: most pairs / patients listed in diagnosis.json
MAX_LISTED = 200

# finding ids and the names of the values they write (read by the verdict)
CLASS_BALANCE = "split.class_balance"
OVERALL, MAX_DEVIATION, FOLDS, SINGLE_CLASS_FOLDS = "overall", "max_deviation", "folds", "single_class_folds"
SHARED_PATIENTS = "split.shared_patients"
N_SHARED, PATIENTS = "n_shared", "patients"
NEAR_DUPLICATES = "split.near_duplicates"
N_PAIRS, N_PAIRS_ALL, THRESHOLD, PAIRS = "n_pairs", "n_pairs_all", "threshold", "pairs"
MANIFEST_ORDER = "split.manifest_order"
LABEL_RUNS, EXPECTED_RUNS, RUNS_RATIO, LABEL_ORDERED = "label_runs", "expected_runs", "runs_ratio", "label_ordered"
PATIENT_RUNS, N_PATIENTS, CONTIGUOUS_FOLDS = "patient_runs", "n_patients", "contiguous_folds"
CONTIGUOUS_MAX_DEVIATION, RUN_USED_CONTIGUOUS = "contiguous_max_deviation", "run_used_contiguous"
WRITES = {
    CLASS_BALANCE: (OVERALL, MAX_DEVIATION, FOLDS, SINGLE_CLASS_FOLDS),
    SHARED_PATIENTS: (N_SHARED, PATIENTS),
    NEAR_DUPLICATES: (N_PAIRS, N_PAIRS_ALL, THRESHOLD, PAIRS),
    MANIFEST_ORDER: (LABEL_RUNS, EXPECTED_RUNS, RUNS_RATIO, LABEL_ORDERED, PATIENT_RUNS, N_PATIENTS,
                     CONTIGUOUS_FOLDS, CONTIGUOUS_MAX_DEVIATION, RUN_USED_CONTIGUOUS, OVERALL),
}


def class_balance(run) -> Finding:
    """Positive fraction per (repeat, fold) test part, and for its training part."""
    lab = dict(zip(run.manifest["roi_id"], run.manifest["label"].astype(int)))
    overall = float(run.manifest["label"].mean())
    rows = []
    for (r, f), g in run.plan.groupby(["repeat", "fold"]):
        test = g[g["role"] == "test"]["roi_id"].map(lab)
        train = g[g["role"] != "test"]["roi_id"].map(lab)
        rows.append({"repeat": int(r), "fold": int(f), "n_test": int(len(test)),
                     "pos_test": int(test.sum()), "frac_test": float(test.mean()) if len(test) else float("nan"),
                     "frac_train": float(train.mean()) if len(train) else float("nan")})
    dev = max((abs(x["frac_test"] - overall) for x in rows if np.isfinite(x["frac_test"])), default=0.0)
    single = [x for x in rows if x["n_test"] and x["pos_test"] in (0, x["n_test"])]
    sev = "high" if (dev > FOLD_SKEW_HIGH or single) else "medium" if dev > FOLD_SKEW_MEDIUM else "ok"
    return Finding(
        CLASS_BALANCE, "split", "Class balance per fold", sev,
        f"malignant fraction per test fold vs {fmt(overall, 2)} overall; largest deviation {fmt(dev, 2)}"
        + (f"; {len(single)} fold(s) hold one class only" if single else ""),
        values={OVERALL: overall, MAX_DEVIATION: dev, FOLDS: rows, SINGLE_CLASS_FOLDS: len(single)},
        figure="fold_balance",
        meaning="Folds with a different class mix than the data set give AUC and accuracy that "
                "swing between folds and a model that learns the wrong prior.",
        fix="Use stratified, patient-grouped folds (cv.scheme=grouped, the default)." if sev != "ok" else "")


def shared_patients(run) -> Finding:
    """Patients present in both the training (train/val) and test part of a fold."""
    pid = dict(zip(run.manifest["roi_id"], run.manifest["patient_id"].astype(str)))
    shared: dict[str, list] = {}
    for (r, f), g in run.plan.groupby(["repeat", "fold"]):
        test = set(g[g["role"] == "test"]["roi_id"].map(pid))
        train = set(g[g["role"] != "test"]["roi_id"].map(pid))
        for p in sorted(test & train):
            shared.setdefault(p, []).append(f"r{int(r)}f{int(f)}")
    n = len(shared)
    listed = [{"patient_id": p, "folds": v} for p, v in sorted(shared.items())][:MAX_LISTED]
    return Finding(
        SHARED_PATIENTS, "split", "Patients shared between training and test", "high" if n else "ok",
        f"{n} patient(s) have ROIs in both the training and the test part of a fold"
        + (": " + ", ".join(x["patient_id"] for x in listed[:10]) + (" ..." if n > 10 else "") if n else ""),
        values={N_SHARED: n, PATIENTS: listed},
        figure=None,
        meaning="A patient's other view or other lesion is nearly the same image: the test fold then "
                "measures memory, not generalisation, and the AUC is inflated." if n else
                "No patient appears on both sides of any fold.",
        fix="Group folds by patient_id (StratifiedGroupKFold; cv.scheme=grouped)." if n else "")


def thumbnails(images, side: int = THUMB, batch: int = 256) -> np.ndarray:
    """(N,H,W) -> (N, side*side) float32 rows, centred and scaled to unit norm
    (constant images give zero rows, so their correlation with anything is 0)."""
    n = images.shape[0]
    out = np.empty((n, side * side), dtype=np.float32)
    for s in range(0, n, batch):
        x = torch.as_tensor(np.asarray(images[s:s + batch], dtype=np.float32))[:, None]
        t = F.adaptive_avg_pool2d(x, side).reshape(x.shape[0], -1)
        t = t - t.mean(dim=1, keepdim=True)
        norm = t.norm(dim=1, keepdim=True)
        t = torch.where(norm > 1e-8, t / norm.clamp_min(1e-8), torch.zeros_like(t))
        out[s:s + len(t)] = t.numpy()
    return out


def near_duplicate_pairs(thumbs: np.ndarray, threshold: float = DUPLICATE_CORR, block: int = 1024):
    """All pairs i < j with thumbnail correlation > *threshold*.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> imgs = rng.random((4, 16, 16)).astype(np.float32)
    >>> imgs[3] = imgs[1] * 0.9 + 0.05          # a rescaled copy
    >>> near_duplicate_pairs(thumbnails(imgs, side=8))[0].tolist()
    [[1, 3]]
    """
    n = thumbs.shape[0]
    t = torch.as_tensor(thumbs)
    found, corrs = [], []
    for s in range(0, n, block):
        c = t[s:s + block] @ t.T                       # (b, n)
        rows = torch.arange(s, min(s + block, n))[:, None]
        mask = (c > threshold) & (torch.arange(n)[None, :] > rows)
        ii, jj = torch.nonzero(mask, as_tuple=True)
        found.append(torch.stack([ii + s, jj], dim=1))
        corrs.append(c[ii, jj])
    pairs = torch.cat(found).numpy() if found else np.zeros((0, 2), int)
    cc = torch.cat(corrs).numpy() if corrs else np.zeros(0, np.float32)
    return pairs.astype(int), cc.astype(float)


def near_duplicates(run, threshold: float = DUPLICATE_CORR) -> Finding:
    """Near-duplicate ROI pairs whose two ROIs sit in different test folds."""
    imgs = run.rois()
    if imgs is None:
        return Finding.not_measured(NEAR_DUPLICATES, "split", "Near-duplicate ROIs across folds",
                       "run.json names no rois_path or components_path that exists")
    th = thumbnails(imgs)
    pairs, cc = near_duplicate_pairs(th, threshold)
    m = run.manifest
    rid, pid = m["roi_id"].to_numpy(), m["patient_id"].astype(str).to_numpy()
    test = run.plan[(run.plan["role"] == "test") & (run.plan["repeat"] == run.plan["repeat"].min())]
    fold_of = dict(zip(test["roi_id"].astype(str), test["fold"].astype(int)))
    across = []
    for (i, j), c in zip(pairs, cc):
        fi, fj = fold_of.get(rid[i]), fold_of.get(rid[j])
        if fi is None and fj is None:
            continue
        if fi != fj:
            across.append({"roi_a": rid[i], "roi_b": rid[j], "corr": round(float(c), 4),
                           "fold_a": fi, "fold_b": fj, "same_patient": bool(pid[i] == pid[j])})
    across.sort(key=lambda x: -x["corr"])
    n = len(across)
    frac = n / max(len(m), 1)
    sev = "ok" if n == 0 else "high" if frac > 0.01 else "medium"
    show = ", ".join(f"{x['roi_a']}~{x['roi_b']}" for x in across[:8])
    return Finding(
        NEAR_DUPLICATES, "split", "Near-duplicate ROIs across folds", sev,
        f"{n} pair(s) of ROIs with {THUMB}x{THUMB} thumbnail correlation > {threshold} tested in different "
        f"folds ({len(pairs)} near-duplicate pairs in all)" + (f": {show}" + (" ..." if n > 8 else "") if n else ""),
        values={N_PAIRS: n, N_PAIRS_ALL: int(len(pairs)), THRESHOLD: threshold, PAIRS: across[:MAX_LISTED]},
        meaning="A near copy of a test ROI in the training part lets the model recall instead of "
                "generalise." if n else "No near copies straddle folds.",
        fix="Remove duplicates, or give copies one patient_id so that grouped folds keep them together."
            if n else "")


def _runs(x: np.ndarray) -> int:
    return int(1 + np.count_nonzero(x[1:] != x[:-1])) if len(x) else 0


def contiguous_plan(df: pd.DataFrame, n_folds: int) -> pd.DataFrame:
    """The question's ``kfold_indices`` plan on *df* (via cv.make_split_plan)."""
    from ..cv import make_split_plan
    return make_split_plan(df, n_folds=n_folds, scheme="contiguous")


def manifest_order(run) -> Finding:
    """Is the manifest ordered by label or patient, and what would the
    question's contiguous folds have looked like on it?"""
    m = run.manifest
    y = m["label"].astype(int).to_numpy()
    p = float(y.mean())
    n = len(y)
    expected = 1 + 2 * (n - 1) * p * (1 - p)
    label_runs = _runs(y)
    ratio = label_runs / expected if expected > 0 else 1.0
    codes = pd.factorize(m["patient_id"].astype(str))[0]
    patient_runs = _runs(codes)
    n_pat = int(codes.max() + 1) if n else 0
    n_folds = int(run.cfg("cv.n_folds", run.plan["fold"].nunique()))
    rows, dev = [], 0.0
    try:
        plan = contiguous_plan(m, n_folds)
        lab = dict(zip(m["roi_id"], y))
        for f, g in plan[plan["role"] == "test"].groupby("fold"):
            v = g["roi_id"].map(lab)
            rows.append({"fold": int(f), "n_test": int(len(v)), "frac_test": float(v.mean())})
        dev = max(abs(x["frac_test"] - p) for x in rows) if rows else 0.0
    except Exception as e:  # noqa: BLE001 - cv not importable or refuses: say so, keep going
        note = f"contiguous plan not computed ({type(e).__name__}: {e})"
    else:
        note = ""
    ordered = ratio < ORDERED_RUNS_RATIO
    used = run.cfg("cv.scheme") == "contiguous"
    skewed = dev > FOLD_SKEW_HIGH
    if used and skewed:
        sev = "high"
    elif used and dev > FOLD_SKEW_MEDIUM:
        sev = "medium"
    elif ordered:
        sev = "low"
    else:
        sev = "ok"
    text = (f"label runs {label_runs} vs {fmt(expected, 0)} expected in random order (ratio {fmt(ratio, 2)}"
            f"{': sorted by label' if ordered else ''}); patient runs {patient_runs} for {n_pat} patients; "
            f"contiguous {n_folds}-fold test parts would hold "
            + ", ".join(f"{fmt(x['frac_test'], 2)}" for x in rows) + f" malignant (overall {fmt(p, 2)})"
            + ("; this run used those contiguous folds" if used else ""))
    return Finding(
        MANIFEST_ORDER, "split", "Manifest order and contiguous folds", sev, text,
        values={LABEL_RUNS: label_runs, EXPECTED_RUNS: expected, RUNS_RATIO: ratio, LABEL_ORDERED: ordered,
                PATIENT_RUNS: patient_runs, N_PATIENTS: n_pat, CONTIGUOUS_FOLDS: rows,
                CONTIGUOUS_MAX_DEVIATION: dev, RUN_USED_CONTIGUOUS: used, OVERALL: p},
        figure="fold_balance",
        meaning=("The question's kfold_indices slices the array in order, without shuffling: on a "
                 "table sorted by label, whole folds are benign or malignant, so each model trains on a "
                 "different class prior than it is tested on, and patients' views straddle folds."
                 if sev in ("high", "medium") else
                 "Contiguous folds would be skewed on this manifest; this run's folds are not contiguous."
                 if sev == "low" else "The manifest order does not bias contiguous folds."),
        fix="Shuffle and stratify, grouped by patient: cv.scheme=grouped (StratifiedGroupKFold)."
            if sev != "ok" else "",
        notes=note)


def run_split_checks(run) -> list[Finding]:
    """All split-hygiene findings of one run."""
    return [class_balance(run), shared_patients(run), near_duplicates(run), manifest_order(run)]


@register_check("split", family="split", title="Split hygiene", order=10, writes=WRITES)
def check(ctx) -> list[Finding]:
    """The split-hygiene findings of the context's run."""
    return run_split_checks(ctx.run)
