"""Metric hygiene: the question's batch-averaged f1_m against whole-fold values.

The Keras ``f1_m``/``precision_m``/``recall_m`` of the question are computed
per batch and averaged over batches; that is not the F1 of the fold. Here both
are computed on the same out-of-fold predictions, in manifest order within each
test fold (the order a non-shuffled validation generator would see), with the
run's batch size, via ``metrics.batchwise_metrics`` (``f1_m`` against
``f1``, the same formula on the whole fold).
"""
from __future__ import annotations

import numpy as np

from ._common import finding, fmt

#: |batch-averaged - whole-fold| F1 above these is worth a finding
METRIC_GAP_MEDIUM = 0.10
METRIC_GAP_LOW = 0.03


def _get(d: dict, *names):
    for n in names:
        if n in d and d[n] is not None:
            return float(d[n])
    return float("nan")


def batch_vs_whole(run) -> dict:
    """Per test fold: batchwise vs whole-fold F1, precision and recall.

    Both come from ``metrics.batchwise_metrics`` on the same predictions, at
    the fold's decision threshold: ``f1_m`` (the mean over batches) against
    ``f1`` (the same formula on the whole fold), so the difference is the
    batching alone.
    """
    from ..metrics import batchwise_metrics
    bs = int(run.cfg("train.batch_size", 32) or 32)
    rows = []
    oof = run.oof.copy()
    oof["row"] = oof["roi_id"].astype(str).map(run.row_of)
    for (r, f), g in oof.groupby(["repeat", "fold"]):
        g = g.sort_values("row")
        y, p = g["label"].astype(int).to_numpy(), g["prob"].astype(float).to_numpy()
        if len(y) == 0:
            continue
        thr = run.done.get((int(r), int(f)), {}).get("threshold")
        thr = 0.5 if thr is None else float(thr)
        m = batchwise_metrics(y, p, batch_size=bs, threshold=thr)
        rows.append({"repeat": int(r), "fold": int(f), "n": int(len(y)), "threshold": thr,
                     "n_batches": int(m.get("n_batches", -(-len(y) // bs))),
                     "f1_whole": _get(m, "f1"), "f1_batch": _get(m, "f1_m"),
                     "precision_whole": _get(m, "precision"), "precision_batch": _get(m, "precision_m"),
                     "recall_whole": _get(m, "recall"), "recall_batch": _get(m, "recall_m")})
    gaps = [abs(x["f1_batch"] - x["f1_whole"]) for x in rows
            if np.isfinite(x["f1_batch"]) and np.isfinite(x["f1_whole"])]
    gap = max(gaps, default=0.0)
    mean_gap = float(np.mean(gaps)) if gaps else 0.0
    sev = "medium" if gap > METRIC_GAP_MEDIUM else "low" if gap > METRIC_GAP_LOW else "ok"
    return finding(
        "metric.batchwise", "metric", "Batch-averaged vs whole-fold F1", sev,
        f"batch-averaged F1 (the question's f1_m, batch {bs}) differs from the fold's F1 by up to "
        f"{fmt(gap)} (mean {fmt(mean_gap)}) on the same out-of-fold predictions",
        values={"batch_size": bs, "max_gap_f1": gap, "mean_gap_f1": mean_gap, "folds": rows},
        figure="metric_hygiene",
        meaning="A metric averaged over batches weights small last batches as much as full ones and "
                "scores 0 in batches without a positive; it is not the fold's F1, and val_f1_m "
                "moves for reasons that are not in the model.",
        fix="Compute F1, precision and recall once over the whole fold (metrics.binary_metrics); "
            "report AUC with a patient-bootstrap CI." if sev != "ok" else "")

