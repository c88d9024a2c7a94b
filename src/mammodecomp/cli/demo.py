"""`mammodecomp demo`: the whole study on embedded synthetic data."""
from __future__ import annotations

import time
from pathlib import Path

import typer

from . import app


def run_demo(out: Path, *, patients: int = 120, roi_size: int = 64, epochs_small: int = 20, epochs_seed: int = 30,
             arms: tuple[str, ...] = ("small", "seed", "raw", "components+raw"), permutations: int = 100,
             progress_bars: bool = True) -> Path:
    """Synthetic ROIs in patient pairs -> decomposition -> small and seed recipes
    (plus the raw / components+raw ablation) on the same folds -> diagnosis -> report."""
    from ..config import resolve_config
    from ..diagnose import diagnose
    from ..report import write_report
    from ..study import DEFAULT_ARMS, run_study
    base = resolve_config(recipe="small", overrides=[
        f"data.synth.n_patients={patients}", f"data.synth.size={max(2 * roi_size, 64)}",
        f"data.roi_size={roi_size}", "cv.n_folds=5", f"decomposition.store={out / '.store'}"])
    chosen = {}
    for a in arms:
        recipe, ov = DEFAULT_ARMS[a]
        ep = epochs_seed if recipe == "seed" else epochs_small
        chosen[a] = (recipe, list(ov) + [f"train.epochs={ep}"])
    run_study(base, out, chosen, progress_bars=progress_bars)
    diagnose(out, n_permutations=permutations)
    return write_report(out)


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Study directory to write."),
    patients: int = typer.Option(120, "--patients", help="Synthetic patients (2 views each)."),
    roi_size: int = typer.Option(64, "--roi-size", help="ROI side in pixels."),
    epochs_small: int = typer.Option(20, "--epochs-small"),
    epochs_seed: int = typer.Option(30, "--epochs-seed"),
    permutations: int = typer.Option(100, "--permutations", help="Label permutations for the null."),
):
    """Run the embedded end-to-end study and write its report.

    Example: mammodecomp demo --out runs/demo
    """
    t0 = time.perf_counter()
    report = run_demo(out, patients=patients, roi_size=roi_size, epochs_small=epochs_small,
                      epochs_seed=epochs_seed, permutations=permutations)
    typer.echo(f"demo finished in {time.perf_counter() - t0:.0f} s; open the report: {report}")
