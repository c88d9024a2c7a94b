"""The manifest: one table, one row per ROI.

Columns
-------
Required: ``roi_id`` (unique str), ``patient_id`` (str), ``label`` (0 benign /
1 malignant, or 0 normal / 1 abnormal), ``image_path`` (film or ROI image;
relative paths are resolved against the manifest's folder).

Optional: ``label_name``, ``source``, ``view``, ``laterality``,
``lesion_type``, ``lesion_id`` (ROIs of one finding, e.g. its CC and
MLO views: one patient, one label; out-of-fold scores are also pooled per
lesion), ``center_row``, ``center_col``, ``radius`` (pixels, origin
top-left) or a bbox ``bbox_row0, bbox_col0, bbox_row1, bbox_col1`` (pixels,
half-open), ``image_height``, ``image_width``, ``pixel_spacing_mm``,
``split`` (an official split), and any free metadata.

A row without coordinates means "the image *is* the ROI" (synthetic ROIs,
pre-cropped data sets).

Validation happens once, here, at the edge: :func:`validate_manifest` raises
:class:`~mammodecomp.errors.InputError` with one line naming the file, the
row (1-based data row) and what was expected.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .io import atomic_write

REQUIRED = ["roi_id", "patient_id", "label", "image_path"]
COORDS = ["center_row", "center_col", "radius"]
BBOX = ["bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1"]
OPTIONAL = ["label_name", "source", "view", "laterality", "lesion_type", "lesion_id", *COORDS, *BBOX,
            "image_height", "image_width", "pixel_spacing_mm", "split"]
COLUMNS = REQUIRED + OPTIONAL
STR_COLUMNS = ["roi_id", "patient_id", "label_name", "image_path", "source", "view",
               "laterality", "lesion_type", "lesion_id", "split"]


def _row(i: int) -> int:
    return int(i) + 1


def validate_manifest(df: pd.DataFrame, *, path: str | Path | None = None, root: str | Path | None = None,
                      check_files: bool = True, require_both_classes: bool = True,
                      check_bounds: bool = True) -> pd.DataFrame:
    """Check a manifest and return a normalised copy.

    Parameters
    ----------
    df : the table.
    path : where it came from (named in errors).
    root : folder that relative ``image_path`` values are relative to;
        the manifest's folder by default, else the current folder.
    check_files : check that every image exists.
    require_both_classes : raise when only one class is present.
    check_bounds : check coordinates against ``image_height``/``image_width``
        where those columns are present.

    Returns
    -------
    A copy with canonical dtypes and absolute ``image_path``.

    Examples
    --------
    >>> df = pd.DataFrame({"roi_id": ["a", "b"], "patient_id": ["p1", "p2"],
    ...                    "label": [0, 1], "image_path": ["x.png", "y.png"]})
    >>> validate_manifest(df, check_files=False)["label"].tolist()
    [0, 1]
    >>> df.loc[1, "label"] = 2
    >>> validate_manifest(df, check_files=False)
    Traceback (most recent call last):
    ...
    mammodecomp.errors.InputError: row 2, field 'label': value 2 is not a binary label; expected 0 or 1
    """
    where = path
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise InputError(f"missing required column(s) {missing}; expected at least {REQUIRED}", path=where)
    if len(df) == 0:
        raise InputError("manifest has no rows", path=where)
    df = df.copy().reset_index(drop=True)
    for col in REQUIRED:
        bad = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError("value is missing (empty or NaN)", path=where, row=_row(i), field=col)
    for col in STR_COLUMNS:
        if col in df.columns:
            df[col] = df[col].map(lambda v: v if (v is None or (isinstance(v, float) and np.isnan(v)))
                                  else _as_str(v))
    # labels
    lab = pd.to_numeric(df["label"], errors="coerce")
    for i, (raw, v) in enumerate(zip(df["label"], lab)):
        if pd.isna(v) or v not in (0, 1):
            raise InputError(f"value {raw!r} is not a binary label; expected 0 or 1".replace("'", "")
                             if not isinstance(raw, str) else
                             f"value '{raw}' is not a binary label; expected 0 or 1",
                             path=where, row=_row(i), field="label")
    df["label"] = lab.astype(np.int64)
    if require_both_classes and df["label"].nunique() < 2:
        only = int(df["label"].iloc[0])
        raise InputError(f"all {len(df)} rows have label {only}; a classifier needs both classes 0 and 1",
                         path=where, field="label")
    dup = df["roi_id"].duplicated(keep=False)
    if dup.any():
        idx = np.flatnonzero(dup.to_numpy())
        rid = df["roi_id"].iloc[idx[0]]
        first = [int(j) + 1 for j in idx if df["roi_id"].iloc[j] == rid][:2]
        raise InputError(f"duplicate roi_id '{rid}' (rows {first[0]} and {first[1]}); roi_id must be unique",
                         path=where, field="roi_id")
    if "lesion_id" in df.columns:
        _check_lesions(df, where)
    # numeric optional columns
    for col in [*COORDS, *BBOX, "image_height", "image_width", "pixel_spacing_mm"]:
        if col in df.columns:
            num = pd.to_numeric(df[col], errors="coerce")
            bad = num.isna() & df[col].notna() & (df[col].astype(str).str.strip() != "")
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise InputError(f"value '{df[col].iloc[i]}' is not a number", path=where, row=_row(i), field=col)
            if np.isinf(num.to_numpy(dtype=float)).any():
                i = int(np.flatnonzero(np.isinf(num.to_numpy(dtype=float)))[0])
                raise InputError("value is infinite; expected a finite number", path=where, row=_row(i), field=col)
            df[col] = num.astype(float)
    _check_coords(df, where, check_bounds)
    # paths
    base = Path(root) if root is not None else (Path(path).parent if path is not None else Path.cwd())
    df["image_path"] = [str(p if Path(p).is_absolute() else (base / p)) for p in df["image_path"]]
    if check_files:
        for i, p in enumerate(df["image_path"]):
            if not Path(p).is_file():
                raise InputError(f"image file not found: {p}", path=where, row=_row(i), field="image_path")
    return df


def _check_lesions(df: pd.DataFrame, where) -> None:
    """Every ROI has a lesion_id; the ROIs of one lesion share one patient and one label."""
    lid = df["lesion_id"]
    bad = lid.isna() | (lid.astype(str).str.strip() == "")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError("value is missing; with a lesion_id column every ROI names its lesion "
                         "(its own roi_id when it is the lesion's only view)", path=where, row=_row(i),
                         field="lesion_id")
    for col, what in (("patient_id", "patients"), ("label", "labels")):
        first = df.groupby("lesion_id", sort=False)[col].transform("first")
        diff = (df[col] != first).to_numpy()
        if diff.any():
            i = int(np.flatnonzero(diff)[0])
            j = int(np.flatnonzero((lid == lid.iloc[i]).to_numpy())[0])
            raise InputError(f"lesion '{lid.iloc[i]}' has ROIs of two {what} ({col} '{df[col].iloc[j]}' "
                             f"in row {_row(j)}, '{df[col].iloc[i]}' here); the ROIs of a lesion are views of "
                             "one finding", path=where, row=_row(i), field="lesion_id")


def _as_str(v) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _check_coords(df: pd.DataFrame, where, check_bounds: bool) -> None:
    has_c = all(c in df.columns for c in COORDS)
    has_b = all(c in df.columns for c in BBOX)
    partial = [c for c in COORDS if c in df.columns] if not has_c else []
    if partial and not has_b:
        raise InputError(f"coordinate columns {partial} given without the rest of {COORDS}", path=where)
    n = len(df)
    H = df["image_height"].to_numpy(float) if "image_height" in df.columns else np.full(n, np.nan)
    W = df["image_width"].to_numpy(float) if "image_width" in df.columns else np.full(n, np.nan)
    if has_c:
        r, c, rad = (df[k].to_numpy(float) for k in COORDS)
        some = ~np.isnan(r) | ~np.isnan(c) | ~np.isnan(rad)
        allc = ~np.isnan(r) & ~np.isnan(c) & ~np.isnan(rad)
        bad = some & ~allc
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError("center_row, center_col and radius must be given together or not at all",
                             path=where, row=_row(i))
        neg = allc & ((r < 0) | (c < 0) | (rad <= 0))
        if neg.any():
            i = int(np.flatnonzero(neg)[0])
            raise InputError(f"lesion at row {r[i]:g}, col {c[i]:g}, radius {rad[i]:g}: "
                             "coordinates must be >= 0 and radius > 0", path=where, row=_row(i))
        if check_bounds:
            out = allc & ~np.isnan(H) & ~np.isnan(W) & ((r >= H) | (c >= W))
            if out.any():
                i = int(np.flatnonzero(out)[0])
                raise InputError(f"lesion centre (row {r[i]:g}, col {c[i]:g}) is outside the "
                                 f"{int(H[i])}x{int(W[i])} image", path=where, row=_row(i))
    if has_b:
        b = np.stack([df[k].to_numpy(float) for k in BBOX], 1)
        allb = ~np.isnan(b).any(1)
        bad = allb & ((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]) | (b[:, :2] < 0).any(1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"bbox {b[i].tolist()} is empty or negative; expected row0 < row1 and col0 < col1, "
                             "all >= 0", path=where, row=_row(i))
        if check_bounds:
            out = allb & ~np.isnan(H) & ~np.isnan(W) & ((b[:, 2] > H) | (b[:, 3] > W))
            if out.any():
                i = int(np.flatnonzero(out)[0])
                raise InputError(f"bbox {b[i].tolist()} reaches outside the {int(H[i])}x{int(W[i])} image",
                                 path=where, row=_row(i))


def load_manifest(path: str | Path, **kwargs) -> pd.DataFrame:
    """Read and validate a manifest (Parquet or CSV).

    Keyword arguments go to :func:`validate_manifest`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("manifest file not found", path=path)
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype={"roi_id": str, "patient_id": str})
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"cannot read manifest ({type(e).__name__}: {e})", path=path) from None
    return validate_manifest(df, path=path, **kwargs)


def save_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a manifest atomically (Parquet by suffix ``.parquet``, else CSV)."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        if path.suffix.lower() in {".parquet", ".pq"}:
            df.to_parquet(f, index=False)
        else:
            f.write(df.to_csv(index=False).encode())
    return path


def manifest_hash(df: pd.DataFrame) -> str:
    """A stable hash of the rows that matter for training (ids, labels, paths, coordinates).

    ``lesion_id`` is left out: it groups views for the lesion-level summary,
    which is recomputed on every resume, and changes no trained fold.
    """
    cols = [c for c in COLUMNS if c in df.columns and c != "lesion_id"]
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(df[cols].astype(str), index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def warn_rare(df: pd.DataFrame, n_folds: int) -> None:
    """Warn when a class has few patients compared with the number of folds."""
    for lab, g in df.groupby("label"):
        n = g["patient_id"].nunique()
        if n < 2 * n_folds:
            warnings.warn(f"class {lab} has only {n} patients for {n_folds} folds; "
                          "fold metrics will be noisy", stacklevel=2)
