"""`mammodecomp evaluate`: a finished run's fold ensemble on held-out rows."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import _options as o
from . import app


def _fmt(v, nd: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def _ci(c) -> str:
    return "[n/a]" if not c or c[0] is None or c[1] is None else f"[{c[0]:.3f}, {c[1]:.3f}]"


@app.command("evaluate")
def evaluate_cmd(
    run: Path = o.RUN,
    manifest: Optional[Path] = typer.Option(None, "--manifest", "-m", help="Manifest with the held-out rows (split == test, or all rows without a split column); default: the run's data.manifest."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default RUN/evaluation)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    n_boot: int = typer.Option(2000, "--n-boot", help="Patient-bootstrap resamples of every CI."),
    store: Optional[Path] = o.STORE,
):
    """Held-out metrics with CIs next to the out-of-fold ones, and the gap.

    Refuses (one line) when a held-out row shares its roi_id, image and
    coordinates, or patient with the rows the run cross-validated.

    Example: mammodecomp evaluate runs/cbis/small --manifest runs/cbis/manifest_all.parquet
    """
    from ..evaluate import evaluate
    r = evaluate(run, manifest, out=out, device=device, n_boot=n_boot, store=store)
    h, o, g = r["heldout"], r["oof"], r["gap"]
    typer.echo(f"held-out ({h['n_rois']} ROIs, {h['n_patients']} patients, {r['n_models']} fold models "
               f"averaged): AUC {_fmt(h['auc'])} {_ci(h['auc_ci'])}")
    typer.echo(f"out-of-fold ({o.get('auc_definition') or 'summary.json'}): AUC {_fmt(o.get('auc'))} "
               f"{_ci(o.get('auc_ci'))}; gap (held-out - OOF) {_fmt(g.get('auc'))}")
    op = h.get("operating_points") or {}
    for k, label in (("sens_at_90_spec", "sensitivity at 90% specificity"),
                     ("spec_at_90_sens", "specificity at 90% sensitivity")):
        if isinstance(op.get(k), dict):
            typer.echo(f"held-out {label}: {_fmt(op[k]['estimate'])} {_ci(op[k]['ci'])}; "
                       f"gap {_fmt(g.get(k))}")
    typer.echo(f"written to {Path(out) if out else Path(run) / 'evaluation'}")
