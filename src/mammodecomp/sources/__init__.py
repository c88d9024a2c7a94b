"""Dataset sources: a data set's own layout -> a validated manifest.

Each source is one module registering a function ``fn(root, task=..., **kw)
-> DataFrame`` on :data:`SOURCES`. :func:`build_manifest` calls it and
validates the result once, at the edge (:func:`mammodecomp.manifest.validate_manifest`:
files exist, ids unique, labels binary, both classes, coordinates inside the
image). Sources fill ``image_height``/``image_width`` so that bounds are
checked, and record what they read and dropped in ``df.attrs["dataset"]`` and
``df.attrs["dropped"]``, which :func:`summarize` reports.

Sources: ``mias``, ``cbis-ddsm``, ``vindr-mammo``, ``csv``, ``folder``,
``synthetic``.

Examples
--------
>>> sorted(SOURCES)
['cbis-ddsm', 'csv', 'folder', 'mias', 'synthetic', 'vindr-mammo']
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..manifest import validate_manifest
from ..registry import Registry

SOURCES = Registry("source")


def build_manifest(source: str, root: str | Path, task: str = "benign-malignant", *,
                   check_files: bool = True, **kw) -> pd.DataFrame:
    """Read a data set with the named source and return a validated manifest.

    Parameters
    ----------
    source : a name in :data:`SOURCES` (``mias``, ``cbis-ddsm``, ...).
    root : the data set's folder (for ``csv``: the CSV file or its folder).
    task : what the labels mean; each source lists the tasks it knows
        (``benign-malignant`` everywhere).
    check_files : check that every image file exists.
    **kw : passed to the source (e.g. ``seed`` for mini-MIAS normal patches).

    Returns
    -------
    DataFrame, one row per ROI, with absolute ``image_path``; ``attrs`` carry
    ``source``, ``task``, ``dataset`` and ``dropped`` counts.

    Raises
    ------
    InputError : unknown source or task, missing folder or file, malformed
        annotation, or a manifest that fails validation.
    """
    fn = SOURCES.get(source)
    root = Path(root).absolute()   # a relative root must not be applied twice
    df = fn(root, task=task, **kw)
    attrs = dict(df.attrs)
    try:
        out = validate_manifest(df, path=Path(root), root=Path(root) if Path(root).is_dir() else Path(root).parent,
                                check_files=check_files)
    except InputError as e:
        raise _in_source_terms(e, df) from None
    out.attrs = {**attrs, "source": source, "task": task}
    return out


def _in_source_terms(e: InputError, df: pd.DataFrame) -> InputError:
    """A validation error about manifest row *n*, told as the row (and column) of the source's own CSV.

    Sources that read an annotation CSV give each manifest row ``csv_file``
    (relative to ``attrs["csv_root"]``) and ``csv_row``, and may map manifest
    fields to their CSV columns in ``attrs["csv_fields"]``.
    """
    if e.row is None or not {"csv_file", "csv_row"} <= set(df.columns) or not 1 <= e.row <= len(df):
        return e
    r = df.iloc[e.row - 1]
    base = Path(df.attrs.get("csv_root", "."))
    field = df.attrs.get("csv_fields", {}).get(e.field, e.field) if e.field else None
    return InputError(e.message, path=base / str(r["csv_file"]), row=int(r["csv_row"]), field=field)


def _has_coords(df: pd.DataFrame) -> np.ndarray:
    n = len(df)
    c = np.zeros(n, bool)
    if "radius" in df.columns:
        c |= df["radius"].notna().to_numpy()
    if "bbox_row0" in df.columns:
        c |= df["bbox_row0"].notna().to_numpy()
    return c


def summarize(df: pd.DataFrame) -> dict:
    """Counts that describe a manifest.

    Returns a dict with ``rois`` (rows), ``classes`` (rows per label name,
    or per label), ``patients`` and ``films`` in the manifest,
    ``located_rois`` (rows with coordinates), ``patients_with_rois``,
    ``dataset`` (what the source read: e.g. all films and patients of the
    data set, including those not in this task's manifest) and ``dropped``
    (rows the source left out, by reason).

    Examples
    --------
    >>> df = pd.DataFrame({"roi_id": ["a", "b", "c"], "patient_id": ["p1", "p1", "p2"],
    ...                    "label": [0, 1, 1], "image_path": ["f1", "f1", "f2"],
    ...                    "label_name": ["benign", "malignant", "malignant"]})
    >>> s = summarize(df)
    >>> s["rois"], s["patients"], s["films"], s["classes"]
    (3, 2, 2, {'benign': 1, 'malignant': 2})
    """
    names = df["label_name"] if "label_name" in df.columns else df["label"].astype(str)
    classes = {str(k): int(v) for k, v in names.value_counts().sort_index().items()}
    located = _has_coords(df)
    return {
        "source": df.attrs.get("source", df["source"].iloc[0] if "source" in df.columns and len(df) else None),
        "task": df.attrs.get("task"),
        "rois": int(len(df)),
        "classes": classes,
        "patients": int(df["patient_id"].nunique()),
        "films": int(df["image_path"].nunique()),
        "located_rois": int(located.sum()),
        "patients_with_rois": int(df.loc[located, "patient_id"].nunique()),
        "dataset": dict(df.attrs.get("dataset", {})),
        "dropped": dict(df.attrs.get("dropped", {})),
    }


# register the sources (each module decorates its function with SOURCES.register)
from . import mias, cbis_ddsm, vindr, csv_source, folder, synthetic  # noqa: E402,F401

__all__ = ["SOURCES", "build_manifest", "summarize"]
