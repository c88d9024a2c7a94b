"""Ablation (raw ROI vs components vs both) and recipe comparisons.

Paired comparisons use :func:`mammodecomp.stats.compare_aucs` on the
out-of-fold probabilities of the ROIs that both arms tested (one prediction
per ROI, averaged over repeats), with the patient as the unit: Obuchowski's
clustered variance when a patient has several ROIs, DeLong's test only when
every patient has one; each comparison names its ``test``. When both runs
repeat the same folds several times, Nadeau and Bengio's corrected resampled
t-test on the per-fold AUC differences is given beside it (``repeated_cv``).
In a study directory the arms are the sibling runs, recognised by their
``decomposition.variant`` (ablation) or ``recipe`` (recipe comparison);
without siblings the ablation is done with the texture-feature baseline on
the run's folds.
"""
from __future__ import annotations

import numpy as np

from ._common import SKIPPED, Finding, fmt, safe_auc
from .checks import register_check

#: p-value below which a paired AUC difference counts
ALPHA = 0.05
#: pairs compared in the ablation: (arm A, arm B) reported as A - B
ABLATION_PAIRS = [("components", "raw"), ("components+raw", "raw"), ("components+raw", "components")]

# finding id and the names of the values it writes
CHANNELS = "ablation.channels"
SOURCE, COMPARISONS = "source", "comparisons"
WRITES = {CHANNELS: (SOURCE, COMPARISONS)}


def _same_folds(a, b) -> bool:
    ta = a.plan[a.plan["role"] == "test"].set_index(["repeat", "roi_id"])["fold"]
    tb = b.plan[b.plan["role"] == "test"].set_index(["repeat", "roi_id"])["fold"]
    return len(ta) == len(tb) and bool((ta.sort_index() == tb.reindex(ta.sort_index().index)).all())


def paired(y_a, p_a, p_b, groups=None) -> dict:
    """Paired comparison of two probability vectors on the same labels
    (:func:`mammodecomp.stats.compare_aucs`; ``groups``: patient per ROI)."""
    from ..stats import compare_aucs
    d = compare_aucs(np.asarray(y_a), np.asarray(p_a, dtype=float), np.asarray(p_b, dtype=float), groups)
    return {"auc_a": float(d["auc1"]), "auc_b": float(d["auc2"]), "diff": float(d["diff"]),
            "ci": [float(d["ci"][0]), float(d["ci"][1])], "p": float(d["p"]), "test": d["test"],
            "n_patients": int(d["n_patients"])}


def compare_runs(a, b) -> dict | None:
    """Run *a* vs run *b* on the ROIs both tested."""
    pa = a.pooled.set_index("roi_id")
    pb = b.pooled.set_index("roi_id")
    common = pa.index.intersection(pb.index)
    if len(common) < 4:
        return None
    y = pa.loc[common, "label"].to_numpy()
    if len(np.unique(y)) < 2:
        return None
    out = paired(y, pa.loc[common, "prob"].to_numpy(), pb.loc[common, "prob"].to_numpy(),
                 pa.loc[common, "patient_id"].astype(str).to_numpy())
    out.update({"a": a.name, "b": b.name, "n": int(len(common)), "same_folds": _same_folds(a, b)})
    if out["same_folds"] and a.oof["repeat"].nunique() > 1:
        from ..stats import compare_repeated_cv
        nb = compare_repeated_cv(a.oof, b.oof, n_total=len(a.manifest))
        if nb is not None:
            out["repeated_cv"] = nb
    return out


def _variant(run) -> str:
    return str(run.cfg("decomposition.variant", "components"))


def ablation_arms(study) -> dict:
    """variant -> run for the ablation: the runs of one recipe that differ by
    input variant; the primary's recipe when it has two variants or more,
    else the recipe with the most variants."""
    groups: dict = {}
    for r in [study.primary, *study.siblings.values()]:
        groups.setdefault(r.recipe, {}).setdefault(_variant(r), r)
    own = groups.get(study.primary.recipe, {})
    if len(own) >= 2:
        return own
    best = max(groups.values(), key=len)
    return best if len(best) >= 2 else {}


def ablation(study, baseline_probs=None, feats=None) -> Finding:
    """The input ablation finding.

    Parameters
    ----------
    study : :class:`mammodecomp.rundir.Study`.
    baseline_probs : feature-baseline OOF probabilities per input kind
        (``{"raw": p, "components": p}`` per manifest row), or a zero-argument
        callable giving them, called only when the study has no ablation arms.
    feats : :class:`~.features.FeatureCache` to compute the "both" arm.
    """
    run = study.primary
    arms = ablation_arms(study)
    comps = []
    source = "runs"
    if len(arms) >= 2:
        for a, b in ABLATION_PAIRS:
            if a in arms and b in arms:
                c = compare_runs(arms[a], arms[b])
                if c:
                    c.update({"a": a, "b": b, "a_run": arms[a].name, "b_run": arms[b].name,
                              "recipe": arms[a].recipe})
                    comps.append(c)
    if not comps and feats is not None:
        source = "feature baseline"
        from . import _baseline_api as api
        probs = dict((baseline_probs() if callable(baseline_probs) else baseline_probs) or {})
        for kind in ("raw", "components", "both"):
            if kind not in probs:
                X = feats.get(kind)
                if X is not None:
                    probs[kind] = api.oof_probs(X, run)
        names = {"raw": "raw", "components": "components", "both": "components+raw"}
        probs = {names[k]: v for k, v in probs.items()}
        y_all = run.manifest["label"].astype(int).to_numpy()
        for a, b in ABLATION_PAIRS:
            if a in probs and b in probs:
                sel = np.isfinite(probs[a]) & np.isfinite(probs[b])
                if sel.sum() >= 4 and len(np.unique(y_all[sel])) == 2:
                    c = paired(y_all[sel], probs[a][sel], probs[b][sel],
                               run.manifest["patient_id"].astype(str).to_numpy()[sel])
                    c.update({"a": a, "b": b, "n": int(sel.sum()), "same_folds": True})
                    comps.append(c)
    if not comps:
        return Finding(CHANNELS, "ablation", "Ablation: raw ROI vs components", "info",
                       "not measured: no sibling runs and no inputs for the feature ablation",
                       values={SKIPPED: True, COMPARISONS: []})
    gain = [c for c in comps if c["a"] != "components+raw" or c["b"] == "raw"]
    sig_pos = [c for c in gain if c["diff"] > 0 and c["p"] < ALPHA]
    sig_neg = [c for c in gain if c["diff"] < 0 and c["p"] < ALPHA]
    cr = next((c for c in comps if (c["a"], c["b"]) == ("components", "raw")), comps[0])
    sev = "medium" if sig_neg else "low" if not sig_pos else "ok"
    text = f"paired OOF AUC differences ({source}): " + "; ".join(
        f"{c['a']} - {c['b']} = {fmt(c['diff'])} (95% CI {fmt(c['ci'][0])} to {fmt(c['ci'][1])}, "
        f"{c['test']} p = {fmt(c['p'], 3)}; AUC {fmt(c['auc_a'])} vs {fmt(c['auc_b'])}"
        + (f"; over the {c['repeated_cv']['n_folds']} folds of the repeats, Nadeau-Bengio p = "
           f"{fmt(c['repeated_cv']['p'], 3)}" if c.get("repeated_cv") else "") + ")" for c in comps)
    return Finding(
        CHANNELS, "ablation", "Ablation: raw ROI vs components vs both", sev, text,
        values={SOURCE: source, COMPARISONS: comps},
        figure="ablation",
        meaning=("The decomposition does worse than the raw ROI: splitting the image into components "
                 "removes or scatters what the model needs." if sig_neg else
                 "The components add no measurable AUC over the raw ROI on these folds; the decomposition "
                 "is not where the problem or the gain lies." if not sig_pos else
                 f"The components add AUC over the raw ROI ({fmt(cr['diff'])})."),
        fix=("Feed the raw ROI (or components + raw) and keep the decomposition only if a paired test "
             "shows a gain." if sev != "ok" else ""),
        notes=f"arms from sibling runs of recipe '{comps[0].get('recipe')}'" if source == "runs" else
              "arms from the texture-feature baseline (no sibling runs in a study directory)")


def recipe_comparisons(study) -> list[dict]:
    """The primary run vs each sibling with another recipe (same input variant):
    AUCs, their paired difference (``compare_aucs``, the test named), and the
    train-val gap of each."""
    from .curves import fold_curve_stats
    run = study.primary
    out = []
    for s in study.siblings.values():
        if s.recipe == run.recipe or _variant(s) != _variant(run):
            continue
        c = compare_runs(s, run)
        if c is None:
            continue

        def gap(r):
            g = [fold_curve_stats(h)["final_gap"] for h in r.histories.values()]
            return float(np.nanmean(g)) if g else None
        c.update({"from": run.name, "from_recipe": run.recipe, "to": s.name, "to_recipe": s.recipe,
                  "gap_from": gap(run), "gap_to": gap(s),
                  "scheme_from": run.cfg("cv.scheme"), "scheme_to": s.cfg("cv.scheme"),
                  "pretrained_to": bool(s.cfg("model.pretrained", False)),
                  "model_to": s.cfg("model.name"),
                  "auc_from_all": safe_auc(run.pooled["label"], run.pooled["prob"]),
                  "auc_to_all": safe_auc(s.pooled["label"], s.pooled["prob"])})
        out.append(c)
    out.sort(key=lambda c: -c["diff"])
    return out


@register_check("ablation", family="ablation", title="Ablation: raw vs components", order=80, writes=WRITES)
def check(ctx) -> list[Finding]:
    """The input ablation: sibling runs of the study, else the feature baseline."""
    return [ablation(ctx.study, lambda: ctx.baseline_probs, ctx.feats)]
