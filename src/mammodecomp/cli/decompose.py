"""``mammodecomp decompose``: decompose a manifest's ROIs into a cached store."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from . import app


def parse_params(items: list[str]) -> dict:
    """``["alpha=2000", "dc=false", "init=radial"]`` -> typed dict (JSON values, else strings).

    >>> parse_params(["alpha=2000", "dc=false", "init=radial"])
    {'alpha': 2000, 'dc': False, 'init': 'radial'}
    """
    out = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--param '{item}' is not NAME=VALUE (e.g. --param alpha=2000)")
        try:
            out[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[name.strip()] = raw
    return out


@app.command("decompose")
def decompose_command(
    manifest: Path = typer.Option(..., "--manifest", help="Manifest (Parquet or CSV)."),
    method: str = typer.Option("vmd", "--method", help="vmd, fabemd, starlet, laplacian, bands, identity."),
    k: int = typer.Option(5, "-k", "--k", help="Channels per ROI."),
    out: Path = typer.Option(..., "--out", help="Store folder (created; entries are reused)."),
    size: int = typer.Option(320, "--size", help="ROI side in pixels."),
    mode: str = typer.Option("context", "--mode", help="ROI extraction mode (see mammodecomp.roi)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    batch_size: int = typer.Option(32, "--batch-size", help="ROIs per batch."),
    param: list[str] = typer.Option([], "--param", help="Method parameter NAME=VALUE (repeatable)."),
    append_raw: bool = typer.Option(False, "--append-raw", help="Append the ROI as an extra channel."),
    dtype: str = typer.Option("float16", "--dtype", help="Storage dtype: float16 or float32."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels",
                                             help="Refuse images above this many pixels (default "
                                                  "$MAMMODECOMP_MAX_PIXELS or 100000000)."),
) -> None:
    """Extract ROIs, decompose them (batched, cached) and print the store entry.

    Example: mammodecomp decompose --manifest manifest.parquet --method vmd -k 5 --size 320 --out store
    """
    from ..decompose import METHODS
    from ..io import atomic_write
    from ..manifest import load_manifest
    from ..progress import quiet
    from ..roi import extract_rois
    from ..store import DecompStore

    METHODS.get(method)  # unknown name -> InputError before any work
    if device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA device is available; use --device cpu")
    if max_pixels is not None and max_pixels < 1:
        raise InputError(f"--max-pixels {max_pixels}; expected a positive number of pixels, e.g. 100000000")
    params = parse_params(param)
    if append_raw:
        params["append_raw"] = True
    df = load_manifest(manifest, require_both_classes=False)
    rois, meta = extract_rois(df, size=size, mode=mode, progress=not quiet(), max_pixels=max_pixels)
    store = DecompStore(out, dtype=dtype)
    arr = store.get_or_compute(rois, method, k, params, batch_size=batch_size, device=device,
                               progress=not quiet())
    key = store.key(rois, method, k, params)
    meta = meta.copy()
    meta.insert(0, "index", range(len(meta)))
    with atomic_write(store.root / f"{key}.rois.csv", "w") as f:
        meta.to_csv(f, index=False)
    verb = "computed" if store.last_computed else "reused"
    typer.echo(f"{verb} {method} k={k}: {arr.shape[0]} ROIs -> {store.path(key)} "
               f"(shape {tuple(arr.shape)}, {arr.dtype})")
