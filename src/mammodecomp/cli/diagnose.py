"""`mammodecomp diagnose RUN_DIR` and `mammodecomp report RUN_DIR`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import _options as o
from . import app


def _check_perm(n: int) -> int:
    from ..errors import InputError
    if n < 0:
        raise InputError(f"--permutations {n}; expected 0 (skip the null) or a positive number, e.g. 100")
    return n


@app.command("diagnose")
def diagnose_cmd(
    run_dir: Path = o.RUN,
    permutations: int = typer.Option(100, "--permutations", "-p", help="Label permutations for the null of the feature baseline (0 skips it)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the permutations and subsamples."),
    model_rois: int = typer.Option(200, "--model-rois", help="At most this many OOF ROIs for channel occlusion (a stratified subsample)."),
    store: Optional[Path] = o.STORE,
):
    """Why does this recipe over-fit? Write diagnosis.json and print the ranked causes.

    Example: mammodecomp diagnose runs/study --permutations 200
    """
    from ..diagnose import DIAGNOSIS_FILE, diagnose
    from ..errors import InputError
    if model_rois < 1:
        raise InputError(f"--model-rois {model_rois}; expected a positive number of ROIs, e.g. 200")
    d = diagnose(run_dir, n_permutations=_check_perm(permutations), seed=seed, max_model_rois=model_rois, store=store)
    h = d["headline"]
    lo, hi = h.get("ci_low"), h.get("ci_high")
    ci = f" (95% CI {lo:.3f}-{hi:.3f})" if lo is not None and hi is not None else ""
    if h.get("auc_sd_repeats") is not None:      # the headline of summary.json, defined once (stats.headline_auc)
        ci += f", SD over repeats {h['auc_sd_repeats']:.3f}"
    auc = h.get("auc")
    typer.echo(f"{d['primary']} ({h.get('recipe')}): out-of-fold AUC "
               f"{auc:.3f}{ci}" if auc is not None else f"{d['primary']}: AUC n/a")
    if not d["verdict"]:
        typer.echo("no cause of over-fitting found by the rules")
    for c in d["verdict"]:
        typer.echo(f"{c['rank']}. [{c['severity']}] {c['title']}: {c['summary']}")
        typer.echo(f"   fix: {c['fix']}")
        if c.get("measured_fix"):
            typer.echo(f"   measured: {c['measured_fix']['text']}")
    for e in d.get("errors", []):
        typer.echo(f"warning: step {e['step']} failed: {e['error']}", err=True)
    typer.echo(f"written {Path(run_dir) / DIAGNOSIS_FILE}; next: mammodecomp report {run_dir}")


@app.command("report")
def report_cmd(
    run_dir: Path = o.RUN,
    permutations: int = typer.Option(100, "--permutations", "-p", help="Permutations if the diagnosis must be run first."),
    seed: int = typer.Option(0, "--seed", help="Seed if the diagnosis must be run first."),
    store: Optional[Path] = o.STORE,
):
    """Write RUN/report.html: one self-contained page (figures embedded).

    Example: mammodecomp report runs/study
    """
    from ..report import write_report
    out = write_report(run_dir, n_permutations=_check_perm(permutations), seed=seed, store=store)
    typer.echo(f"report written to {out}")
