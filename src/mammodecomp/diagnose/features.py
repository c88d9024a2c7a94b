"""Evidence from cheap feature models on the run's own folds.

* shortcuts: the AUC of nuisance features alone (lesion size / crop scale,
  mean intensity, background and border fraction, view, source), via
  ``baselines.shortcut_aucs``;
* the null: a label-permutation test of the cheapest recipe (logistic
  regression on texture features) and whether the run's OOF AUC is
  distinguishable from chance (its CI lower bound above 0.5);

  (shortcuts and the null ask about the *data*: for a run on the question's
  contiguous folds they use grouped folds instead, see :func:`probe_plan`)
* the texture-feature baseline against the run's recipe (``stats.compare_aucs``,
  paired on the same ROIs, the patient as the unit);
* the feature ablation (raw ROI vs components vs both) when the study has no
  sibling runs for it (see :mod:`.ablation`).

Texture features are computed once per input and shared by these checks.
"""
from __future__ import annotations

import numpy as np

from . import _baseline_api as api
from ._common import SKIPPED, Finding, fmt
from .checks import register_check

#: a nuisance feature alone reaching this AUC is a shortcut the CNN can take
SHORTCUT_HIGH = 0.70
SHORTCUT_MEDIUM = 0.60
#: permutation p-value above this: the cheapest recipe finds no signal
PERM_ALPHA = 0.05
#: the recipe is "no better than the baseline" when its AUC is below baseline + this
BASELINE_MARGIN = 0.02

# finding ids and the names of the values they write
SHORTCUT = "shortcut.nuisance"
AUCS, STRONGEST, STRONGEST_AUC, RECIPE_AUC, FOLDS = "aucs", "strongest", "strongest_auc", "recipe_auc", "folds"
PERMUTATION = "null.permutation"
OBSERVED, P, NULL, N_PERMUTATIONS, INPUT = "observed", "p", "null", "n_permutations", "input"
#: which model the permutation test is about (the texture-feature baseline, not the recipe)
MODEL = "model"
CHANCE = "null.chance"
AUC, CI_LOW, CI_HIGH, N_ROIS, N_PATIENTS, PREVALENCE = "auc", "ci_low", "ci_high", "n_rois", "n_patients", "prevalence"
#: the headline's definition (stats.headline_auc), its spread over repeats, the repeat-averaged ensemble
AUC_DEFINITION, AUC_SD_REPEATS, N_REPEATS = "auc_definition", "auc_sd_repeats", "n_repeats"
ENSEMBLE_AUC, ENSEMBLE_AUC_CI = "ensemble_auc", "ensemble_auc_ci"
LESION_AUC, LESION_CI, N_LESIONS, VS_CHANCE = "lesion_auc", "lesion_ci", "n_lesions", "vs_chance"
BASELINE = "baseline.texture"
COMPARISONS, BEST_INPUT = "comparisons", "best_input"
#: the model the null is computed for
NULL_MODEL = "texture-feature logistic regression"
WRITES_SHORTCUT = {SHORTCUT: (AUCS, STRONGEST, STRONGEST_AUC, RECIPE_AUC, FOLDS)}
WRITES_NULL = {PERMUTATION: (OBSERVED, P, NULL, N_PERMUTATIONS, INPUT, FOLDS, MODEL),
               CHANCE: (AUC, CI_LOW, CI_HIGH, N_ROIS, N_PATIENTS, PREVALENCE, LESION_AUC, LESION_CI, N_LESIONS,
                        VS_CHANCE, AUC_DEFINITION, AUC_SD_REPEATS, N_REPEATS, ENSEMBLE_AUC, ENSEMBLE_AUC_CI)}
WRITES_BASELINE = {BASELINE: (COMPARISONS, BEST_INPUT)}


class FeatureCache:
    """Texture features of the run's inputs, computed on first use.

    Inputs: ``"raw"`` (the ROI, one channel), ``"components"`` (the
    decomposition, one feature block per component), ``"both"``.
    """

    def __init__(self, run):
        self.run = run
        self._cache: dict = {}

    def _components(self):
        c = self.run.components()
        if c is None:
            return None
        variant = self.run.cfg("decomposition.variant", "components")
        if variant == "components+raw" and c.shape[1] > 1:
            return c[:, :-1]
        if variant == "raw":
            return None
        return c

    def get(self, kind: str):
        if kind in self._cache:
            return self._cache[kind]
        if kind == "raw":
            r = self.run.rois()
            out = None if r is None else api.texture_features(np.asarray(r, dtype=np.float32))
        elif kind == "components":
            c = self._components()
            out = None if c is None else api.texture_features(np.asarray(c, dtype=np.float32))
        elif kind == "both":
            a, b = self.get("raw"), self.get("components")
            out = None if a is None or b is None else np.concatenate([b, a], axis=1)
        else:
            raise ValueError(f"unknown feature input {kind!r}")
        self._cache[kind] = out
        return out

    def default(self):
        """The features of the run's own input variant."""
        v = self.run.cfg("decomposition.variant", "components")
        order = {"raw": ("raw",), "components+raw": ("both", "components", "raw")}.get(
            v, ("components", "raw"))
        for k in order:
            x = self.get(k)
            if x is not None:
                return k, x
        return None, None


def headline(run) -> dict:
    """The run's headline AUC, as ``summary.json`` defines it, with its CI.

    One definition everywhere (:func:`mammodecomp.stats.headline_auc`): the
    mean over repeats of each repeat's pooled out-of-fold AUC, its
    patient-bootstrap CI and its SD over repeats. It is read from
    ``summary.json`` when that was written with this definition, else
    recomputed from ``oof.csv`` the same way. With several repeats the
    repeat-averaged (ensemble) AUC is given beside it as ``ensemble_auc``.
    """
    from ..stats import headline_auc
    p = run.pooled
    y = p["label"].to_numpy()
    s = run.summary or {}
    if "auc_definition" in s and isinstance(s.get("auc_ci"), (list, tuple)):
        h = {k: s.get(k) for k in ("auc", "auc_ci", "auc_definition", "auc_sd_repeats", "ensemble_auc",
                                   "ensemble_auc_ci", "repeat_aucs")}
    elif run.oof["label"].nunique() == 2:
        r = headline_auc(run.oof, n_boot=int(s.get("n_boot") or 1000), seed=0)
        h = {**r, "auc_definition": r["definition"]}
    else:
        h = {"auc": float("nan"), "auc_ci": [float("nan")] * 2, "auc_definition": "undefined (one class)"}
    lo, hi = (float("nan") if v is None else float(v) for v in h["auc_ci"])
    out = {AUC: float("nan") if h["auc"] is None else float(h["auc"]), CI_LOW: lo, CI_HIGH: hi,
           AUC_DEFINITION: h.get("auc_definition"), AUC_SD_REPEATS: h.get("auc_sd_repeats"),
           N_REPEATS: int(run.oof["repeat"].nunique()), N_ROIS: int(len(p)),
           N_PATIENTS: int(p["patient_id"].nunique()), PREVALENCE: float(y.mean()) if len(y) else None}
    if h.get("ensemble_auc") is not None:
        out.update({ENSEMBLE_AUC: h["ensemble_auc"], ENSEMBLE_AUC_CI: h.get("ensemble_auc_ci")})
    les = s.get("lesion")
    if isinstance(les, dict) and "auc" in les:   # views of one lesion pooled (summary.json)
        out.update({LESION_AUC: float(les["auc"]), LESION_CI: [float(v) for v in les["auc_ci"]],
                    N_LESIONS: int(les["n_lesions"])})
    return out


def _ci(out) -> tuple[float, float]:
    if isinstance(out, dict):
        if "ci" in out:
            return float(out["ci"][0]), float(out["ci"][1])
        lo = out.get("low", out.get("ci_low", out.get("lower")))
        hi = out.get("high", out.get("ci_high", out.get("upper")))
        return float(lo), float(hi)
    out = tuple(out)
    return (float(out[-2]), float(out[-1])) if len(out) >= 2 else (float("nan"), float("nan"))


def probe_plan(run):
    """The folds for questions about the *data* (shortcuts, the null).

    The run's own plan, except when the run used the question's contiguous
    folds: on an ordered manifest those break every learner (a fold trained on
    one class), which says nothing about shortcuts or signal; stratified
    patient-grouped folds with the run's seed are used instead.

    Returns
    -------
    (plan or None for the run's own, a phrase naming the folds)
    """
    if run.cfg("cv.scheme") != "contiguous":
        return None, "the run's folds"
    from ..cv import make_split_plan
    plan = make_split_plan(run.manifest, n_folds=int(run.cfg("cv.n_folds", 5)), scheme="grouped",
                           seed=int(run.cfg("cv.seed", 0) or 0))
    return plan, "grouped folds (this run's contiguous folds would confound it)"


def shortcuts(run, recipe_auc: float) -> Finding:
    """AUC of each nuisance feature alone, on the run's folds (grouped folds
    for a contiguous run, see :func:`probe_plan`)."""
    plan, folds_note = probe_plan(run)
    aucs = api.shortcut_aucs(run, plan)
    aucs = {k: v for k, v in aucs.items() if v is not None and np.isfinite(v)}
    if not aucs:
        return Finding(SHORTCUT, "shortcut", "Shortcut features", "info",
                       "no nuisance feature columns to test", values={AUCS: {}, SKIPPED: True})
    # out-of-fold AUC: the direction is learnt on the training part, so an AUC
    # below 0.5 is a failure to transfer (e.g. skewed folds), not a signal
    strength = dict(aucs)
    top = max(strength, key=strength.get)
    s = strength[top]
    sev = "high" if s >= SHORTCUT_HIGH else "medium" if s >= SHORTCUT_MEDIUM else "ok"
    return Finding(
        SHORTCUT, "shortcut", "Shortcut features", sev,
        f"OOF AUC of each nuisance feature alone on {folds_note}: "
        + ", ".join(f"{k} {fmt(v, 2)}" for k, v in sorted(aucs.items(), key=lambda kv: -strength[kv[0]]))
        + f"; the recipe reaches {fmt(recipe_auc)}",
        values={AUCS: aucs, STRONGEST: top, STRONGEST_AUC: s, RECIPE_AUC: recipe_auc,
                FOLDS: "run" if plan is None else "grouped"},
        figure="shortcuts",
        meaning=(f"'{top}' alone separates the classes (AUC {fmt(s, 2)}): a CNN can score by it "
                 "(crop scale, film brightness, border) instead of by the lesion."
                 if sev != "ok" else "No acquisition or cropping feature alone predicts the label."),
        fix=("Crop at a fixed physical field of view (data.fov_mm / crop_mode=fixed), normalise intensity "
             "per ROI, and check the recipe's AUC within strata of that feature." if sev != "ok" else ""))


def _vs_chance(head: dict) -> str:
    """"above", "below" or "includes": the recipe's AUC CI against 0.5."""
    lo, hi = head.get(CI_LOW), head.get(CI_HIGH)
    known = lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi)
    return "above" if known and lo > 0.5 else "below" if known and hi < 0.5 else "includes"


def null_findings(run, feats: FeatureCache, head: dict, n_permutations: int, seed: int) -> list[Finding]:
    """The permutation null of the texture-feature baseline and the recipe's CI vs chance.

    The null is about the baseline, not the recipe: when the baseline is at
    chance but the recipe's CI is above 0.5, the finding says so (severity
    info) instead of calling the data signal-free.
    """
    out = []
    state = _vs_chance(head)
    kind, X = feats.default()
    plan, folds_note = probe_plan(run)
    if X is not None and n_permutations > 0:
        perm = api.permutation_test(X, run, n_permutations=n_permutations, seed=seed, plan=plan)
        p = perm["p"]
        null = np.asarray(perm["null"], dtype=float)
        # with fewer than 1/alpha - 1 permutations p can never reach alpha: no verdict then
        enough = (1.0 / (1 + n_permutations)) <= PERM_ALPHA
        at_chance = enough and p > PERM_ALPHA
        recipe_signal = at_chance and state == "above"
        sev = ("info" if recipe_signal else "high" if at_chance else "ok") if enough else "info"
        if recipe_signal:
            meaning = (f"The {NULL_MODEL} finds no more signal than with shuffled labels, but the recipe does: "
                       f"its AUC CI ({fmt(head.get(CI_LOW))} to {fmt(head.get(CI_HIGH))}) is above 0.5. The "
                       "signal is there, beyond the texture statistics this baseline sees.")
        elif sev == "high":
            meaning = (f"The cheapest recipe ({NULL_MODEL}) finds no more signal than with shuffled labels, and "
                       "the recipe's own AUC CI includes 0.5 or lies below it: the labels may not be learnable "
                       "from these ROIs at this size.")
        else:
            meaning = ("The data carry real signal: a model that does worse than this baseline is the problem, "
                       "not the data.")
        out.append(Finding(
            PERMUTATION, "null", "Label-permutation test (texture-feature baseline)", sev,
            f"texture-feature logistic regression ({kind}, on {folds_note}) OOF AUC {fmt(perm['observed'])} vs "
            f"{len(null)} label permutations (null mean {fmt(np.mean(null) if len(null) else None)}, "
            f"95th percentile {fmt(np.quantile(null, .95) if len(null) else None)}): p = {fmt(p, 3)}",
            values={OBSERVED: perm["observed"], P: p, NULL: null.tolist(), N_PERMUTATIONS: len(null),
                    INPUT: kind, FOLDS: "run" if plan is None else "grouped", MODEL: NULL_MODEL},
            figure="permutation",
            meaning=meaning,
            fix="Check labels and ROI extraction before tuning networks." if sev == "high" else "",
            notes="" if enough else f"{n_permutations} permutations cannot give p <= {PERM_ALPHA}; "
                                    "use --permutations 100 or more for a verdict"))
    else:
        out.append(Finding(PERMUTATION, "null", "Label-permutation test (texture-feature baseline)", "info",
                           "not run (--permutations 0 or no inputs for texture features)",
                           values={SKIPPED: True}))
    lo, hi = head[CI_LOW], head[CI_HIGH]
    above = state == "above"
    out.append(Finding(
        CHANCE, "null", "Is the recipe better than chance?", "ok" if above else "high",
        f"pooled OOF AUC {fmt(head[AUC])} (95% patient-bootstrap CI {fmt(lo)} to {fmt(hi)}); "
        + {"above": "the CI lower bound is above 0.5",
           "below": "the whole CI is below 0.5: the predictions are systematically inverted",
           "includes": "the CI includes 0.5"}[state],
        values={**head, VS_CHANCE: state}, figure="roc",
        meaning={"above": "The recipe beats chance; whether it beats simpler recipes is below.",
                 "below": "Worse than a coin flip: each fold's model learnt a class prior opposite to its "
                          "test fold's, the signature of folds with skewed class ratios.",
                 "includes": "This run cannot be told apart from a coin flip."}[state],
        fix="" if above else "See the causes ranked above; compare with the feature baseline."))
    return out


def baseline_comparison(run, probs: dict) -> Finding:
    """Texture-feature baseline vs the run's recipe on the same ROIs.

    Parameters
    ----------
    probs : input kind -> the baseline's OOF probabilities per manifest row
        (``Context.baseline_probs``).
    """
    from ..stats import compare_aucs
    pooled = run.pooled
    rows = pooled["row"].to_numpy()
    y = pooled["label"].to_numpy()
    res = {}
    for kind, p in probs.items():
        sel = np.isfinite(p[rows])
        if sel.sum() < 4 or len(np.unique(y[sel])) < 2:
            continue
        d = compare_aucs(y[sel], pooled["prob"].to_numpy()[sel], p[rows][sel],
                         pooled["patient_id"].astype(str).to_numpy()[sel])
        res[kind] = {"baseline_auc": float(d["auc2"]), "recipe_auc": float(d["auc1"]),
                     "diff": float(d["diff"]), "ci": [float(d["ci"][0]), float(d["ci"][1])], "p": float(d["p"]),
                     "test": d["test"], "n": int(sel.sum())}
    if not res:
        return Finding(BASELINE, "baseline", "Texture-feature baseline", "info",
                       "not measured: no inputs for texture features", values={SKIPPED: True})
    best = max(res, key=lambda k: res[k]["baseline_auc"])
    b = res[best]
    worse = b["recipe_auc"] < b["baseline_auc"] - BASELINE_MARGIN
    sig = worse and b["p"] < PERM_ALPHA
    sev = "high" if sig else "medium" if worse else "ok"
    return Finding(
        BASELINE, "baseline", "Texture-feature baseline on the same folds", sev,
        "logistic regression on texture features: "
        + "; ".join(f"{k} AUC {fmt(v['baseline_auc'])}" for k, v in res.items())
        + f"; the recipe: {fmt(b['recipe_auc'])} (recipe - best baseline = {fmt(b['diff'])}, "
          f"95% CI {fmt(b['ci'][0])} to {fmt(b['ci'][1])}, {b['test']} p = {fmt(b['p'], 3)})",
        values={COMPARISONS: res, BEST_INPUT: best},
        figure="ablation",
        meaning=("A logistic regression on a few dozen texture numbers per component does better than "
                 "the network: the network has not learnt more than those statistics."
                 if worse else "The network does at least as well as hand-crafted texture features."),
        fix=("Start from the baseline and add capacity only while the paired AUC improves "
             "(recipe small or finetune)." if worse else ""))


@register_check("shortcuts", family="shortcut", title="Shortcuts", order=50, writes=WRITES_SHORTCUT)
def check_shortcuts(ctx) -> list[Finding]:
    """Nuisance features alone against the recipe's AUC."""
    return [shortcuts(ctx.run, ctx.head[AUC])]


@register_check("null", family="null", title="The null: is there signal?", order=60, writes=WRITES_NULL)
def check_null(ctx) -> list[Finding]:
    """The texture baseline's permutation null and the recipe's CI against chance."""
    return null_findings(ctx.run, ctx.feats, ctx.head, ctx.n_permutations, ctx.seed)


@register_check("baseline", family="baseline", title="Baselines on the same folds", order=70,
                writes=WRITES_BASELINE)
def check_baseline(ctx) -> list[Finding]:
    """The texture-feature baseline against the recipe, paired on the same ROIs."""
    return [baseline_comparison(ctx.run, ctx.baseline_probs)]
