"""Learning curves: generalisation gap, best epoch, oscillation of val loss.

Read from ``folds/r{R}f{F}/history.csv``. Per fold:

* ``best_epoch``: the epoch of lowest validation loss (where validation
  stops improving);
* ``final_gap``: train AUC minus validation AUC at the last epoch, and
  ``selected_gap`` at the epoch the run kept (done.json ``best_epoch``);
* oscillation over the last half of the epochs: ``max/min`` of validation
  loss (the question's 1.8 -> 4.6 swing is a ratio of 2.5) and the mean
  absolute epoch-to-epoch change relative to the mean val loss.
"""
from __future__ import annotations

import numpy as np

from ._common import Finding, fmt
from .checks import register_check

#: train-val AUC gap at the last epoch above these is over-fitting
GAP_HIGH = 0.20
GAP_MEDIUM = 0.10
#: val loss max/min ratio over the last half above this is oscillation
OSC_RATIO = 1.5
#: mean |delta val loss| / mean val loss over the last half above this is oscillation
OSC_REL_CHANGE = 0.15
#: a batch size at or below this makes BatchNorm statistics noisy
SMALL_BATCH = 32
#: a constant learning rate at or above this (Adam) is a likely cause of oscillation
HIGH_LR = 1e-3
#: kept epoch this many epochs after the best val-loss epoch = stale checkpoint
STALE_EPOCHS = 5

# finding ids and the names of the values they write
GAP = "training.gap"
FINAL_GAP, FINAL_TRAIN_AUC, FINAL_VAL_AUC = "final_gap", "final_train_auc", "final_val_auc"
BEST_EPOCHS, EPOCHS, STALE, VALIDATED_ON_TEST = "best_epochs", "epochs", "stale_epochs", "validated_on_test"
N_FOLDS_WITH_GAP, FOLDS = "n_folds_with_gap", "folds"
OSCILLATION = "training.oscillation"
MAX_RATIO, MEAN_REL_CHANGE, OSCILLATING, LIKELY_CAUSES = "max_ratio", "mean_rel_change", "oscillating", "likely_causes"
BATCH_SIZE, LR, SCHEDULE = "batch_size", "lr", "schedule"
WRITES = {
    GAP: (FINAL_GAP, FINAL_TRAIN_AUC, FINAL_VAL_AUC, BEST_EPOCHS, EPOCHS, STALE, VALIDATED_ON_TEST,
          N_FOLDS_WITH_GAP, FOLDS),
    OSCILLATION: (MAX_RATIO, MEAN_REL_CHANGE, OSCILLATING, LIKELY_CAUSES, BATCH_SIZE, LR, SCHEDULE),
}


def _col(h, name):
    return h[name].astype(float).to_numpy() if name in h.columns else np.full(len(h), np.nan)


def fold_curve_stats(h) -> dict:
    """Statistics of one fold's history DataFrame.

    Examples
    --------
    >>> import pandas as pd
    >>> h = pd.DataFrame({"epoch": [1, 2, 3, 4], "train_loss": [.6, .4, .2, .1],
    ...     "val_loss": [.7, .6, 1.8, 4.6], "train_auc": [.7, .8, .9, 1.], "val_auc": [.6, .62, .6, .58]})
    >>> s = fold_curve_stats(h)
    >>> s["best_epoch"], round(s["final_gap"], 2), round(s["osc_ratio"], 2)
    (2, 0.42, 2.56)
    """
    ep = _col(h, "epoch") if "epoch" in h.columns else np.arange(1, len(h) + 1, dtype=float)
    vl, tl = _col(h, "val_loss"), _col(h, "train_loss")
    va, ta = _col(h, "val_auc"), _col(h, "train_auc")
    n = len(h)
    ok = np.isfinite(vl)
    best_i = int(np.nanargmin(np.where(ok, vl, np.inf))) if ok.any() else n - 1
    best_auc_i = int(np.nanargmax(np.where(np.isfinite(va), va, -np.inf))) if np.isfinite(va).any() else best_i
    half = vl[n // 2:]
    half = half[np.isfinite(half)]
    if len(half) >= 2 and half.min() > 0:
        ratio = float(half.max() / half.min())
        mac = float(np.mean(np.abs(np.diff(half))))
        rel = mac / float(np.mean(half))
    else:
        ratio, mac, rel = 1.0, 0.0, 0.0
    return {"epochs": n, "best_epoch": int(ep[best_i]), "best_val_loss": float(vl[best_i]),
            "best_auc_epoch": int(ep[best_auc_i]), "best_val_auc": float(va[best_auc_i]),
            "final_train_loss": float(tl[-1]), "final_val_loss": float(vl[-1]),
            "final_train_auc": float(ta[-1]), "final_val_auc": float(va[-1]),
            "final_gap": float(ta[-1] - va[-1]),
            "osc_ratio": ratio, "osc_mean_abs_change": mac, "osc_rel_change": rel,
            "val_loss_min_last_half": float(half.min()) if len(half) else float("nan"),
            "val_loss_max_last_half": float(half.max()) if len(half) else float("nan")}


def _has_batchnorm(run) -> bool | None:
    name = str(run.cfg("model.name", ""))
    if name.startswith("seed-"):
        return True
    return None


def learning_curves(run) -> list[Finding]:
    """Two findings: the generalisation gap (over-fitting) and validation-loss oscillation."""
    if not run.histories:
        return [Finding.not_measured(GAP, "training", "Generalisation gap", "no history.csv in folds/"),
                Finding.not_measured(OSCILLATION, "training", "Validation-loss oscillation",
                                     "no history.csv in folds/")]
    rows = []
    for (r, f), h in sorted(run.histories.items()):
        s = fold_curve_stats(h)
        d = run.done.get((r, f), {})
        kept = d.get("best_epoch")
        if kept is not None and "epoch" in h.columns and (h["epoch"] == kept).any():
            row = h[h["epoch"] == kept].iloc[0]
            s["kept_epoch"] = int(kept)
            s["selected_gap"] = float(row.get("train_auc", np.nan)) - float(row.get("val_auc", np.nan))
        else:
            s["kept_epoch"] = s["epochs"] if run.cfg("train.select") == "last" else s["best_epoch"]
            s["selected_gap"] = s["final_gap"]
        s["validated_on_test"] = bool(d.get("validated_on_test", False))
        rows.append({"repeat": r, "fold": f, **s})
    # folds whose validation part has one class have no val AUC: average the gap and
    # both AUCs over the same folds, those where both AUCs exist
    both = [x for x in rows if np.isfinite(x["final_gap"])] or rows
    with np.errstate(all="ignore"):
        gap = float(np.nanmean([x["final_gap"] for x in both])) if both else float("nan")
        train_auc = float(np.nanmean([x["final_train_auc"] for x in both]))
        val_auc = float(np.nanmean([x["final_val_auc"] for x in both]))
    gap = gap if np.isfinite(gap) else 0.0
    n_gap = sum(np.isfinite(x["final_gap"]) for x in rows)
    best = [x["best_epoch"] for x in rows]
    n_ep = int(np.max([x["epochs"] for x in rows]))
    stale = float(np.mean([x["kept_epoch"] - x["best_epoch"] for x in rows]))
    on_test = any(x["validated_on_test"] for x in rows)
    # no validation part with both classes: the gap is undefined, not "ok"
    sev = "na" if n_gap == 0 else "high" if gap > GAP_HIGH else "medium" if gap > GAP_MEDIUM else "ok"
    l2_note = ""
    regs = [float(h["reg_loss"].iloc[-1]) for h in run.histories.values()
            if "reg_loss" in h.columns and np.isfinite(h["reg_loss"].iloc[-1])]
    if regs and run.cfg("train.keras_l2"):
        l2_note = (f"Keras adds the L2 penalty on the dense kernels to the loss it prints: here the penalty is "
                   f"{np.mean(regs):.2f} at the last epoch against a data loss of "
                   f"{np.nanmean([x['final_train_loss'] for x in rows]):.2f}, which is why the question's "
                   "training loss stays above 1 at 93% training accuracy")
    gap_f = Finding(
        GAP, "training", "Generalisation gap (learning curves)", sev,
        ("not applicable: no fold's validation part holds both classes, so the train-validation AUC gap "
         "is undefined; " if sev == "na" else "")
        + f"at the last epoch, train AUC {fmt(train_auc)} vs validation AUC {fmt(val_auc)} (gap {fmt(gap)}, "
        f"mean of the {n_gap} of {len(rows)} folds whose validation part has both classes); validation "
        f"loss is lowest at epoch(s) {best} of {n_ep}; "
        f"the kept checkpoint is on average {stale:.1f} epochs after that"
        + ("; validation here is the test fold itself (the question's protocol)" if on_test else ""),
        values={FINAL_GAP: gap, FINAL_TRAIN_AUC: train_auc, FINAL_VAL_AUC: val_auc, BEST_EPOCHS: best,
                EPOCHS: n_ep, STALE: stale, VALIDATED_ON_TEST: on_test, N_FOLDS_WITH_GAP: int(n_gap),
                FOLDS: rows},
        figure="learning_curves",
        meaning=("The validation AUC is undefined on every fold; the verdict compares the train AUC with the "
                 "pooled out-of-fold AUC instead." if sev == "na" else
                 "Training keeps improving while validation stopped early: the network fits the "
                 "training ROIs themselves. Regularisers that the question tried (dropout, L2, batch "
                 "size, focal loss) act after the fact; the gap comes from capacity against data size."
                 if sev != "ok" else "Train and validation agree."),
        fix=("Early stopping on an inner validation split (not the test fold), keep the best checkpoint, "
             "a smaller or pretrained model, augmentation." if sev in ("high", "medium") else ""),
        notes=l2_note)
    ratio = float(np.nanmax([x["osc_ratio"] for x in rows]))
    rel = float(np.nanmean([x["osc_rel_change"] for x in rows]))
    osc = ratio > OSC_RATIO or rel > OSC_REL_CHANGE
    bs = int(run.cfg("train.batch_size", 0) or 0)
    lr = float(run.cfg("train.lr", 0) or 0)
    sched = run.cfg("train.schedule")
    causes = []
    if _has_batchnorm(run) and bs and bs <= SMALL_BATCH:
        causes.append(f"BatchNorm after every layer with batch {bs}: its running statistics, used at "
                      "evaluation, follow the last batches seen, so eval-mode outputs shift from epoch to epoch")
    if lr >= HIGH_LR and sched in (None, "constant"):
        causes.append(f"a constant learning rate of {lr:g} with {run.cfg('train.optimizer', 'adam')}, "
                      "never decayed, keeps the weights moving on a sharp loss surface")
    if run.cfg("train.normalize") == "none":
        causes.append("no input normalisation: components of very different scales share one learning rate")
    sev2 = ("medium" if osc else "ok")
    osc_f = Finding(
        OSCILLATION, "training", "Validation-loss oscillation", sev2,
        f"over the last half of training, validation loss max/min ratio up to {fmt(ratio, 2)} "
        f"(the question's 1.8 to 4.6 swing is 2.5) and mean epoch-to-epoch change "
        f"{fmt(100 * rel, 0)}% of its mean",
        values={MAX_RATIO: ratio, MEAN_REL_CHANGE: rel, OSCILLATING: osc, LIKELY_CAUSES: causes,
                BATCH_SIZE: bs, LR: lr, SCHEDULE: sched},
        figure="learning_curves",
        meaning=("Validation loss jumping between epochs while training loss stays low means the "
                 "evaluation-mode network changes a lot between epochs: likely causes here: "
                 + "; ".join(causes) + "." if osc and causes else
                 "Validation loss oscillates." if osc else "Validation loss is stable late in training."),
        fix=("A learning-rate schedule (cosine, warm-up), fewer BatchNorm layers or larger batches, "
             "fold-fitted normalisation, and model selection on the inner-validation loss." if osc else ""))
    return [gap_f, osc_f]


@register_check("curves", family="training", title="Learning curves", order=30, writes=WRITES)
def check(ctx) -> list[Finding]:
    """The generalisation-gap and oscillation findings of the context's run."""
    return learning_curves(ctx.run)
