"""`mammodecomp predict` and `mammodecomp export`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import _options as o
from . import app


@app.command("predict")
def predict_cmd(
    run: Path = o.RUN,
    inputs: List[Path] = typer.Argument(..., metavar="INPUTS...", help="ROI images (PNG/PGM/TIFF/DICOM), a folder of them, or a manifest (CSV/Parquet with coordinates)."),
    out: Path = typer.Option(Path("predictions.csv"), "--out", "-o", help="CSV to write."),
    fold: Optional[int] = typer.Option(None, "--fold", help="Use only this outer fold's model."),
    repeat: Optional[int] = typer.Option(None, "--repeat", help="Use only this repeat's models."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    store: Optional[Path] = o.STORE,
):
    """Fold-ensemble probabilities (mean and spread across folds) for new ROIs.

    Example: mammodecomp predict runs/demo/small roi1.png roi2.png --out preds.csv
    """
    from ..io import atomic_write
    from ..predict import predict
    df = predict(run, [str(p) for p in inputs], fold=fold, repeat=repeat, device=device, store=store)
    with atomic_write(out, "w") as f:
        df.to_csv(f, index=False, float_format="%.8g")
    typer.echo(f"{len(df)} predictions from {int(df['n_models'].iloc[0])} fold model(s) written to {out}")


@app.command("export")
def export_cmd(
    run: Path = o.RUN,
    format: str = typer.Option("onnx", "--format", help="onnx"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default RUN/export)."),
    repeat: int = typer.Option(0, "--repeat"),
    fold: int = typer.Option(0, "--fold"),
):
    """Export one fold model to ONNX (takes the K-channel tensor) with a model card.

    Example: mammodecomp export runs/demo/small --format onnx
    """
    from ..errors import InputError
    from ..export import export_onnx
    if format != "onnx":
        raise InputError(f"unknown export format '{format}'; expected onnx")
    path = export_onnx(run, out or Path(run) / "export", repeat=repeat, fold=fold)
    typer.echo(f"exported {path} (model card beside it)")
