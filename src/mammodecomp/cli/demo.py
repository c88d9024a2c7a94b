"""`mammodecomp demo`: the whole study on embedded synthetic data."""
from __future__ import annotations

import time
from pathlib import Path

import typer

from . import app


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Study directory to write."),
    patients: int = typer.Option(100, "--patients", help="Synthetic patients (2 views each)."),
    roi_size: int = typer.Option(64, "--roi-size", help="ROI side in pixels."),
    epochs_small: int = typer.Option(15, "--epochs-small"),
    epochs_seed: int = typer.Option(40, "--epochs-seed"),
    permutations: int = typer.Option(100, "--permutations", help="Label permutations for the null."),
    ablation: bool = typer.Option(False, "--ablation", help="Also train the raw and components+raw arms."),
):
    """Run the embedded end-to-end study and write its report.

    Example: mammodecomp demo --out runs/demo
    """
    from ..demo import run_demo
    t0 = time.perf_counter()
    report = run_demo(out, patients=patients, roi_size=roi_size, epochs_small=epochs_small,
                      epochs_seed=epochs_seed, permutations=permutations,
                      arms=("small", "seed", "raw", "components+raw") if ablation else ("small", "seed"))
    typer.echo(f"demo finished in {time.perf_counter() - t0:.0f} s; open the report: {report}")
