"""The report's statistics section: operating points, calibration, subgroups.

:func:`render` only renders: every number comes from ``summary.json``
(``operating_points``, ``calibration``, ``subgroups``, written by
:func:`mammodecomp.metrics.pooled_oof_summary` at cross-validation time, see
:mod:`mammodecomp.stats`). A run written before those keys existed gets a
line saying so and the command that fills them, not numbers computed here.

Invariants
----------
* Every text from the data is HTML-escaped; the one figure is an inline
  ``data:image/png;base64`` URI (the report stays self-contained).
* A subgroup with fewer than ``stats.MIN_CLASS`` ROIs of either class shows
  "too small", never a number.
* Every CI is labelled with its unit of resampling (the patient).
"""
from __future__ import annotations

import html

import numpy as np

from . import plots

__all__ = ["render", "calibration_curve_figure"]

_OP_ROWS = [("sens_at_90_spec", "sensitivity at 90% specificity"),
            ("spec_at_90_sens", "specificity at 90% sensitivity"),
            ("pauc_fpr_0.2", "partial AUC, FPR <= 0.2 (McClish-standardised; chance 0.5)"),
            ("brier", "Brier score (lower is better)")]
_CAL_ROWS = [("slope", "calibration slope (ideal 1; below 1: over-confident)"),
             ("intercept", "calibration intercept, slope fixed at 1 (ideal 0)"),
             ("ece", "expected calibration error (10 equal-width bins)")]


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _num(v, nd: int = 3) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return f"{v:.{nd}f}" if np.isfinite(v) else "n/a"


def _ci(c) -> str:
    if not isinstance(c, (list, tuple)) or len(c) != 2 or c[0] is None or c[1] is None:
        return "n/a"
    return f"[{_num(c[0])}, {_num(c[1])}]"


def _stat_rows(block: dict, rows) -> str:
    out = []
    for key, label in rows:
        s = block.get(key)
        if not isinstance(s, dict):
            continue
        sd = s.get("sd_repeats")
        out.append(f"<tr><td>{_e(label)}</td><td>{_num(s.get('estimate'))}</td><td>{_ci(s.get('ci'))}</td>"
                   f"<td>{'' if sd is None else _num(sd)}</td></tr>")
    return ("<table><tr><th>measure</th><th>estimate</th><th>95% CI (patient bootstrap)</th>"
            f"<th>SD over repeats</th></tr>{''.join(out)}</table>") if out else ""


def calibration_curve_figure(curve: dict, slope=None, intercept=None) -> str:
    """Reliability diagram from a stored ``sklearn.calibration.calibration_curve``
    (``prob_pred, prob_true, count``) with the ROIs per bin below it."""
    fig, axes = plots._fig(5.2, 4.4, nrows=2)
    pp = np.asarray(curve["prob_pred"], float)
    pt = np.asarray(curve["prob_true"], float)
    n = np.asarray(curve["count"], float)
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    ax.plot(pp, pt, "o-", color="#2c3e50", label="pooled OOF (sklearn calibration_curve)")
    title = "Calibration"
    if slope is not None:
        title += f": slope {_num(slope, 2)}, intercept {_num(intercept, 2)}"
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability (bin)",
           ylabel="observed malignant fraction", title=title)
    ax.legend(fontsize=7, loc="upper left")
    width = 1.0 / max(int(curve.get("n_bins") or 10), 1)
    axes[1, 0].bar(pp, n, width=width * 0.8, color="#95a5a6")
    axes[1, 0].set(xlim=(0, 1), xlabel="mean predicted probability (bin)", ylabel="rows")
    return plots.to_data_uri(fig)


def _subgroups(sub: dict) -> str:
    if not sub:
        return ("<p class=\"note\">No subgroup columns with two values or more in the manifest "
                "(view, laterality, density, abnormality type, source, split).</p>")
    if "error" in sub:
        return f"<p class=\"note\">Subgroups not computed: {_e(sub['error'])}</p>"
    rows = []
    for name, g in sub.items():
        if g.get("skipped"):
            rows.append(f"<tr><td>{_e(name)} ({_e(g.get('column'))})</td><td colspan=\"4\">not used: "
                        f"{_e(g['skipped'])}</td></tr>")
        for lev in g.get("levels", []):
            val = ("too small (fewer than 10 ROIs of a class)" if lev.get("too_small")
                   else f"{_num(lev.get('auc'))} {_ci(lev.get('ci'))}")
            rows.append(f"<tr><td>{_e(name)} ({_e(g.get('column'))})</td><td>{_e(lev.get('level'))}</td>"
                        f"<td>{_e(lev.get('n'))} ({_e(lev.get('n_pos'))} / {_e(lev.get('n_neg'))})</td>"
                        f"<td>{_e(lev.get('n_patients'))}</td><td>{val}</td></tr>")
    return ("<table><tr><th>subgroup</th><th>level</th><th>ROIs (malignant / benign)</th><th>patients</th>"
            f"<th>AUC [95% CI, patient bootstrap]</th></tr>{''.join(rows)}</table>")


def render(run) -> str:
    """The section's HTML for a run (``run.summary``: the run's ``summary.json``)."""
    s = getattr(run, "summary", None) or {}
    parts = ["<section><h2>Operating points, calibration and subgroups</h2>"]
    if "auc_definition" in s:
        head = (f"Headline: {_num(s.get('auc'))} {_ci(s.get('auc_ci'))}, {_e(s['auc_definition'])}"
                + (f"; SD over repeats {_num(s['auc_sd_repeats'])}" if s.get("auc_sd_repeats") is not None else ""))
        if s.get("ensemble_auc") is not None:
            head += (f". Repeat-averaged (ensemble) AUC, not the headline: {_num(s['ensemble_auc'])} "
                     f"{_ci(s.get('ensemble_auc_ci'))}")
        parts.append(f"<p>{head}.</p>")
    op, cal = s.get("operating_points"), s.get("calibration")
    if not isinstance(op, dict) and not isinstance(cal, dict):
        parts.append("<p class=\"note\">This run's summary.json has no operating points or calibration (written "
                     "by an older mammodecomp); rerun <code>mammodecomp cv</code> with the same --out to "
                     "recompute the summary.</p></section>")
        return "".join(parts)
    if isinstance(op, dict):
        parts.append("<h3>Operating points</h3>" + (_stat_rows(op, _OP_ROWS) if "error" not in op else
                                                   f"<p class=\"note\">not computed: {_e(op['error'])}</p>"))
        if op.get("definition"):
            parts.append(f"<div class=\"note\">{_e(op['definition'])}. Thresholds are read off the "
                         "out-of-fold ROC itself: what the model could reach, not a threshold fixed "
                         "beforehand.</div>")
    if isinstance(cal, dict):
        parts.append("<h3>Calibration</h3>" + (_stat_rows(cal, _CAL_ROWS) if "error" not in cal else
                                              f"<p class=\"note\">not computed: {_e(cal['error'])}</p>"))
        if isinstance(cal.get("curve"), dict):
            try:
                uri = calibration_curve_figure(cal["curve"], (cal.get("slope") or {}).get("estimate"),
                                               (cal.get("intercept") or {}).get("estimate"))
                parts.append(f'<img alt="calibration" src="{uri}">')
            except Exception as e:  # noqa: BLE001 - a figure that cannot be drawn is said, not fatal
                parts.append(f"<p class=\"note\">calibration figure not drawn: {_e(type(e).__name__)}: {_e(e)}</p>")
        if cal.get("definition"):
            parts.append(f"<div class=\"note\">{_e(cal['definition'])}.</div>")
    parts.append("<h3>Subgroups</h3>" + _subgroups(s.get("subgroups") or {}))
    parts.append("</section>")
    return "".join(parts)
