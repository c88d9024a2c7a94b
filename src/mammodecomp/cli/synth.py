"""``mammodecomp synth``: write a seeded synthetic ROI set with known truth."""
from __future__ import annotations

from pathlib import Path

import typer

from . import app


@app.command("synth")
def synth_command(
    out: Path = typer.Option(..., "--out", help="Folder to create (images/, manifest.parquet, synth.json)."),
    patients: int = typer.Option(200, "--patients", help="Number of patients (two views each)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives identical files."),
    size: int = typer.Option(320, "--size", help="ROI side in pixels."),
    difficulty: float = typer.Option(0.5, "--difficulty",
                                     help="0 easy (oracle AUC ~0.99) .. 1 hard (~0.70)."),
    label_noise: float = typer.Option(0.0, "--label-noise", help="Probability of a flipped label."),
    prevalence: float = typer.Option(0.5, "--prevalence", help="Fraction of malignant patients."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
) -> None:
    """Generate mammogram-like ROIs, write them with a manifest and print the oracle AUC.

    Example: mammodecomp synth --out data/synthetic --patients 200 --seed 0
    """
    from ..io import read_json
    from ..progress import quiet
    from ..synth import write_synthetic
    path = write_synthetic(out, n_patients=patients, size=size, seed=seed, difficulty=difficulty,
                           label_noise=label_noise, prevalence=prevalence, overwrite=overwrite,
                           progress=not quiet())
    info = read_json(path / "synth.json")
    typer.echo(f"wrote {info['n_rois']} ROIs of {size}x{size} from {patients} patients "
               f"({info['n_malignant_patients']} malignant) to {path}")
    typer.echo(f"oracle AUC: {info['oracle_auc']:.4f}")
