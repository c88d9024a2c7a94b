"""``synthetic``: a folder written by :func:`mammodecomp.synth.write_synthetic`.

Layout: ``ROOT/manifest.parquet`` (relative ``image_path`` values point at the
ROI images beside it) and ``ROOT/synth.json``. The manifest is read with
:func:`mammodecomp.manifest.load_manifest`, so it is validated as written.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import InputError
from ..manifest import load_manifest
from . import SOURCES
from ._common import check_task, require_dir


@SOURCES.register("synthetic")
def synthetic_source(root: str | Path, task: str = "benign-malignant") -> pd.DataFrame:
    """Manifest of a synthetic data set folder (``ROOT/manifest.parquet``)."""
    check_task("synthetic", task, ("benign-malignant",))
    root = require_dir(root, "synthetic data set")
    path = root / "manifest.parquet"
    if not path.is_file():
        csv = root / "manifest.csv"
        if not csv.is_file():
            raise InputError("no manifest.parquet; expected a folder written by 'mammodecomp synth' "
                             "(mammodecomp.synth.write_synthetic)", path=root)
        path = csv
    df = load_manifest(path)
    if "source" not in df.columns:
        df["source"] = "synthetic"
    df.attrs["dataset"] = {"manifest": str(path), "rows": int(len(df))}
    df.attrs["dropped"] = {}
    return df
