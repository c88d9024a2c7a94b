"""Helpers shared by the dataset sources (not public API)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..io import IMAGE_SUFFIXES

def require_dir(root: str | Path, what: str) -> Path:
    """Return *root* as a Path, or raise InputError when it is not a folder."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"folder not found; expected the {what} folder", path=root)
    if not root.is_dir():
        raise InputError(f"not a folder; expected the {what} folder", path=root)
    return root


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise InputError(f"file not found; expected {what}", path=path)
    return path


def read_csv(path: Path, required: list[str], **kw) -> pd.DataFrame:
    """Read a CSV and check that *required* columns are present (named in the error)."""
    try:
        df = pd.read_csv(path, **kw)
    except pd.errors.EmptyDataError:
        raise InputError("CSV file is empty", path=path) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise InputError(f"cannot parse CSV ({type(e).__name__}: {e})", path=path) from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"missing column(s) {missing}; found {list(df.columns)}", path=path)
    if len(df) == 0:
        raise InputError("CSV has no data rows", path=path)
    return df


def image_shape(path: str | Path) -> tuple[float, float]:
    """(height, width) from the file header without decoding pixels; NaNs when unknown.

    DICOM headers are read with ``stop_before_pixels``; only ``Rows`` and
    ``Columns`` are looked at (no patient tag is ever read out).
    """
    path = Path(path)
    if not path.is_file():
        return (np.nan, np.nan)
    suffix = path.suffix.lower()
    try:
        if suffix in {".dcm", ".dicom"} or _is_dicom(path):
            import pydicom
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return (float(ds.Rows), float(ds.Columns))
        if suffix in {".tif", ".tiff"}:
            import tifffile
            with tifffile.TiffFile(path) as tf:
                shp = tf.pages[0].shape
            return (float(shp[0]), float(shp[1]))
        from PIL import Image
        with Image.open(path) as im:
            w, h = im.size
        return (float(h), float(w))
    except Exception:  # unreadable: read_image reports it later with the reason
        return (np.nan, np.nan)


def dicom_spacing(path: str | Path) -> float:
    """Pixel spacing (mm) from a DICOM header, NaN when absent or unreadable."""
    try:
        import pydicom
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return np.nan
    sp = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    try:
        return float(sp[0]) if sp else np.nan
    except (TypeError, ValueError):
        return np.nan


def _is_dicom(path: Path) -> bool:
    from ..io import _looks_dicom
    return _looks_dicom(path)


def list_images(folder: Path) -> list[Path]:
    """Image files under *folder* (recursive), sorted, hidden files skipped."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def check_task(source: str, task: str, tasks: tuple[str, ...]) -> None:
    if task not in tasks:
        raise InputError(f"source '{source}' has no task '{task}'; expected one of: {', '.join(tasks)}")
