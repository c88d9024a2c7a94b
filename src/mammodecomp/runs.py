"""List run directories and compare runs.

:func:`list_runs` finds the finished run directories under a folder (a run
inside a study included) and gives one row each: recipe, data, decomposition,
pooled out-of-fold AUC with its CI, per-lesion AUC and date.
:func:`compare_runs` puts two or more runs side by side: the config keys whose
values differ, the metrics and their differences from the first run, and,
where a run shares out-of-fold ROIs with the first (same ``roi_id`` and
label), a paired test on those ROIs clustered by patient
(:func:`mammodecomp.stats.compare_aucs`). :func:`compare_html` writes the
same as a small self-contained page.

A run directory is read by :func:`read_run` only (through
:func:`mammodecomp.rundir.read_run`), so the reading can follow
the run directory's owner module without touching the rest.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["read_run", "find_runs", "list_runs", "compare_runs", "compare_html", "format_list",
           "format_compare"]

#: a paired test needs at least this many shared ROIs (and both classes among them)
MIN_SHARED = 10


def read_run(path: str | Path):
    """The one place that reads a run directory here (a ``RunFiles``)."""
    from .rundir import read_run as _read
    return _read(path)


def _is_run(path: Path) -> bool:
    from .rundir import is_run_dir
    return is_run_dir(path)


def find_runs(folder: str | Path) -> list[Path]:
    """Run directories under *folder* (itself included), sorted by path; hidden folders skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("folder not found", path=folder)
    found = []
    stack = [folder]
    while stack:
        d = stack.pop()
        if _is_run(d):
            found.append(d)
            continue        # a run's own sub-folders (folds/, export/) hold no runs
        try:
            subs = [p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")]
        except OSError:
            continue
        stack.extend(subs)
    return sorted(found)


def finite_or_none(v):
    """``float(v)`` when that is a finite number, else None."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _row(run, name: str) -> dict:
    s = run.summary or {}
    ci = s.get("auc_ci") or [None, None]
    les = s.get("lesion") or {}
    lci = les.get("auc_ci") or [None, None]
    cfg = run.cfg
    n_rois = s.get("n_rois") or run.info.get("n_rois") or len(run.manifest)
    n_pat = s.get("n_patients") or run.info.get("n_patients") or run.manifest["patient_id"].nunique()
    return {"run": name, "recipe": run.recipe, "model": cfg("model.name"),
            "data": f"{cfg('data.source', '?')} {n_rois} ROIs/{n_pat} patients",
            "decomposition": f"{cfg('decomposition.method', '?')} K={cfg('decomposition.k', '?')} "
                             f"{cfg('decomposition.variant', '')}".strip(),
            "cv": f"{cfg('cv.scheme', '?')} {cfg('cv.n_folds', '?')}x{cfg('cv.n_repeats', '?')}",
            "auc": finite_or_none(s.get("auc")), "auc_ci": [finite_or_none(ci[0]), finite_or_none(ci[1])],
            "lesion_auc": finite_or_none(les.get("auc")), "lesion_ci": [finite_or_none(lci[0]), finite_or_none(lci[1])],
            "final_train_auc": finite_or_none(s.get("final_train_auc_mean")),
            "fold_auc_mean": finite_or_none(s.get("fold_auc_mean")), "fold_auc_sd": finite_or_none(s.get("fold_auc_sd")),
            "date": str(run.info.get("finished") or run.info.get("started") or ""),
            "manifest_hash": run.info.get("manifest_hash")}


def _name(path: Path, base: Path) -> str:
    for p, b in ((path, base), (path.resolve(), base.resolve())):
        try:
            rel = p.relative_to(b)
        except ValueError:
            continue
        return str(rel) if str(rel) != "." else path.name
    return str(path)


def list_runs(folder: str | Path = "runs") -> list[dict]:
    """One row per finished run directory under *folder*.

    Keys: ``run`` (path relative to *folder*), ``recipe, model, data,
    decomposition, cv, auc, auc_ci, lesion_auc, lesion_ci, final_train_auc,
    fold_auc_mean, fold_auc_sd, date, manifest_hash``; a run that cannot be
    read gets ``error`` instead of its numbers.
    """
    folder = Path(folder)
    rows = []
    for p in find_runs(folder):
        try:
            rows.append(_row(read_run(p), _name(p, folder)))
        except InputError as e:
            rows.append({"run": _name(p, folder), "error": str(e)})
    return rows


def _ci(v, ci, nd=3) -> str:
    if v is None:
        return "-"
    lo, hi = ci if ci else (None, None)
    return f"{v:.{nd}f}" + (f" [{lo:.{nd}f}, {hi:.{nd}f}]" if lo is not None and hi is not None else "")


def _table(header: list[str], rows: list[list[str]]) -> str:
    w = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda r: "  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * x for x in w])] + [line(r) for r in rows])


def format_list(rows: list[dict]) -> str:
    """The ``mammodecomp runs`` table."""
    head = ["run", "recipe", "data", "decomposition", "AUC [95% CI]", "per lesion", "date"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["run"], "unreadable: " + r["error"], "", "", "", "", ""])
            continue
        body.append([r["run"], r["recipe"], r["data"], r["decomposition"], _ci(r["auc"], r["auc_ci"]),
                     _ci(r["lesion_auc"], r["lesion_ci"]), r["date"][:16].replace("T", " ")])
    return _table(head, body)


def _flat(d, prefix="") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in ("params", "kwargs"):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _paired(a, b, n_boot: int, seed: int) -> dict:
    """The clustered paired test of run *b* against run *a* on the ROIs both tested."""
    from .stats import compare_aucs
    pa, pb = a.pooled.set_index("roi_id"), b.pooled.set_index("roi_id")
    shared = pa.index.intersection(pb.index)
    same = shared[(pa.loc[shared, "label"].to_numpy() == pb.loc[shared, "label"].to_numpy())]
    out = {"n_shared": int(len(same)), "n_a": int(len(pa)), "n_b": int(len(pb)),
           "label_mismatch": int(len(shared) - len(same))}
    y = pa.loc[same, "label"].to_numpy().astype(int)
    if len(same) < MIN_SHARED or len(np.unique(y)) < 2:
        out["skipped"] = (f"{len(same)} shared ROIs with both runs' labels equal" +
                          ("" if len(np.unique(y)) == 2 or not len(same) else ", one class only") +
                          f"; a paired test needs at least {MIN_SHARED} and both classes")
        return out
    groups = pa.loc[same, "patient_id"].astype(str).to_numpy()
    res = compare_aucs(y, pa.loc[same, "prob"].to_numpy(float), pb.loc[same, "prob"].to_numpy(float),
                       groups=groups, n_boot=n_boot, seed=seed)
    out.update({k: res[k] for k in ("auc1", "auc2", "diff", "ci", "p", "test")})
    # compare_aucs's diff is auc1 - auc2 (run a - run b); read the sign from its own numbers
    a1, a2, d = float(res["auc1"]), float(res["auc2"]), float(res["diff"])
    sign = -1.0 if abs(d - (a1 - a2)) <= abs(d - (a2 - a1)) else 1.0
    lo, hi = sorted(sign * float(c) for c in res["ci"])
    out["diff_b_minus_a"], out["ci_b_minus_a"] = sign * d, [lo, hi]
    return out


def compare_runs(paths: list[str | Path], *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Compare runs: config differences, metrics, paired tests against the first.

    Returns
    -------
    dict with ``runs`` (the :func:`list_runs` rows, in the given order),
    ``config_diff`` (``{key: [value per run]}`` for every config key whose
    values differ, plus ``data.manifest_hash``), ``metrics`` (``{metric:
    [value per run]}``), ``diff`` (``{metric: [run - first run]}``) and
    ``paired`` (one dict per run after the first: the shared-ROI counts and
    :func:`~mammodecomp.stats.compare_aucs`'s ``auc1, auc2, diff, ci, p,
    test`` with run 1 = the first run, or ``skipped`` with the reason).
    """
    if len(paths) < 2:
        raise InputError(f"runs compare needs at least two run directories; got {len(paths)}")
    runs = [read_run(p) for p in paths]
    names = [str(p) for p in paths]
    rows = [_row(r, n) for r, n in zip(runs, names)]
    flats = [_flat(r.config_dict) for r in runs]
    for f, r in zip(flats, runs):
        f["data.manifest_hash"] = r.info.get("manifest_hash")
    keys = sorted(set().union(*flats))
    cdiff = {k: [f.get(k) for f in flats] for k in keys
             if len({repr(f.get(k)) for f in flats}) > 1}
    mkeys = ["auc", "auc_ci_low", "auc_ci_high", "lesion_auc", "fold_auc_mean", "fold_auc_sd", "final_train_auc"]

    def metric(row, k):
        if k == "auc_ci_low":
            return row["auc_ci"][0]
        if k == "auc_ci_high":
            return row["auc_ci"][1]
        return row[k]
    metrics = {k: [metric(r, k) for r in rows] for k in mkeys}
    metrics = {k: v for k, v in metrics.items() if any(x is not None for x in v)}
    diff = {k: [None if v[0] is None or x is None else x - v[0] for x in v] for k, v in metrics.items()}
    paired = []
    for n, r in zip(names[1:], runs[1:]):
        paired.append({"a": names[0], "b": n, **_paired(runs[0], r, n_boot, seed)})
    return {"runs": rows, "names": names, "config_diff": cdiff, "metrics": metrics, "diff": diff,
            "paired": paired, "n_boot": int(n_boot), "seed": int(seed)}


def _v(x, nd=3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _cv(x) -> str:
    """A config value as written (floats in %g: 0.0001, not 0.000)."""
    return "-" if x is None else (f"{x:g}" if isinstance(x, float) else str(x))


def _paired_line(p: dict, n_boot: int) -> str:
    warn = (f"; {p['label_mismatch']} ROI id(s) carry different labels in the two runs: not the same ROIs?"
            if p.get("label_mismatch") else "")
    if "skipped" in p:
        return f"{p['b']} vs {p['a']}: no paired test ({p['skipped']}){warn}"
    lo, hi = p["ci_b_minus_a"]
    return (f"{p['b']} vs {p['a']} on {p['n_shared']} shared ROIs: AUC {p['auc2']:.3f} vs {p['auc1']:.3f}, "
            f"difference {p['diff_b_minus_a']:+.3f} [95% CI {lo:+.3f}, {hi:+.3f}], "
            + (f"p < {1 / n_boot:.4f}" if p["p"] == 0 else f"p = {p['p']:.4f}") + " "
            f"({p['test']}){warn}")


def format_compare(res: dict) -> str:
    """The ``mammodecomp runs compare`` text."""
    names = res["names"]
    out = ["runs: " + ", ".join(f"[{i + 1}] {n}" for i, n in enumerate(names)), ""]
    out.append("config differences:" if res["config_diff"] else "config differences: none")
    if res["config_diff"]:
        out.append(_table(["key"] + [f"[{i + 1}]" for i in range(len(names))],
                          [[k] + [_cv(x) for x in v] for k, v in res["config_diff"].items()]))
    out += ["", "metrics (difference from [1] in brackets):"]
    out.append(_table(["metric"] + [f"[{i + 1}]" for i in range(len(names))],
                      [[k] + [_v(x) + ("" if i == 0 or d is None else f" ({d:+.3f})")
                              for i, (x, d) in enumerate(zip(v, res["diff"][k]))]
                       for k, v in res["metrics"].items()]))
    out += ["", "paired tests against [1] (patient-clustered, shared ROIs):"]
    out += [_paired_line(p, res["n_boot"]) for p in res["paired"]]
    return "\n".join(out)


CSS = ("body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:20px auto;max-width:1000px;"
       "color:#222;padding:0 16px}h1{font-size:22px;color:#1f3a5f}h2{font-size:17px;color:#1f3a5f}"
       "table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border-bottom:1px solid #e3e6ea;"
       "padding:3px 10px;text-align:left}.pos{color:#27ae60}.neg{color:#c0392b}.note{color:#666;font-size:12px}")


def compare_html(res: dict) -> str:
    """The comparison as a small self-contained HTML page (no script, no external URL)."""
    e = lambda x: html.escape("" if x is None else str(x))  # noqa: E731
    names = res["names"]
    hdr = "".join(f"<th>[{i + 1}] {e(n)}</th>" for i, n in enumerate(names))
    runs = "".join(f"<tr><th>{e(k)}</th>" + "".join(f"<td>{e(r.get(k))}</td>" for r in res["runs"]) + "</tr>"
                   for k in ("recipe", "model", "data", "decomposition", "cv", "date"))
    cfg = "".join(f"<tr><th>{e(k)}</th>" + "".join(f"<td>{e(_cv(x))}</td>" for x in v) + "</tr>"
                  for k, v in res["config_diff"].items()) or f'<tr><td colspan="{len(names) + 1}">none</td></tr>'

    def cell(x, d, first):
        if first or d is None:
            return f"<td>{e(_v(x))}</td>"
        return f'<td>{e(_v(x))} <span class="{"pos" if d > 0 else "neg"}">({d:+.3f})</span></td>'
    met = "".join(f"<tr><th>{e(k)}</th>" + "".join(cell(x, d, i == 0) for i, (x, d) in enumerate(zip(v, res["diff"][k])))
                  + "</tr>" for k, v in res["metrics"].items())
    pr = "".join(f"<li>{e(_paired_line(p, res['n_boot']))}</li>" for p in res["paired"])
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>mammodecomp: run comparison"
            f"</title><style>{CSS}</style></head><body><h1>Run comparison</h1>"
            f"<table><tr><th></th>{hdr}</tr>{runs}</table>"
            f"<h2>Config differences</h2><table><tr><th>key</th>{hdr}</tr>{cfg}</table>"
            f"<h2>Metrics</h2><p class=\"note\">Pooled out-of-fold AUC (repeats pooled), its 95% patient-bootstrap "
            f"CI, per-lesion AUC, fold mean and SD, final training AUC; in brackets the difference from [1].</p>"
            f"<table><tr><th>metric</th>{hdr}</tr>{met}</table>"
            f"<h2>Paired tests against [1]</h2><p class=\"note\">On the ROIs both runs tested out of fold (same id "
            f"and label), each ROI's probability averaged over repeats, resampling patients "
            f"({res['n_boot']} resamples, seed {res['seed']}).</p><ul>{pr}</ul></body></html>")
