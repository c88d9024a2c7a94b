"""``vindr-mammo``: VinDr-Mammo annotations + DICOM films.

Layout (PhysioNet release)::

    ROOT/finding_annotations.csv
    ROOT/breast-level_annotations.csv
    ROOT/images/<study_id>/<image_id>.dicom

``finding_annotations.csv`` columns: ``study_id, series_id, image_id,
laterality, view_position, height, width, breast_birads, breast_density,
finding_categories, finding_birads, xmin, ymin, xmax, ymax, split``.

Label rule (VinDr-Mammo has no biopsy-proven pathology, so the finding's
BI-RADS assessment stands in for it):

- finding BI-RADS 2 or 3 -> 0 (``benign``: benign or probably benign);
- finding BI-RADS 4 or 5 -> 1 (``malignant``: suspicious or highly suggestive);
- every other row is dropped and counted in ``attrs["dropped"]``: rows
  without a box or a finding BI-RADS (``No Finding``), and BI-RADS 1 or
  others outside 2-5.

Boxes are pixels of the film: ``bbox_row0 = ymin, bbox_col0 = xmin,
bbox_row1 = ymax, bbox_col1 = xmax``. Patient = ``study_id`` (one study per
woman in VinDr-Mammo). The official ``split`` is kept, and ``split=`` selects
``training`` (``train``) or ``test``. The breast-level CSV gives the data-set
counts (images, studies), which ``data summary`` prints, and must list every
image a finding refers to. A finding whose DICOM is absent is an error naming
its row of ``finding_annotations.csv``, or, with ``skip_missing=True`` (a
partial download), dropped and counted. Errors found when the manifest is
validated (a box outside its film) also name that CSV's row and column.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from . import SOURCES
from ._common import check_task, dicom_spacing, read_csv, require_dir, require_file

FINDING_COLUMNS = ["study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
                   "breast_birads", "breast_density", "finding_categories", "finding_birads",
                   "xmin", "ymin", "xmax", "ymax", "split"]
BREAST_COLUMNS = ["study_id", "image_id", "laterality", "view_position", "height", "width", "breast_birads"]
_BIRADS = re.compile(r"(\d)")


def birads_number(value) -> float:
    """The BI-RADS category as a number (NaN when absent).

    >>> birads_number("BI-RADS 4"), birads_number(3), birads_number(float("nan"))
    (4.0, 3.0, nan)
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    m = _BIRADS.search(str(value))
    return float(m.group(1)) if m else np.nan


def _categories(value) -> list[str]:
    if isinstance(value, float) and np.isnan(value):
        return []
    s = str(value).strip()
    try:
        v = ast.literal_eval(s)
        return [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)]
    except (ValueError, SyntaxError):
        return [s]


@SOURCES.register("vindr-mammo")
def vindr_source(root: str | Path, task: str = "benign-malignant", *,
                 benign_birads: tuple[int, ...] = (2, 3), malignant_birads: tuple[int, ...] = (4, 5),
                 categories: tuple[str, ...] | None = None, read_spacing: bool = True,
                 split: str | None = None, skip_missing: bool = False) -> pd.DataFrame:
    """Manifest for VinDr-Mammo findings (see the module docstring for the label rule).

    Parameters
    ----------
    root : the VinDr-Mammo folder.
    benign_birads, malignant_birads : finding BI-RADS categories mapped to 0 and 1.
    categories : keep only findings with one of these categories (e.g. ``("Mass",)``).
    read_spacing : read ``PixelSpacing`` from the DICOM headers of kept films.
    split : ``training`` (or ``train``) or ``test``: keep that official split only.
    skip_missing : drop (and count) findings whose DICOM file is absent.
    """
    check_task("vindr-mammo", task, ("benign-malignant",))
    root = require_dir(root, "VinDr-Mammo")
    fpath = require_file(root / "finding_annotations.csv", "VinDr-Mammo finding_annotations.csv")
    bpath = require_file(root / "breast-level_annotations.csv", "VinDr-Mammo breast-level_annotations.csv")
    f = read_csv(fpath, FINDING_COLUMNS, dtype={"study_id": str, "series_id": str, "image_id": str})
    b = read_csv(bpath, BREAST_COLUMNS, dtype={"study_id": str, "image_id": str})
    known = set(b["image_id"])
    unknown = ~f["image_id"].isin(known)
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        raise InputError(f"image_id '{f['image_id'].iloc[i]}' is not in breast-level_annotations.csv",
                         path=fpath, row=i + 1, field="image_id")
    f = f.reset_index(drop=True)
    f["csv_row"] = np.arange(1, len(f) + 1)
    f["birads"] = f["finding_birads"].map(birads_number)
    box = f[["xmin", "ymin", "xmax", "ymax"]].apply(pd.to_numeric, errors="coerce")
    has_box = box.notna().all(axis=1)
    dropped = {}
    no_finding = ~has_box | f["birads"].isna()
    dropped["no box or no finding BI-RADS"] = int(no_finding.sum())
    lab = pd.Series(np.nan, index=f.index)
    lab[f["birads"].isin(benign_birads)] = 0
    lab[f["birads"].isin(malignant_birads)] = 1
    other = ~no_finding & lab.isna()
    dropped["finding BI-RADS outside the label rule"] = int(other.sum())
    keep = ~no_finding & ~other
    cats = f["finding_categories"].map(_categories)
    if categories is not None:
        want = set(categories)
        sel = cats.map(lambda c: bool(want & set(c)))
        dropped["category not selected"] = int((keep & ~sel).sum())
        keep &= sel
    if split is not None:
        want_split = {"train": "training"}.get(split, split)
        if want_split not in ("training", "test"):
            raise InputError(f"split '{split}' is not training (train) or test (VinDr-Mammo's official split)",
                             field="split")
        sel = f["split"].astype(str).str.strip() == want_split
        dropped["split not selected"] = int((keep & ~sel).sum())
        keep &= sel
    paths = pd.Series([str(root / "images" / str(s) / f"{i}.dicom") for s, i in zip(f["study_id"], f["image_id"])],
                      index=f.index)
    present = pd.Series(False, index=f.index)
    present[keep] = [Path(q).is_file() for q in paths[keep]]
    absent = keep & ~present
    if absent.any():
        i = int(np.flatnonzero(absent.to_numpy())[0])
        if not skip_missing:
            raise InputError(f"image file not found: {paths.iloc[i]}; pass --skip-missing (skip_missing=True) to "
                             "keep the findings whose files are there", path=fpath, row=i + 1, field="image_id")
        dropped["image file missing"] = int(absent.sum())
        keep &= present
    g = f[keep].copy()
    bx = box[keep]
    g["label"] = lab[keep].astype(int)
    g["label_name"] = np.where(g["label"] == 1, "malignant", "benign")
    g["roi_id"] = g["image_id"] + "_" + (g.groupby("image_id").cumcount() + 1).astype(str)
    out = pd.DataFrame({
        "roi_id": g["roi_id"], "patient_id": g["study_id"], "label": g["label"], "label_name": g["label_name"],
        "image_path": [str(root / "images" / s / f"{i}.dicom") for s, i in zip(g["study_id"], g["image_id"])],
        "source": "vindr-mammo", "view": g["view_position"].astype(str), "laterality": g["laterality"].astype(str),
        "lesion_type": cats[keep].map(lambda c: "+".join(c)),
        "bbox_row0": bx["ymin"], "bbox_col0": bx["xmin"], "bbox_row1": bx["ymax"], "bbox_col1": bx["xmax"],
        "image_height": pd.to_numeric(g["height"], errors="coerce"),
        "image_width": pd.to_numeric(g["width"], errors="coerce"),
        "split": g["split"].astype(str), "finding_birads": g["finding_birads"], "breast_birads": g["breast_birads"],
        "breast_density": g["breast_density"], "study_id": g["study_id"], "image_id": g["image_id"],
        "csv_row": g["csv_row"], "csv_file": fpath.name,
    }).reset_index(drop=True)
    if read_spacing:
        cache: dict[str, float] = {}
        out["pixel_spacing_mm"] = [cache.setdefault(p, dicom_spacing(p)) for p in out["image_path"]]
    out.attrs["dataset"] = {"images": int(b["image_id"].nunique()), "studies": int(b["study_id"].nunique()),
                            "finding_rows": int(len(f))}
    out.attrs["dropped"] = {k: v for k, v in dropped.items() if v}
    out.attrs["csv_root"] = str(root)
    out.attrs["csv_fields"] = {"bbox_row0": "ymin", "bbox_col0": "xmin", "bbox_row1": "ymax", "bbox_col1": "xmax",
                               "image_height": "height", "image_width": "width", "label": "finding_birads"}
    return out
