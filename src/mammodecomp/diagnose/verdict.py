"""The ranked verdict: explicit rules from findings to causes.

Each rule is registered with :func:`rule` and the finding ids and value
names it reads (the constants the family modules export, never bare
strings); it reads them through an :class:`Evidence` view that refuses any
other, compares them with named thresholds and, when its own evidence shows
the cause, returns a :class:`Cause`::

    {"id", "title", "severity", "score", "evidence": [finding ids],
     "figures": [...], "summary", "fix", "measured_fix", "rank"}

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
* capacity: needs a generalisation gap, train AUC above validation AUC (or,
  where no validation part holds both classes, above the pooled OOF AUC) by
  more than :data:`~.curves.GAP_MEDIUM`. Then parameters per training ROI
  above :data:`~.capacity.PARAMS_PER_ROI_HIGH` without pretraining *and* a
  gap above :data:`~.curves.GAP_HIGH` -> high; either alone -> medium. A
  pretrained model (the probe: a regression on frozen features, whose
  parameters are the regression's) is never "trained from scratch".
* training protocol: a gap above ``GAP_MEDIUM`` with the last epoch kept
  more than :data:`~.curves.STALE_EPOCHS` after the best validation loss,
  or model selection on the test fold -> medium.
* unstable training: validation-loss oscillation (ratio above
  :data:`~.curves.OSC_RATIO` or relative change above ``OSC_REL_CHANGE``) -> medium.
* shortcut: a nuisance feature alone with AUC >= ``SHORTCUT_HIGH`` (high) or
  ``SHORTCUT_MEDIUM`` (medium).
* no signal: the texture-feature baseline's permutation p above
  ``PERM_ALPHA`` *and* the recipe's own AUC CI not above 0.5 -> high (a
  recipe above chance is never called signal-free).
* baseline beats the network: texture baseline AUC above the recipe's by
  more than ``BASELINE_MARGIN`` (high when the paired p < 0.05, else medium);
  not applied on contiguous folds that skew the classes (there every model
  fails; the comparison is then part of that cause's evidence).
* decomposition: components significantly worse than the raw ROI -> medium.
* skewed folds (not contiguous): class balance finding high or medium -> medium.
* misleading metrics: batch-averaged vs whole-fold F1 gap above
  ``metric.METRIC_GAP_MEDIUM`` -> low (it misleads, it does not over-fit);
  not applicable (no cause) when no test fold has both classes over two batches.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable

from ..registry import Registry
from . import ablation as ab
from . import capacity as cap
from . import curves as cu
from . import features as fe
from . import metric as me
from . import split as sp
from ._common import Finding, fmt

RANK = {"high": 0, "medium": 1, "low": 2}
#: recipes that, in a sibling run, count as the fix for capacity / protocol causes
FIX_RECIPES = ("small", "finetune", "probe")

#: name -> :class:`Rule`, filled by :func:`rule` below
RULES = Registry("verdict rule")


@dataclass
class Cause:
    """One ranked cause of over-fitting (``figures`` and ``rank`` are filled by :func:`rank_causes`)."""

    id: str
    title: str
    severity: str
    score: float
    evidence: list
    summary: str
    fix: str
    measured_fix: dict | None = None
    figures: list = field(default_factory=list)


@dataclass(frozen=True)
class Rule:
    """A verdict rule: ``fn(Evidence) -> Cause | None``, reading only ``reads``
    (finding id -> value names; an empty tuple reads the severity only)."""

    name: str
    order: int
    reads: dict
    fn: Callable = field(repr=False)


def rule(name: str, *, order: int, reads: dict) -> Callable:
    """Decorator: register a rule reading the findings' values named in *reads*."""
    def deco(fn):
        RULES.register(name)(Rule(name=name, order=order, reads={k: tuple(v) for k, v in reads.items()}, fn=fn))
        return fn
    return deco


def rules() -> list[Rule]:
    """The registered rules, in order."""
    return sorted((RULES.get(n) for n in RULES), key=lambda r: r.order)


class Evidence:
    """Read access to the findings for one rule.

    ``value(fid, name)`` is None when the finding is absent or was not
    measured, raises ``KeyError`` when a measured finding lacks the value (a
    check that does not write what it declares) and when the rule did not
    declare the read.
    """

    def __init__(self, findings: dict, comparisons: list, reads: dict | None = None):
        self._findings = findings
        self.comparisons = comparisons
        self._reads = reads

    def for_rule(self, r: Rule) -> "Evidence":
        return Evidence(self._findings, self.comparisons, r.reads)

    def _declared(self, fid: str, name: str | None = None) -> None:
        if self._reads is not None and (fid not in self._reads or (name is not None and name not in self._reads[fid])):
            raise KeyError(f"rule reads {fid}{'.' + name if name else ''} without declaring it")

    def finding(self, fid: str) -> Finding | None:
        self._declared(fid)
        return self._findings.get(fid)

    def severity(self, fid: str) -> str:
        """The finding's severity; "info" when absent."""
        f = self.finding(fid)
        return "info" if f is None else f.severity

    def value(self, fid: str, name: str):
        self._declared(fid, name)
        f = self._findings.get(fid)
        if f is None or f.skipped:
            return None
        if name not in f.values:
            raise KeyError(f"finding {fid} does not write value {name!r}")
        return f.values[name]


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


def _finite(v) -> bool:
    return v is not None and math.isfinite(float(v))


# ---------------------------------------------------------------- shared evidence
_GAP_READS = {cu.GAP: (cu.FINAL_GAP, cu.FINAL_TRAIN_AUC, cu.FINAL_VAL_AUC, cu.N_FOLDS_WITH_GAP),
              fe.CHANCE: (fe.AUC,)}


def generalisation_gap(ev: Evidence) -> tuple[float, float, float, str] | None:
    """``(gap, train AUC, other AUC, against)``: train minus validation AUC over
    the folds whose validation part has both classes; where none has, train
    minus the pooled out-of-fold AUC. None when neither is measured."""
    train = ev.value(cu.GAP, cu.FINAL_TRAIN_AUC)
    if (ev.value(cu.GAP, cu.N_FOLDS_WITH_GAP) or 0) > 0:
        return float(ev.value(cu.GAP, cu.FINAL_GAP)), train, ev.value(cu.GAP, cu.FINAL_VAL_AUC), "validation"
    oof = ev.value(fe.CHANCE, fe.AUC)
    if _finite(train) and _finite(oof):
        return float(train) - float(oof), float(train), float(oof), "out-of-fold"
    return None


_CONTIGUOUS_READS = {sp.MANIFEST_ORDER: (sp.RUN_USED_CONTIGUOUS, sp.CONTIGUOUS_MAX_DEVIATION, sp.LABEL_ORDERED)}


def contiguous_skew(ev: Evidence) -> bool:
    """This run used the question's contiguous folds and they skew the classes."""
    return (ev.severity(sp.MANIFEST_ORDER) in ("high", "medium")
            and bool(ev.value(sp.MANIFEST_ORDER, sp.RUN_USED_CONTIGUOUS)))


def _merge(*reads: dict) -> dict:
    out: dict = {}
    for r in reads:
        for k, v in r.items():
            out[k] = tuple(dict.fromkeys(out.get(k, ()) + tuple(v)))
    return out


# ---------------------------------------------------------------- rules
@rule("leakage", order=10, reads={sp.SHARED_PATIENTS: (sp.N_SHARED,), sp.NEAR_DUPLICATES: (sp.N_PAIRS,)})
def _leakage(ev: Evidence) -> Cause | None:
    nd_sev = ev.severity(sp.NEAR_DUPLICATES)
    if not (ev.severity(sp.SHARED_PATIENTS) == "high" or nd_sev in ("high", "medium")):
        return None
    n_p = ev.value(sp.SHARED_PATIENTS, sp.N_SHARED) or 0
    n_d = ev.value(sp.NEAR_DUPLICATES, sp.N_PAIRS) or 0
    return Cause("leakage", "Leakage between training and test folds",
                 "high" if (n_p or nd_sev == "high") else "medium", n_p + n_d,
                 [sp.SHARED_PATIENTS, sp.NEAR_DUPLICATES],
                 f"{n_p} patient(s) and {n_d} near-duplicate pair(s) sit on both sides of a fold: the test AUC "
                 "is optimistic.", "Group folds by patient (cv.scheme=grouped); give duplicates one patient_id.")


@rule("contiguous_folds", order=20,
      reads=_merge(_CONTIGUOUS_READS, {sp.CLASS_BALANCE: (), fe.BASELINE: (fe.COMPARISONS,)}))
def _contiguous(ev: Evidence) -> Cause | None:
    if not contiguous_skew(ev):
        return None
    dev = ev.value(sp.MANIFEST_ORDER, sp.CONTIGUOUS_MAX_DEVIATION) or 0.0
    ordered = ev.value(sp.MANIFEST_ORDER, sp.LABEL_ORDERED)
    c = Cause("contiguous_folds", "Contiguous, unshuffled folds on an ordered manifest",
              ev.severity(sp.MANIFEST_ORDER), dev, [sp.MANIFEST_ORDER, sp.CLASS_BALANCE],
              f"kfold_indices slices the table in order; {'the manifest is sorted by label, so ' if ordered else ''}"
              f"test folds hold class ratios up to {fmt(dev, 2)} away from the data set's: each fold trains "
              "on one prior and tests on another.",
              "Stratified folds grouped by patient (cv.scheme=grouped).",
              _measured(ev.comparisons, need_grouped=True))
    bc = ev.value(fe.BASELINE, fe.COMPARISONS) or {}
    if bc:
        best = max(bc.values(), key=lambda c: c.get("baseline_auc") or 0)
        c.summary += (f" On these folds even a texture-feature logistic regression scores AUC "
                      f"{fmt(best.get('baseline_auc'))}.")
        c.evidence.append(fe.BASELINE)
    return c


@rule("capacity", order=30,
      reads=_merge(_GAP_READS, {cap.PARAMETERS: (cap.PARAMS_PER_TRAIN_ROI, cap.PRETRAINED, cap.FULL_SCALE,
                                                 cap.PROBE_FEATURES)}))
def _capacity(ev: Evidence) -> Cause | None:
    g = generalisation_gap(ev)
    if g is None or not g[0] > cu.GAP_MEDIUM:
        return None                       # no generalisation gap: capacity is not what went wrong
    gap, train_auc, other_auc, against = g
    ppr = ev.value(cap.PARAMETERS, cap.PARAMS_PER_TRAIN_ROI)
    pre = bool(ev.value(cap.PARAMETERS, cap.PRETRAINED))
    probe = ev.value(cap.PARAMETERS, cap.PROBE_FEATURES)
    big = (ppr or 0.0) > cap.PARAMS_PER_ROI_HIGH and not pre
    if not (big or gap > cu.GAP_HIGH):
        return None
    sev = "high" if (big and gap > cu.GAP_HIGH) else "medium"
    full = ev.value(cap.PARAMETERS, cap.FULL_SCALE)
    extra = (f" At the question's scale the same network has {full['params'] / 1e6:.1f}M parameters, "
             f"{full['params_per_train_roi']:,.0f} per training ROI, {full['largest_params'] / 1e6:.1f}M "
             "of them in the first Dense layer." if isinstance(full, dict) and full.get("params") else "")
    if probe is not None:
        size = (f"{ppr:,.1f} parameters per training ROI (a logistic regression on {probe:,} frozen pretrained "
                "features)")
    elif ppr is None:
        size = "parameters per training ROI not measured" + ("" if pre else ", no pretraining")
    else:
        size = f"{ppr:,.0f} parameters per training ROI{'' if pre else ', no pretraining'}"
    return Cause(
        "capacity", "Too much capacity, trained from scratch" if not pre else "Over-fitting (large gap)",
        sev, math.log10(max(ppr or 1.0, 1.0)) + 5 * gap, [cap.PARAMETERS, cu.GAP],
        f"{size}; train AUC {fmt(train_auc)} vs {against} {fmt(other_auc)} (gap {fmt(gap, 2)}): "
        + ("the network memorises the training ROIs." if gap > cu.GAP_HIGH else
           "enough free parameters to memorise every training ROI.") + extra,
        "A compact CNN (recipe small) or a pretrained backbone with the sum-preserving stem (recipe "
        "finetune); global pooling instead of Flatten+Dense(4096); augmentation.", _measured(ev.comparisons))


@rule("protocol", order=40, reads=_merge(_GAP_READS, {cu.GAP: (cu.STALE, cu.VALIDATED_ON_TEST)}))
def _protocol(ev: Evidence) -> Cause | None:
    g = generalisation_gap(ev)
    stale = ev.value(cu.GAP, cu.STALE) or 0.0
    on_test = bool(ev.value(cu.GAP, cu.VALIDATED_ON_TEST))
    if g is None or not g[0] > cu.GAP_MEDIUM or not (stale > cu.STALE_EPOCHS or on_test):
        return None
    return Cause("protocol", "Training protocol: last epoch kept, validation on the test fold", "medium",
                 stale / 10 + (1 if on_test else 0), [cu.GAP],
                 f"the kept checkpoint is {stale:.0f} epochs past the best validation loss on average"
                 + ("; the 'validation' curve is the test fold, so any early stopping on it would leak"
                    if on_test else ""),
                 "Early stopping and checkpoint choice on an inner validation split of the training part.",
                 _measured(ev.comparisons))


@rule("oscillation", order=50, reads={cu.OSCILLATION: (cu.MAX_RATIO, cu.LIKELY_CAUSES)})
def _oscillation(ev: Evidence) -> Cause | None:
    if ev.severity(cu.OSCILLATION) not in ("high", "medium"):
        return None
    causes_txt = "; ".join(ev.value(cu.OSCILLATION, cu.LIKELY_CAUSES) or []) or "unknown"
    ratio = ev.value(cu.OSCILLATION, cu.MAX_RATIO)
    return Cause("oscillation", "Unstable training (validation loss swings)", "medium",
                 1.0 if ratio is None else ratio, [cu.OSCILLATION],
                 f"validation loss max/min {fmt(ratio, 2)} over the last half; likely causes: {causes_txt}.",
                 "Cosine schedule with warm-up, fold-fitted normalisation, larger batches or fewer BatchNorm layers.",
                 _measured(ev.comparisons))


@rule("shortcut", order=60, reads={fe.SHORTCUT: (fe.STRONGEST, fe.STRONGEST_AUC)})
def _shortcut(ev: Evidence) -> Cause | None:
    sev = ev.severity(fe.SHORTCUT)
    if sev not in ("high", "medium"):
        return None
    auc = ev.value(fe.SHORTCUT, fe.STRONGEST_AUC)
    return Cause("shortcut", "A nuisance feature predicts the label", sev, 0.5 if auc is None else auc,
                 [fe.SHORTCUT],
                 f"'{ev.value(fe.SHORTCUT, fe.STRONGEST)}' alone reaches AUC {fmt(auc, 2)} out of fold.",
                 ev.finding(fe.SHORTCUT).fix)


@rule("no_signal", order=70, reads={fe.PERMUTATION: (fe.P, fe.MODEL),
                                     fe.CHANCE: (fe.VS_CHANCE, fe.CI_LOW, fe.CI_HIGH)})
def _no_signal(ev: Evidence) -> Cause | None:
    state = ev.value(fe.CHANCE, fe.VS_CHANCE)
    if ev.severity(fe.PERMUTATION) != "high" or state == "above":
        return None                       # the recipe above chance is signal, whatever the baseline does
    p = ev.value(fe.PERMUTATION, fe.P)
    ci = f"{fmt(ev.value(fe.CHANCE, fe.CI_LOW))} to {fmt(ev.value(fe.CHANCE, fe.CI_HIGH))}"
    recipe = {"below": f"the recipe's AUC CI ({ci}) lies below 0.5",
              "includes": f"the recipe's AUC CI ({ci}) includes 0.5"}.get(state, "the recipe's CI is unknown")
    return Cause("no_signal", "Little signal in the data (permutation null)", "high", 1.0 if p is None else p,
                 [fe.PERMUTATION, fe.CHANCE],
                 f"the {ev.value(fe.PERMUTATION, fe.MODEL) or fe.NULL_MODEL} is not distinguishable from shuffled "
                 f"labels (p = {fmt(p, 3)}), and {recipe}.", "Check labels and ROI extraction; more data.")


@rule("baseline", order=80, reads=_merge(_CONTIGUOUS_READS, {fe.BASELINE: (fe.BEST_INPUT, fe.COMPARISONS)}))
def _baseline(ev: Evidence) -> Cause | None:
    sev = ev.severity(fe.BASELINE)
    if sev not in ("high", "medium") or contiguous_skew(ev):   # on broken folds every model fails
        return None
    best = ev.value(fe.BASELINE, fe.BEST_INPUT)
    c = (ev.value(fe.BASELINE, fe.COMPARISONS) or {}).get(best, {})
    return Cause("baseline", "A texture-feature baseline does better", sev, -c.get("diff", 0.0), [fe.BASELINE],
                 f"logistic regression on texture features ({best}) AUC {fmt(c.get('baseline_auc'))} vs the "
                 f"recipe's {fmt(c.get('recipe_auc'))}.", ev.finding(fe.BASELINE).fix)


@rule("decomposition", order=90, reads={ab.CHANNELS: ()})
def _decomposition(ev: Evidence) -> Cause | None:
    if ev.severity(ab.CHANNELS) != "medium":
        return None
    return Cause("decomposition", "The decomposition hurts", "medium", 0.5, [ab.CHANNELS],
                 "components do significantly worse than the raw ROI on the same folds.",
                 ev.finding(ab.CHANNELS).fix)


@rule("fold_balance", order=100, reads=_merge(_CONTIGUOUS_READS, {sp.CLASS_BALANCE: (sp.MAX_DEVIATION,)}))
def _fold_balance(ev: Evidence) -> Cause | None:
    if ev.severity(sp.CLASS_BALANCE) not in ("high", "medium") or contiguous_skew(ev):
        return None
    dev = ev.value(sp.CLASS_BALANCE, sp.MAX_DEVIATION)
    return Cause("fold_balance", "Folds with skewed class balance", "medium", dev or 0.0, [sp.CLASS_BALANCE],
                 f"test-fold malignant fractions deviate by up to {fmt(dev, 2)}.",
                 ev.finding(sp.CLASS_BALANCE).fix)


@rule("metrics", order=110, reads={me.BATCHWISE: (me.MAX_GAP_F1,)})
def _metrics(ev: Evidence) -> Cause | None:
    if ev.severity(me.BATCHWISE) != "medium":     # "na": the comparison is undefined on this run
        return None
    gap = ev.value(me.BATCHWISE, me.MAX_GAP_F1)
    return Cause("metrics", "Batch-averaged metrics mislead", "low", gap or 0.0, [me.BATCHWISE],
                 f"the batch-averaged f1_m differs from the fold's F1 by up to {fmt(gap, 2)}.",
                 "Whole-fold metrics; AUC with a patient-bootstrap CI.")


def rank_causes(findings: list, comparisons: list[dict] | None = None) -> list[dict]:
    """Apply the rules above; return the causes, ranked, each with ``rank``.

    Parameters
    ----------
    findings : :class:`~._common.Finding` objects (or their dicts).
    comparisons : the study's recipe comparisons (for ``measured_fix``).

    Examples
    --------
    >>> fs = [Finding("capacity.parameters", "capacity", "c", "high", "m",
    ...               values={"params_per_train_roi": 20000.0, "pretrained": False, "full_scale": None,
    ...                       "probe_features": None}),
    ...       Finding("training.gap", "training", "g", "high", "m",
    ...               values={"final_gap": 0.4, "final_train_auc": 1.0, "final_val_auc": 0.6,
    ...                       "n_folds_with_gap": 3, "stale_epochs": 0, "validated_on_test": False})]
    >>> [c["id"] for c in rank_causes(fs)]
    ['capacity']
    """
    F = {}
    for f in findings:
        f = f if isinstance(f, Finding) else Finding(**f)
        F[f.id] = f
    ev = Evidence(F, comparisons or [])
    causes = []
    for r in rules():
        c = r.fn(ev.for_rule(r))
        if c is None:
            continue
        figs = [F[e].figure for e in c.evidence if e in F and F[e].figure]
        c.figures = list(dict.fromkeys(figs))
        causes.append(c)
    causes.sort(key=lambda c: (RANK[c.severity], -c.score))
    out = []
    for i, c in enumerate(causes, 1):
        d = asdict(c)
        d["score"] = float(d["score"])
        d["rank"] = i
        out.append(d)
    return out
