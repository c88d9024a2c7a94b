"""The ranked verdict: explicit rules from findings to causes.

Each rule reads the ``values`` of one or more findings, compares them with
named thresholds (the constants below and those of the evidence modules) and,
when it fires, yields a *cause*::

    {"id", "title", "severity", "score", "evidence": [finding ids],
     "figures": [...], "summary", "fix", "measured_fix"}

Causes are ranked by severity (high > medium > low), then by ``score``
(how far past its threshold the evidence is). ``measured_fix`` is filled when
the study holds a sibling run whose recipe removes the cause, with both AUCs
and the paired difference on the same ROIs (``stats.compare_aucs``, its test named).

Rules
-----
* leakage: any patient shared between the training and test parts of a fold
  (high), or near-duplicate ROIs across folds (high above 1% of ROIs, else
  medium). Leakage inflates the test AUC; it hides over-fitting.
* contiguous folds: this run used the question's contiguous folds and their
  malignant fraction deviates from the data set's by more than
  ``split.FOLD_SKEW_HIGH`` (high) or ``split.FOLD_SKEW_MEDIUM`` (medium).
* capacity / training from scratch: parameters per training ROI above
  :data:`~.capacity.PARAMS_PER_ROI_HIGH` *and* a final train-val AUC gap
  above :data:`~.curves.GAP_HIGH` -> high; either alone -> medium.
* training protocol: a gap above ``GAP_MEDIUM`` with the last epoch kept
  more than :data:`~.curves.STALE_EPOCHS` after the best validation loss,
  or model selection on the test fold -> medium.
* unstable training: validation-loss oscillation (ratio above
  :data:`~.curves.OSC_RATIO` or relative change above ``OSC_REL_CHANGE``) -> medium.
* shortcut: a nuisance feature alone with AUC >= ``SHORTCUT_HIGH`` (high) or
  ``SHORTCUT_MEDIUM`` (medium).
* no signal: the feature baseline's permutation p above ``PERM_ALPHA`` -> high.
* baseline beats the network: texture baseline AUC above the recipe's by
  more than ``BASELINE_MARGIN`` (high when the paired p < 0.05, else medium);
  not applied when the contiguous-folds rule fired (on such folds every
  model fails, the comparison is then part of that cause's evidence).
* decomposition: components significantly worse than the raw ROI -> medium.
* skewed folds (not contiguous): class balance finding high or medium -> medium.
* misleading metrics: batch-averaged vs whole-fold F1 gap above
  ``metric.METRIC_GAP_MEDIUM`` -> low (it misleads, it does not over-fit).
"""
from __future__ import annotations

import math

from ._common import fmt

RANK = {"high": 0, "medium": 1, "low": 2}
#: recipes that, in a sibling run, count as the fix for capacity / protocol causes
FIX_RECIPES = ("small", "finetune", "probe")


def _f(findings: dict, fid: str) -> dict:
    return findings.get(fid) or {"severity": "info", "values": {}}


def _v(findings: dict, fid: str, key: str, default=None):
    v = _f(findings, fid)["values"].get(key, default)
    return default if v is None else v


def _measured(comparisons: list[dict], *, need_grouped: bool = False) -> dict | None:
    cands = [c for c in comparisons if c.get("to_recipe") in FIX_RECIPES]
    if need_grouped:
        cands = [c for c in cands if c.get("scheme_to") != "contiguous"] or cands
    if not cands:
        return None
    c = max(cands, key=lambda c: c["diff"])
    text = (f"{c['from']} ({c['from_recipe']}) -> {c['to']} ({c['to_recipe']}) on the same {c['n']} ROIs: "
            f"OOF AUC {fmt(c['auc_b'])} -> {fmt(c['auc_a'])} (difference {fmt(c['diff'])}, 95% CI "
            f"{fmt(c['ci'][0])} to {fmt(c['ci'][1])}, {c.get('test', 'DeLong')} p = {fmt(c['p'], 3)})")
    if c.get("gap_from") is not None and c.get("gap_to") is not None:
        text += f"; train-val AUC gap {fmt(c['gap_from'], 2)} -> {fmt(c['gap_to'], 2)}"
    if not c.get("same_folds"):
        text += f" (folds: {c.get('scheme_from')} -> {c.get('scheme_to')})"
    return {"text": text, **{k: c[k] for k in ("from", "to", "from_recipe", "to_recipe", "auc_a", "auc_b",
                                                "diff", "ci", "p", "n", "gap_from", "gap_to")}}


def rank_causes(findings: list[dict], comparisons: list[dict] | None = None) -> list[dict]:
    """Apply the rules above; return the causes, ranked, each with ``rank``.

    Examples
    --------
    >>> from mammodecomp.diagnose._common import finding
    >>> fs = [finding("capacity.parameters", "capacity", "c", "high", "m",
    ...               values={"params_per_train_roi": 20000.0, "pretrained": False}),
    ...       finding("training.gap", "training", "g", "high", "m", values={"final_gap": 0.4})]
    >>> [c["id"] for c in rank_causes(fs)]
    ['capacity']
    """
    F = {f["id"]: f for f in findings}
    comps = comparisons or []
    causes = []

    def add(id, title, sev, score, evidence, summary, fix, measured=None):
        figs = [F[e]["figure"] for e in evidence if e in F and F[e].get("figure")]
        causes.append({"id": id, "title": title, "severity": sev, "score": float(score),
                       "evidence": list(evidence), "figures": list(dict.fromkeys(figs)),
                       "summary": summary, "fix": fix, "measured_fix": measured})

    # leakage
    sp = _f(F, "split.shared_patients")
    nd = _f(F, "split.near_duplicates")
    if sp["severity"] == "high" or nd["severity"] in ("high", "medium"):
        n_p, n_d = _v(F, "split.shared_patients", "n_shared", 0), _v(F, "split.near_duplicates", "n_pairs", 0)
        add("leakage", "Leakage between training and test folds",
            "high" if (n_p or nd["severity"] == "high") else "medium", n_p + n_d,
            ["split.shared_patients", "split.near_duplicates"],
            f"{n_p} patient(s) and {n_d} near-duplicate pair(s) sit on both sides of a fold: the test AUC "
            "is optimistic.", "Group folds by patient (cv.scheme=grouped); give duplicates one patient_id.")
    # contiguous folds
    mo = _f(F, "split.manifest_order")
    if mo["severity"] in ("high", "medium") and _v(F, "split.manifest_order", "run_used_contiguous", False):
        dev = _v(F, "split.manifest_order", "contiguous_max_deviation", 0.0)
        ordered = _v(F, "split.manifest_order", "label_ordered", False)
        add("contiguous_folds", "Contiguous, unshuffled folds on an ordered manifest", mo["severity"], dev,
            ["split.manifest_order", "split.class_balance"],
            f"kfold_indices slices the table in order; {'the manifest is sorted by label, so ' if ordered else ''}"
            f"test folds hold class ratios up to {fmt(dev, 2)} away from the data set's: each fold trains "
            "on one prior and tests on another.",
            "Stratified folds grouped by patient (cv.scheme=grouped).", _measured(comps, need_grouped=True))
        bc = _v(F, "baseline.texture", "comparisons", {}) or {}
        if bc:
            best = max(bc.values(), key=lambda c: c.get("baseline_auc") or 0)
            causes[-1]["summary"] += (f" On these folds even a texture-feature logistic regression scores AUC "
                                      f"{fmt(best.get('baseline_auc'))}.")
            causes[-1]["evidence"].append("baseline.texture")
    # capacity / from scratch
    ppr = _v(F, "capacity.parameters", "params_per_train_roi", 0.0) or 0.0
    pre = _v(F, "capacity.parameters", "pretrained", False)
    gap = _v(F, "training.gap", "final_gap", 0.0) or 0.0
    from .capacity import PARAMS_PER_ROI_HIGH
    from .curves import GAP_HIGH, GAP_MEDIUM, STALE_EPOCHS
    big = ppr > PARAMS_PER_ROI_HIGH and not pre
    if big or gap > GAP_HIGH:
        sev = "high" if (big and gap > GAP_HIGH) else "medium"
        full = _v(F, "capacity.parameters", "full_scale", None)
        extra = (f" At the question's scale the same network has {full['params'] / 1e6:.1f}M parameters, "
                 f"{full['params_per_train_roi']:,.0f} per training ROI, {full['largest_params'] / 1e6:.1f}M "
                 "of them in the first Dense layer." if isinstance(full, dict) and full.get("params") else "")
        add("capacity", "Too much capacity, trained from scratch" if not pre else "Over-fitting (large gap)",
            sev, math.log10(max(ppr, 1.0)) + 5 * gap, ["capacity.parameters", "training.gap"],
            f"{ppr:,.0f} parameters per training ROI{'' if pre else ', no pretraining'}; train AUC "
            f"{fmt(_v(F, 'training.gap', 'final_train_auc'))} vs validation {fmt(_v(F, 'training.gap', 'final_val_auc'))} "
            f"(gap {fmt(gap, 2)}): " + ("the network memorises the training ROIs." if gap > GAP_HIGH else
                                        "enough free parameters to memorise every training ROI.") + extra,
            "A compact CNN (recipe small) or a pretrained backbone with the sum-preserving stem (recipe "
            "finetune); global pooling instead of Flatten+Dense(4096); augmentation.", _measured(comps))
    # training protocol
    stale = _v(F, "training.gap", "stale_epochs", 0.0) or 0.0
    on_test = _v(F, "training.gap", "validated_on_test", False)
    if gap > GAP_MEDIUM and (stale > STALE_EPOCHS or on_test):
        add("protocol", "Training protocol: last epoch kept, validation on the test fold", "medium",
            stale / 10 + (1 if on_test else 0), ["training.gap"],
            f"the kept checkpoint is {stale:.0f} epochs past the best validation loss on average"
            + ("; the 'validation' curve is the test fold, so any early stopping on it would leak" if on_test else ""),
            "Early stopping and checkpoint choice on an inner validation split of the training part.",
            _measured(comps))
    # oscillation
    osc = _f(F, "training.oscillation")
    if osc["severity"] in ("high", "medium"):
        causes_txt = "; ".join(osc["values"].get("likely_causes") or []) or "unknown"
        add("oscillation", "Unstable training (validation loss swings)", "medium",
            _v(F, "training.oscillation", "max_ratio", 1.0), ["training.oscillation"],
            f"validation loss max/min {fmt(_v(F, 'training.oscillation', 'max_ratio'), 2)} over the last half; "
            f"likely causes: {causes_txt}.",
            "Cosine schedule with warm-up, fold-fitted normalisation, larger batches or fewer BatchNorm layers.",
            _measured(comps))
    # shortcut
    sc = _f(F, "shortcut.nuisance")
    if sc["severity"] in ("high", "medium"):
        add("shortcut", "A nuisance feature predicts the label", sc["severity"],
            _v(F, "shortcut.nuisance", "strongest_auc", 0.5), ["shortcut.nuisance"],
            f"'{_v(F, 'shortcut.nuisance', 'strongest')}' alone reaches AUC "
            f"{fmt(_v(F, 'shortcut.nuisance', 'strongest_auc'), 2)} out of fold.", sc["fix"])
    # no signal
    if _f(F, "null.permutation")["severity"] == "high":
        add("no_signal", "Little signal in the data (permutation null)", "high",
            _v(F, "null.permutation", "p", 1.0), ["null.permutation"],
            f"the feature baseline is not distinguishable from shuffled labels (p = "
            f"{fmt(_v(F, 'null.permutation', 'p'), 3)}).", "Check labels and ROI extraction; more data.")
    # baseline
    bt = _f(F, "baseline.texture")
    contiguous = any(c["id"] == "contiguous_folds" for c in causes)
    if bt["severity"] in ("high", "medium") and not contiguous:   # on broken folds every model fails
        best = _v(F, "baseline.texture", "best_input")
        c = (_v(F, "baseline.texture", "comparisons", {}) or {}).get(best, {})
        add("baseline", "A texture-feature baseline does better", bt["severity"], -c.get("diff", 0.0),
            ["baseline.texture"],
            f"logistic regression on texture features ({best}) AUC {fmt(c.get('baseline_auc'))} vs the "
            f"recipe's {fmt(c.get('recipe_auc'))}.", bt["fix"])
    # decomposition
    ab = _f(F, "ablation.channels")
    if ab["severity"] == "medium":
        add("decomposition", "The decomposition hurts", "medium", 0.5, ["ablation.channels"],
            "components do significantly worse than the raw ROI on the same folds.", ab["fix"])
    # skewed folds (non-contiguous)
    cb = _f(F, "split.class_balance")
    if cb["severity"] in ("high", "medium") and not any(c["id"] == "contiguous_folds" for c in causes):
        add("fold_balance", "Folds with skewed class balance", "medium",
            _v(F, "split.class_balance", "max_deviation", 0.0), ["split.class_balance"],
            f"test-fold malignant fractions deviate by up to {fmt(_v(F, 'split.class_balance', 'max_deviation'), 2)}.",
            cb["fix"])
    # misleading metrics
    if _f(F, "metric.batchwise")["severity"] == "medium":
        add("metrics", "Batch-averaged metrics mislead", "low",
            _v(F, "metric.batchwise", "max_gap_f1", 0.0), ["metric.batchwise"],
            f"the batch-averaged f1_m differs from the fold's F1 by up to "
            f"{fmt(_v(F, 'metric.batchwise', 'max_gap_f1'), 2)}.",
            "Whole-fold metrics; AUC with a patient-bootstrap CI.")
    causes.sort(key=lambda c: (RANK[c["severity"]], -c["score"]))
    for i, c in enumerate(causes, 1):
        c["rank"] = i
    return causes
