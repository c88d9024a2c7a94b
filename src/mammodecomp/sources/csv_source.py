"""``csv``: a CSV listing ``path,label,patient_id`` (and optionally a box).

Columns
-------
``path`` (or ``image_path``): image file, relative to the CSV's folder or
absolute. ``label``: 0/1 or a class name (benign/malignant,
normal/abnormal, negative/positive; case-insensitive). ``patient_id``.
Optional: ``roi_id`` (else built from the path, ``#k`` added when one image
has several rows); a box as four columns ``bbox_row0, bbox_col0, bbox_row1,
bbox_col1`` (pixels, half-open) or one column ``bbox`` holding
``"row0 col0 row1 col1"`` (separated by spaces, commas or semicolons); or a
circle ``center_row, center_col, radius``. Rows without coordinates are
whole-image ROIs. Every other column is kept as free metadata.

``image_height``/``image_width`` are read from the image headers when the
CSV has coordinates, so that boxes are checked against the image.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..manifest import BBOX, STR_COLUMNS
from . import SOURCES
from ._common import check_task, image_shape, read_csv

LABEL_WORDS = {"benign": 0, "malignant": 1, "normal": 0, "abnormal": 1, "negative": 0, "positive": 1,
               "0": 0, "1": 1, "0.0": 0, "1.0": 1}
NAMES = {"benign-malignant": ("benign", "malignant"), "normal-abnormal": ("normal", "abnormal")}


def parse_label(value, *, path=None, row=None) -> int:
    """0/1 from an integer or a class name; InputError naming the row otherwise.

    >>> parse_label("Malignant"), parse_label(0), parse_label(" normal ")
    (1, 0, 0)
    """
    key = str(value).strip().lower()
    if key in LABEL_WORDS:
        return LABEL_WORDS[key]
    raise InputError(f"label '{value}' is not 0/1 or one of benign, malignant, normal, abnormal, "
                     "negative, positive", path=path, row=row, field="label")


def _resolve_csv(root: Path) -> Path:
    if root.is_file():
        return root
    if not root.exists():
        raise InputError("not found; expected a CSV file (path,label,patient_id) or a folder holding one",
                         path=root)
    csvs = sorted(root.glob("*.csv"))
    if len(csvs) != 1:
        raise InputError(f"folder holds {len(csvs)} CSV files; pass the CSV file itself", path=root)
    return csvs[0]


@SOURCES.register("csv")
def csv_source(root: str | Path, task: str = "benign-malignant") -> pd.DataFrame:
    """Manifest from a CSV (see the module docstring for the columns)."""
    check_task("csv", task, tuple(NAMES))
    path = _resolve_csv(Path(root))
    df = read_csv(path, [], dtype=str, keep_default_na=False, na_values=[""])
    pcol = "path" if "path" in df.columns or "image_path" not in df.columns else "image_path"
    missing = [c for c in (pcol, "label", "patient_id") if c not in df.columns]
    if missing:
        raise InputError(f"missing column(s) {missing}; expected path,label,patient_id[,bbox]", path=path)
    df = df.rename(columns={pcol: "image_path"})
    for c in df.columns:  # free numeric metadata back to numbers; ids and names stay strings
        if c not in STR_COLUMNS and c not in ("label", "bbox"):
            try:
                df[c] = pd.to_numeric(df[c])
            except (ValueError, TypeError):
                pass
    df["label"] = [parse_label(v, path=path, row=i + 1) for i, v in enumerate(df["label"])]
    df["label_name"] = [NAMES[task][v] for v in df["label"]]
    if "bbox" in df.columns:
        if any(c in df.columns for c in BBOX):
            raise InputError(f"give either a 'bbox' column or the columns {BBOX}, not both", path=path)
        boxes = np.full((len(df), 4), np.nan)
        for i, v in enumerate(df["bbox"]):
            if pd.isna(v) or str(v).strip() == "":
                continue
            parts = [p for p in re.split(r"[\s,;]+", str(v).strip().strip("[]()")) if p]
            try:
                vals = [float(p) for p in parts]
            except ValueError:
                vals = []
            if len(vals) != 4:
                raise InputError(f"bbox '{v}' is not four numbers 'row0 col0 row1 col1'", path=path,
                                 row=i + 1, field="bbox")
            boxes[i] = vals
        df = df.drop(columns="bbox")
        for k, c in enumerate(BBOX):
            df[c] = boxes[:, k]
    base = path.parent
    df["image_path"] = [str(p if Path(p).is_absolute() else base / p) if isinstance(p, str) else p
                        for p in df["image_path"]]
    if "roi_id" not in df.columns:
        stems = [str(Path(p).relative_to(base)) if isinstance(p, str) and Path(p).is_relative_to(base)
                 else str(p) for p in df["image_path"]]
        k = pd.Series(stems).groupby(stems).cumcount()
        n = pd.Series(stems).map(pd.Series(stems).value_counts())
        df["roi_id"] = [s if m == 1 else f"{s}#{j + 1}" for s, j, m in zip(stems, k, n)]
    has_coords = any(c in df.columns for c in ("radius", *BBOX))
    if has_coords and "image_height" not in df.columns:
        shapes = [image_shape(p) if isinstance(p, str) else (np.nan, np.nan) for p in df["image_path"]]
        df["image_height"] = [s[0] for s in shapes]
        df["image_width"] = [s[1] for s in shapes]
    if "source" not in df.columns:
        df["source"] = "csv"
    df.attrs["dataset"] = {"csv": str(path), "rows": int(len(df))}
    df.attrs["dropped"] = {}
    return df
