"""One self-contained HTML report of a diagnosis.

:func:`write_report` writes ``report.html`` beside ``diagnosis.json`` (running
:func:`mammodecomp.diagnose.diagnose` first when there is none): a header with
the run's headline numbers, the ranked verdict with severity badges, then one
section per evidence family (the families of the diagnosis check registry,
:func:`mammodecomp.diagnose.checks.families`, in their order) with its
figure, what was measured, what it means and what to do.

Invariants
----------
* Self-contained: inline CSS, no external URL; every figure is an
  ``<img src="data:image/png;base64,...">``; the only script is the case
  browser's, inline (:mod:`.browser`).
* Every text from the data is HTML-escaped.
* Written atomically (temp file + rename).
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from ..io import atomic_write, read_json
from . import plots, stats_section

__all__ = ["write_report", "render_html", "REPORT_FILE"]

REPORT_FILE = "report.html"

#: how a severity reads on its badge (the CSS class is ``sev-<severity>``)
BADGE_TEXT = {"na": "n/a"}

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f4f6f8;color:#222;line-height:1.45}
main{max-width:1080px;margin:0 auto;padding:0 20px 40px}
header{background:#1f3a5f;color:#fff;padding:22px 20px 18px}
header .inner{max-width:1080px;margin:0 auto}
header h1{margin:0 0 6px;font-size:24px}
header .sub{opacity:.85;font-size:14px}
.kpis{display:flex;flex-wrap:wrap;gap:12px;margin-top:14px}
.kpi{background:rgba(255,255,255,.12);border-radius:8px;padding:8px 14px;min-width:120px}
.kpi b{display:block;font-size:20px}
.kpi span{font-size:12px;opacity:.85}
section{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.08);margin:18px 0;padding:16px 20px}
h2{font-size:19px;margin:4px 0 12px;color:#1f3a5f}
h3{font-size:15px;margin:14px 0 6px}
.badge{display:inline-block;border-radius:10px;padding:1px 9px;font-size:11px;font-weight:700;color:#fff;
text-transform:uppercase;letter-spacing:.03em;vertical-align:middle;margin-right:6px}
.sev-high{background:#c0392b}.sev-medium{background:#e67e22}.sev-low{background:#d4ac0d}
.sev-info{background:#7f8c8d}.sev-na{background:#aab2b9}.sev-ok{background:#27ae60}
ol.verdict{padding-left:22px}
ol.verdict li{margin:0 0 12px}
.fix{background:#eef7ee;border-left:4px solid #27ae60;padding:6px 10px;margin:6px 0;font-size:14px}
.mean{background:#f3f6fb;border-left:4px solid #5d8aa8;padding:6px 10px;margin:6px 0;font-size:14px}
.measured{font-size:14px}
.measuredfix{background:#fff8e6;border-left:4px solid #e67e22;padding:6px 10px;margin:6px 0;font-size:14px}
.note{color:#666;font-size:12px}
img{max-width:100%;height:auto;display:block;margin:8px 0}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
td,th{border-bottom:1px solid #e3e6ea;padding:3px 10px;text-align:left}
.finding{border-top:1px solid #eceff2;padding-top:8px;margin-top:10px}
footer{color:#888;font-size:12px;text-align:center;margin-top:20px}
"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _num(v, nd=3) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if not np.isfinite(v) else f"{v:.{nd}f}"


def _badge(sev: str) -> str:
    return f'<span class="badge sev-{_e(sev)}">{_e(BADGE_TEXT.get(sev, sev))}</span>'


def _img(uri: str | None, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="{uri}">' if uri and uri.startswith("data:image/png;base64,") else ""


def _figures(diag: dict, run, path: Path) -> dict:
    """figure name -> data URI, for every figure the findings reference."""
    F = {f["id"]: f for f in diag["findings"]}
    out: dict = {}

    def safe(name, fn):
        try:
            out[name] = fn()
        except Exception as e:  # noqa: BLE001 - a figure that cannot be drawn is left out, said in the page
            out[name] = None
            out.setdefault("_errors", []).append(f"{name}: {type(e).__name__}: {e}")

    if run is not None:
        pooled = run.pooled
        folds = {f"r{r}f{f}": g for (r, f), g in run.oof.groupby(["repeat", "fold"])}
        safe("roc", lambda: plots.roc_figure(pooled, folds))
        safe("stats_section", lambda: stats_section.render(run))   # operating points, calibration, subgroups
        if run.histories:
            safe("learning_curves", lambda: plots.learning_curves_figure(run.histories))
    cb, mo = F.get("split.class_balance"), F.get("split.manifest_order")
    if cb or mo:
        safe("fold_balance", lambda: plots.fold_balance_figure(
            [d for d in (cb or {}).get("values", {}).get("folds", []) if d.get("repeat", 0) == 0],
            (mo or {}).get("values", {}).get("contiguous_folds", []),
            float((cb or mo)["values"].get("overall") or 0.5)))
    pm = F.get("null.permutation")
    if pm and pm["values"].get("null"):
        safe("permutation", lambda: plots.permutation_figure(pm["values"]["null"], pm["values"]["observed"],
                                                             pm["values"]["p"]))
    rows = []
    ab = F.get("ablation.channels")
    for c in (ab or {}).get("values", {}).get("comparisons", []) or []:
        rows.append({"label": f"{c['a']} - {c['b']}", "diff": c["diff"], "ci": c["ci"], "p": c["p"], "test": c.get("test")})
    bt = F.get("baseline.texture")
    for k, c in ((bt or {}).get("values", {}).get("comparisons", {}) or {}).items():
        rows.append({"label": f"recipe - texture LR ({k})", "diff": c["diff"], "ci": c["ci"], "p": c["p"], "test": c.get("test")})
    for c in diag.get("comparisons", []):
        rows.append({"label": f"{c['to']} - {c['from']}", "diff": c["diff"], "ci": c["ci"], "p": c["p"], "test": c.get("test")})
    if rows:
        safe("ablation", lambda: plots.forest_figure(rows))
    sc = F.get("shortcut.nuisance")
    if sc and sc["values"].get("aucs"):
        safe("shortcuts", lambda: plots.bars_figure(
            sc["values"]["aucs"], "Nuisance features alone (OOF AUC)", "AUC",
            ref={"chance": 0.5, "recipe": sc["values"].get("recipe_auc") or 0.5}, xlim=(0, 1)))
    oc = F.get("attribution.occlusion")
    if oc and oc["values"].get("drops"):
        safe("occlusion", lambda: plots.bars_figure(oc["values"]["drops"], "AUC drop when a channel is occluded",
                                                    "AUC drop", ref={"no effect": 0.0}))
    me = F.get("metric.batchwise")
    if me and me["values"].get("folds") and me["severity"] != "na":   # no chart of an undefined comparison
        safe("metric_hygiene", lambda: plots.metric_figure(me["values"]["folds"]))
    cams_file = path / "diagnosis_cams.npz"
    if run is not None and cams_file.is_file():
        def cams():
            z = np.load(cams_file)
            rows_ = z["rows"].astype(int)
            comps = run.components()
            rois = run.rois()
            lab = run.manifest["label"].to_numpy()
            ids = run.manifest["roi_id"].to_numpy()
            labels = [f"{o} {ids[r]}\ny={lab[r]} p={pr:.2f}" for o, r, pr in zip(z["outcome"], rows_, z["prob"])]
            return plots.cam_strip_figure(np.asarray(rois[rows_], np.float32), np.asarray(comps[rows_], np.float32),
                                          z["cams"].astype(np.float32), labels,
                                          list(run.info.get("channels") or range(comps.shape[1])))
        safe("cams", cams)
    return out


def _header(diag: dict) -> str:
    h = diag["headline"]
    cc = h.get("class_counts") or {}
    data = (f"{h.get('n_manifest')} ROIs, {h.get('n_patients_manifest')} patients "
            f"({cc.get('0', 0)} benign / {cc.get('1', 0)} malignant), {h.get('roi_size')} px, "
            f"source {h.get('source')}")
    recipe = (f"recipe <b>{_e(h.get('recipe'))}</b>: {_e(h.get('model'))}"
              f"{' (pretrained)' if h.get('pretrained') else ' (from scratch)'}, "
              f"{_e(h.get('decomposition'))} K={_e(h.get('k'))} ({_e(h.get('variant'))}), "
              f"{_e(h.get('cv_scheme'))} {_e(h.get('n_folds'))}-fold CV x{_e(h.get('n_repeats'))}")
    kpis = [(f"{_num(h.get('auc'))}", h.get("auc_definition") or "pooled out-of-fold AUC"),
            (f"{_num(h.get('ci_low'))} - {_num(h.get('ci_high'))}", "95% CI (patient bootstrap)"),
            *([(f"{_num(h['lesion_auc'])} [{_num(h['lesion_ci'][0])}, {_num(h['lesion_ci'][1])}]",
                f"per lesion ({h.get('n_lesions')} lesions; its views' mean log-odds)")]
              if h.get("lesion_auc") is not None else []),
            (str(len([c for c in diag['verdict'] if c['severity'] == 'high'])), "high-severity causes"),
            (str(h.get("n_rois")), "ROIs tested")]
    k = "".join(f'<div class="kpi"><b>{_e(a)}</b><span>{_e(b)}</span></div>' for a, b in kpis)
    where = f"study {_e(Path(diag['path']).name)}, run {_e(diag['primary'])}" if diag.get("is_study") \
        else f"run {_e(Path(diag['path']).name)}"
    return (f'<header><div class="inner"><h1>Why does this recipe over-fit? Diagnosis of {where}</h1>'
            f'<div class="sub">{recipe}<br>{_e(data)}</div><div class="kpis">{k}</div></div></header>')


def _verdict(diag: dict) -> str:
    items = []
    seen: set = set()
    for c in diag["verdict"]:
        mf = c.get("measured_fix")
        if mf and mf["text"] in seen:
            mf = {"text": f"the same {mf['from']} -> {mf['to']} comparison as above"}
        elif mf:
            seen.add(mf["text"])
        figs = ", ".join(c.get("figures") or [])
        items.append(
            f"<li>{_badge(c['severity'])}<b>{_e(c['title'])}</b><br>{_e(c['summary'])}"
            f'<div class="fix"><b>Fix:</b> {_e(c["fix"])}</div>'
            + (f'<div class="measuredfix"><b>Measured:</b> {_e(mf["text"])}</div>' if mf else "")
            + f'<div class="note">evidence: {_e(", ".join(c["evidence"]))}'
            + (f"; figures: {_e(figs)}" if figs else "") + "</div></li>")
    if not items:
        body = "<p>No rule fired: none of the checked causes of over-fitting is present in this run.</p>"
    else:
        body = '<ol class="verdict">' + "".join(items) + "</ol>"
    h = diag["headline"]
    lo = h.get("ci_low")
    chance = ("" if lo is None else
              f"<p>Is the recipe distinguishable from chance? <b>{'yes' if lo > 0.5 else 'no'}</b>: the 95% CI "
              f"of its pooled out-of-fold AUC is {_num(lo)} to {_num(h.get('ci_high'))}.</p>")
    return f"<section><h2>Verdict: the causes, ranked</h2>{chance}{body}</section>"


def _finding(f: dict, figs: dict, shown: set) -> str:
    fig = f.get("figure")
    img = ""
    if fig and fig not in shown and figs.get(fig):
        img = _img(figs[fig], fig)
        shown.add(fig)
    out = (f'<div class="finding"><h3>{_badge(f["severity"])}{_e(f["title"])}</h3>'
           f'<div class="measured"><b>Measured:</b> {_e(f["measured"])}</div>{img}')
    if f.get("meaning"):
        out += f'<div class="mean"><b>What this means:</b> {_e(f["meaning"])}</div>'
    if f.get("fix"):
        out += f'<div class="fix"><b>What to do:</b> {_e(f["fix"])}</div>'
    out += _lists(f)
    if f.get("notes"):
        out += f'<div class="note">{_e(f["notes"])}</div>'
    return out + "</div>"


def _lists(f: dict) -> str:
    """Tables of the items a finding names (shared patients, duplicate pairs)."""
    v = f.get("values") or {}
    if f["id"] == "split.shared_patients" and v.get("patients"):
        rows = "".join(f"<tr><td>{_e(p['patient_id'])}</td><td>{_e(', '.join(p['folds']))}</td></tr>"
                       for p in v["patients"])
        return f"<table><tr><th>patient</th><th>folds where shared</th></tr>{rows}</table>"
    if f["id"] == "split.near_duplicates" and v.get("pairs"):
        rows = "".join(f"<tr><td>{_e(p['roi_a'])}</td><td>{_e(p['roi_b'])}</td><td>{_num(p['corr'], 4)}</td>"
                       f"<td>{_e(p['fold_a'])} / {_e(p['fold_b'])}</td><td>{'yes' if p['same_patient'] else 'no'}</td></tr>"
                       for p in v["pairs"])
        return ("<table><tr><th>ROI</th><th>ROI</th><th>correlation</th><th>test folds</th>"
                f"<th>same patient</th></tr>{rows}</table>")
    return ""


def _comparisons(diag: dict) -> str:
    """Table of the study's recipes against the diagnosed run, same ROIs."""
    rows = diag.get("comparisons") or []
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{_e(c['to'])} ({_e(c['to_recipe'])})</td><td>{_num(c['auc_a'])}</td><td>{_num(c['auc_b'])}</td>"
        f"<td>{_num(c['diff'])} [{_num(c['ci'][0])}, {_num(c['ci'][1])}]</td><td>{_num(c['p'], 4)} ({_e(c.get('test', 'delong'))})</td>"
        f"<td>{_num(c.get('gap_from'), 2)} &rarr; {_num(c.get('gap_to'), 2)}</td><td>{_e(c['n'])}</td>"
        f"<td>{'yes' if c.get('same_folds') else _e(str(c.get('scheme_from')) + ' vs ' + str(c.get('scheme_to')))}</td></tr>"
        for c in rows)
    return ("<h3>Other recipes in this study, on the same ROIs</h3><p class=\"note\">AUCs of each ROI's probability "
            "averaged over a run's repeats (an ensemble when there are several; the headline is per repeat)</p>"
            "<table><tr><th>recipe</th><th>its AUC</th>"
            f"<th>{_e(diag['primary'])} AUC</th><th>difference [95% CI]</th><th>p (test)</th>"
            f"<th>train-val gap</th><th>ROIs</th><th>same folds</th></tr>{body}</table>")


def render_html(diag: dict, figs: dict, browser: str = "") -> str:
    """The report page for a diagnosis dict and its figures (*browser*: the case-browser section)."""
    shown: set = set()
    parts = [_header(diag), "<main>", _verdict(diag)]
    head = ('<section><h2>Out-of-fold performance</h2>'
            + _img(figs.get("roc"), "roc")
            + _comparisons(diag) + "</section>")
    shown.update({"roc", "calibration"})
    parts.append(head + (figs.get("stats_section") or ""))
    parts.append(browser)
    from ..diagnose.checks import families
    for fam, title in families():
        fs = [f for f in diag["findings"] if f["family"] == fam]
        if fs:
            parts.append(f"<section><h2>{_e(title)}</h2>" + "".join(_finding(f, figs, shown) for f in fs)
                         + "</section>")
    errs = list(diag.get("errors") or []) + [{"step": "figure", "error": e} for e in figs.get("_errors", [])]
    if errs:
        parts.append("<section><h2>Steps that failed</h2><ul>" + "".join(
            f"<li>{_e(e['step'])}: {_e(e['error'])}</li>" for e in errs) + "</ul></section>")
    t = diag.get("timings") or {}
    parts.append(f'<footer>diagnosis written {_e(diag.get("created"))}; '
                 f'{_e(len(diag["findings"]))} findings; evidence steps took {_num(sum(t.values()), 1)} s; '
                 f'permutations: {_e((diag.get("settings") or {}).get("n_permutations"))}</footer></main>')
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>mammodecomp diagnosis: {_e(diag.get('primary'))}</title><style>{CSS}</style></head><body>"
            + "".join(parts) + "</body></html>")


def write_report(run_or_study_dir: str | Path, *, n_permutations: int = 100, seed: int = 0,
                 store: str | Path | None = None) -> Path:
    """Write ``report.html`` for a run or study directory; return its path.

    Parameters
    ----------
    run_or_study_dir : the directory diagnosed (``diagnosis.json`` is read
        from it; when absent, :func:`~mammodecomp.diagnose.diagnose` runs first
        with *n_permutations* and *seed*).
    store : the runs' decomposition store folder, for runs moved without it.

    Returns
    -------
    Path of ``report.html``.
    """
    from ..diagnose import DIAGNOSIS_FILE, diagnose
    from ..rundir import load_study
    path = Path(run_or_study_dir)
    if (path / DIAGNOSIS_FILE).is_file():
        diag = read_json(path / DIAGNOSIS_FILE)
    else:
        diag = diagnose(path, n_permutations=n_permutations, seed=seed, store=store)
    study = load_study(path, store=store)
    run = study.primary
    if run.name != diag.get("primary"):
        run = study.siblings.get(diag.get("primary"), run)
    run.check_inputs()   # the maps' figures need the ROIs: a moved store is one line, not a lost figure
    figs = _figures(diag, run, path)
    from .browser import case_browser_section
    page = render_html(diag, figs, case_browser_section(run, path))
    out = path / REPORT_FILE
    with atomic_write(out, "w") as f:
        f.write(page)
    return out
