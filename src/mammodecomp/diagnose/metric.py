"""Metric hygiene: the question's batch-averaged f1_m against whole-fold values.

The Keras ``f1_m``/``precision_m``/``recall_m`` of the question are computed
per batch and averaged over batches; that is not the F1 of the fold. Here both
are computed on the same out-of-fold predictions, in manifest order within each
test fold (the order a non-shuffled validation generator would see), with the
run's batch size, via ``metrics.batchwise_metrics`` (``f1_m`` against
``f1``, the same formula on the whole fold).

The comparison is defined only on a test fold that holds both classes and
spans two batches or more: in a fold without positives F1 is 0/0 both ways,
and a fold that fits in one batch is its own batch average. When no fold
qualifies the finding is "not applicable" and says why.
"""
from __future__ import annotations

import numpy as np

from ._common import REASON, Finding, fmt
from .checks import register_check

#: |batch-averaged - whole-fold| F1 above these is worth a finding
METRIC_GAP_MEDIUM = 0.10
METRIC_GAP_LOW = 0.03

# finding id and the names of the values it writes
BATCHWISE = "metric.batchwise"
BATCH_SIZE, MAX_GAP_F1, MEAN_GAP_F1, FOLDS = "batch_size", "max_gap_f1", "mean_gap_f1", "folds"
N_APPLICABLE = "n_applicable"
WRITES = {BATCHWISE: (BATCH_SIZE, MAX_GAP_F1, MEAN_GAP_F1, FOLDS, N_APPLICABLE, REASON)}


def _get(d: dict, *names):
    for n in names:
        if n in d and d[n] is not None:
            return float(d[n])
    return float("nan")


def _why_not(n: int, n_pos: int, n_batches: int) -> str:
    """Why the batch-vs-whole comparison is undefined on one fold ("" when defined)."""
    if n_pos in (0, n):
        return "one class only"
    if n_batches < 2:
        return f"{n} ROIs fit in one batch"
    return ""


def batch_vs_whole(run) -> Finding:
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
        n_batches = int(m.get("n_batches", -(-len(y) // bs)))
        why = _why_not(len(y), int(y.sum()), n_batches)
        rows.append({"repeat": int(r), "fold": int(f), "n": int(len(y)), "threshold": thr,
                     "n_batches": n_batches, "applicable": not why, "reason": why,
                     "f1_whole": _get(m, "f1"), "f1_batch": _get(m, "f1_m"),
                     "precision_whole": _get(m, "precision"), "precision_batch": _get(m, "precision_m"),
                     "recall_whole": _get(m, "recall"), "recall_batch": _get(m, "recall_m")})
    used = [x for x in rows if x["applicable"]]
    title = "Batch-averaged vs whole-fold F1"
    if not used:
        reasons = sorted({x["reason"] for x in rows}) or ["no out-of-fold predictions"]
        return Finding.not_applicable(
            BATCHWISE, "metric", title,
            f"no test fold holds both classes over two batches of {bs} or more "
            f"({'; '.join(reasons)}): F1 averaged over batches cannot differ from, or is undefined like, "
            "the fold's F1",
            values={BATCH_SIZE: bs, MAX_GAP_F1: None, MEAN_GAP_F1: None, FOLDS: rows, N_APPLICABLE: 0},
            meaning="The question's batch-averaged f1_m misleads on folds with both classes over several "
                    "batches; this run has none, so there is nothing to compare.")
    gaps = [abs(x["f1_batch"] - x["f1_whole"]) for x in used
            if np.isfinite(x["f1_batch"]) and np.isfinite(x["f1_whole"])]
    gap = max(gaps, default=0.0)
    mean_gap = float(np.mean(gaps)) if gaps else 0.0
    sev = "medium" if gap > METRIC_GAP_MEDIUM else "low" if gap > METRIC_GAP_LOW else "ok"
    left = len(rows) - len(used)
    return Finding(
        BATCHWISE, "metric", title, sev,
        f"batch-averaged F1 (the question's f1_m, batch {bs}) differs from the fold's F1 by up to "
        f"{fmt(gap)} (mean {fmt(mean_gap)}) on the same out-of-fold predictions"
        + (f"; {left} of {len(rows)} fold(s) left out (one class only, or one batch)" if left else ""),
        values={BATCH_SIZE: bs, MAX_GAP_F1: gap, MEAN_GAP_F1: mean_gap, FOLDS: rows, N_APPLICABLE: len(used)},
        figure="metric_hygiene",
        meaning="A metric averaged over batches weights small last batches as much as full ones and "
                "scores 0 in batches without a positive; it is not the fold's F1, and val_f1_m "
                "moves for reasons that are not in the model.",
        fix="Compute F1, precision and recall once over the whole fold (metrics.binary_metrics); "
            "report AUC with a patient-bootstrap CI." if sev != "ok" else "")



@register_check("metric", family="metric", title="Metric hygiene", order=20, writes=WRITES)
def check(ctx) -> list[Finding]:
    """The batch-averaged vs whole-fold F1 finding of the context's run."""
    return [batch_vs_whole(ctx.run)]
