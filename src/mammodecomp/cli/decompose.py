"""``mammodecomp decompose``: decompose a manifest's ROIs into a cached store."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from ..errors import InputError
from . import _options as o
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
    config: Optional[Path] = o.CONFIG,
    recipe: Optional[str] = o.RECIPE,
    set_: List[str] = o.SET,
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Manifest (Parquet or CSV); default: the config's data (data.manifest, data.source)."),
    method: Optional[str] = typer.Option(None, "--method", help="vmd, fabemd, starlet, laplacian, bands, identity (default: the config's, starlet)."),
    k: Optional[int] = typer.Option(None, "-k", "--k", help="Channels per ROI (default: the config's, 5)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Store folder (default: the config's decomposition.store, else the one `mammodecomp cv` uses: runs/.store)."),
    size: Optional[int] = typer.Option(None, "--size", help="ROI side in pixels (default: the config's data.roi_size, 64)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="ROI extraction mode, context or fixed (default: the config's)."),
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

    With no options it fills the store entry that `mammodecomp cv` with no
    options reads (same data, ROI size, method, K and store); --config and
    --set take the same keys as cv, and the shortcut options override them.

    Example: mammodecomp decompose --manifest manifest.parquet --method vmd -k 5 --size 320 --out store
    """
    from ..config import resolve_config
    from ..data import build_manifest_for, default_store
    from ..decompose import METHODS
    from ..io import atomic_write
    from ..manifest import load_manifest
    from ..progress import quiet
    from ..roi import extract_rois
    from ..store import DecompStore

    shortcuts = {"data.manifest": manifest, "decomposition.method": method, "decomposition.k": k,
                 "decomposition.store": out, "data.roi_size": size, "data.crop_mode": mode}
    cfg = resolve_config(config, recipe=recipe, overrides=list(set_) + [f"{key}={v}" for key, v in shortcuts.items()
                                                                      if v is not None])
    dec = cfg.decomposition
    METHODS.get(dec.method)  # unknown name -> InputError before any work
    if device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA device is available; use --device cpu")
    if max_pixels is not None and max_pixels < 1:
        raise InputError(f"--max-pixels {max_pixels}; expected a positive number of pixels, e.g. 100000000")
    params = dict(dec.params, **parse_params(param))
    if append_raw:
        params["append_raw"] = True
    store_dir = Path(dec.store) if dec.store else default_store(Path("runs/cv"))
    if manifest is not None:
        df = load_manifest(manifest, require_both_classes=False)
    else:
        df = build_manifest_for(cfg, store_dir.parent / "data")
    rois, meta = extract_rois(df, size=cfg.data.roi_size, mode=cfg.data.crop_mode, fov_mm=cfg.data.fov_mm,
                              progress=not quiet(), max_pixels=max_pixels)
    rois = np.asarray(rois, dtype=np.float32)
    store = DecompStore(store_dir, dtype=dtype)
    arr = store.get_or_compute(rois, dec.method, dec.k, params, batch_size=batch_size, device=device,
                               progress=not quiet())
    key = store.key(rois, dec.method, dec.k, params)
    meta = meta.copy()
    meta.insert(0, "index", range(len(meta)))
    with atomic_write(store.root / f"{key}.rois.csv", "w") as f:
        meta.to_csv(f, index=False)
    verb = "computed" if store.last_computed else "reused"
    typer.echo(f"{verb} {dec.method} k={dec.k}: {arr.shape[0]} ROIs -> {store.path(key)} "
               f"(shape {tuple(arr.shape)}, {arr.dtype})")
