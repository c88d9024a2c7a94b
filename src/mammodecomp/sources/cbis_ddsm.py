"""``cbis-ddsm``: the official CBIS-DDSM description CSVs + DICOM files.

Layout (as downloaded from TCIA, the CSVs put beside the DICOM tree)::

    ROOT/mass_case_description_train_set.csv   ROOT/mass_case_description_test_set.csv
    ROOT/calc_case_description_train_set.csv   ROOT/calc_case_description_test_set.csv
    ROOT/<image file path>        e.g. Mass-Training_P_00001_LEFT_CC/<uid>/<uid>/000000.dcm
    ROOT/<ROI mask file path>     (ROOT/CBIS-DDSM/<...> is also searched)

Columns used (the CSVs' own names; ``breast_density`` and ``breast density``
both accepted): ``patient_id, breast density, left or right breast, image
view, abnormality id, abnormality type, pathology, image file path, ROI mask
file path`` (+ ``mass shape, mass margins, calc type, calc distribution,
assessment, subtlety`` kept as metadata). ``cropped image file path`` is not
used: ROIs are cropped from the full film by :mod:`mammodecomp.roi`.

Rules
-----
- label: ``BENIGN`` and ``BENIGN_WITHOUT_CALLBACK`` -> 0, ``MALIGNANT`` -> 1;
  any other pathology is an InputError naming the CSV row.
- patient: ``P_NNNNN`` taken from the image file path
  (``Mass-Training_P_00001_LEFT_CC/...`` -> ``P_00001``); DICOM tags are
  never copied into the manifest (only Rows, Columns and pixel spacing are
  read from the headers).
- the ROI mask gives the box (``bbox_*``, half-open, pixels of the full film).
  The DICOM names on disk often differ from the CSV (``1-1.dcm`` for
  ``000000.dcm``); when the listed file is missing, the DICOMs in that
  folder are searched, and of a mask folder the file with the film's size is
  the mask (the other is the cropped image). Abnormalities whose mask does
  not have the film's size are dropped and counted.
- the official split (``train``/``test``, from the CSV name) is the column
  ``split``.
- a film or mask that cannot be found is an InputError naming the CSV row.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from . import SOURCES
from ._common import check_task, dicom_spacing, image_shape, read_csv, require_dir

PATHOLOGY = {"BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0, "MALIGNANT": 1}
_PATIENT = re.compile(r"(P_\d+)")
NEEDED = ["patient id", "left or right breast", "image view", "abnormality id", "abnormality type",
          "pathology", "image file path", "roi mask file path"]
EXTRA = ["breast density", "mass shape", "mass margins", "calc type", "calc distribution", "assessment",
         "subtlety"]


def _norm(col: str) -> str:
    return " ".join(str(col).strip().lower().replace("_", " ").split())


def patient_from_path(p: str) -> str | None:
    """CBIS-DDSM patient id from a file path.

    >>> patient_from_path("Mass-Training_P_00001_LEFT_CC/1.3.6/1.3.6/000000.dcm")
    'P_00001'
    """
    m = _PATIENT.search(str(p))
    return m.group(1) if m else None


def _clean(p) -> str:
    return str(p).strip().strip('"').strip().replace("\\", "/")


def _locate(root: Path, rel: str) -> list[Path]:
    """The file named in the CSV, or the DICOMs in its top folder when it is not there."""
    for base in (root, root / "CBIS-DDSM"):
        p = base / rel
        if p.is_file():
            return [p]
    top = rel.split("/")[0]
    for base in (root, root / "CBIS-DDSM"):
        d = base / top
        if d.is_dir():
            return sorted(d.rglob("*.dcm"))
    return []


def _mask_bbox(path: Path) -> tuple[int, int, int, int] | None:
    import pydicom
    try:
        arr = pydicom.dcmread(path).pixel_array
    except Exception as e:
        raise InputError(f"cannot read ROI mask ({type(e).__name__}: {e})", path=path) from None
    rows = np.flatnonzero(arr.any(axis=1))
    cols = np.flatnonzero(arr.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def find_csvs(root: Path) -> list[Path]:
    csvs = sorted(p for p in root.glob("*.csv") if "case_description" in p.name.lower())
    if not csvs:
        csvs = sorted(p for p in root.glob("*/*.csv") if "case_description" in p.name.lower())
    return csvs


@SOURCES.register("cbis-ddsm")
def cbis_ddsm_source(root: str | Path, task: str = "benign-malignant", *,
                     abnormality: tuple[str, ...] = ("mass", "calcification"),
                     use_masks: bool = True) -> pd.DataFrame:
    """Manifest for CBIS-DDSM (see the module docstring for layout and rules).

    Parameters
    ----------
    root : folder with the description CSVs and the DICOM tree.
    abnormality : which abnormality types to keep (``mass``, ``calcification``).
    use_masks : read the ROI masks for boxes; False gives whole-film rows.
    """
    check_task("cbis-ddsm", task, ("benign-malignant",))
    root = require_dir(root, "CBIS-DDSM")
    csvs = find_csvs(root)
    if not csvs:
        raise InputError("no CBIS-DDSM description CSV (*case_description*.csv, e.g. "
                         "mass_case_description_train_set.csv)", path=root)
    keep_types = {a.lower() for a in abnormality}
    rows, dropped = [], {"abnormality type not selected": 0, "mask size differs from film": 0,
                         "empty mask": 0}
    shape_cache: dict[Path, tuple[float, float]] = {}
    for csv in csvs:
        df = read_csv(csv, [], dtype=str)
        df.columns = [_norm(c) for c in df.columns]
        missing = [c for c in NEEDED if c not in df.columns]
        if missing:
            raise InputError(f"missing column(s) {missing}; is this a CBIS-DDSM description CSV?", path=csv)
        split = "test" if "test" in csv.name.lower() else "train"
        for i, r in df.iterrows():
            rown = int(i) + 1
            atype = str(r["abnormality type"]).strip().lower()
            if atype not in keep_types:
                dropped["abnormality type not selected"] += 1
                continue
            path_rel = _clean(r["image file path"])
            pathology = str(r["pathology"]).strip().upper()
            if pathology not in PATHOLOGY:
                raise InputError(f"pathology '{r['pathology']}' is not BENIGN, BENIGN_WITHOUT_CALLBACK or "
                                 "MALIGNANT", path=csv, row=rown, field="pathology")
            pid = patient_from_path(path_rel)
            if pid is None:
                raise InputError(f"no patient id (P_NNNNN) in image file path '{path_rel}'", path=csv,
                                 row=rown, field="image file path")
            found = _locate(root, path_rel)
            if len(found) != 1:
                raise InputError(f"film '{path_rel}' not found under {root} or {root / 'CBIS-DDSM'}"
                                 + (f" ({len(found)} DICOMs in its folder, expected 1)" if found else ""),
                                 path=csv, row=rown, field="image file path")
            img = found[0]
            if img not in shape_cache:
                shape_cache[img] = image_shape(img)
            h, w = shape_cache[img]
            side = str(r["left or right breast"]).strip().upper()
            view = str(r["image view"]).strip().upper()
            aid = str(r["abnormality id"]).strip()
            row = {"roi_id": f"{path_rel.split('/')[0]}_{aid}", "patient_id": pid,
                   "label": PATHOLOGY[pathology], "label_name": "malignant" if PATHOLOGY[pathology] else "benign",
                   "image_path": str(img), "source": "cbis-ddsm", "view": view,
                   "laterality": {"LEFT": "L", "RIGHT": "R"}.get(side, side), "lesion_type": atype,
                   "image_height": h, "image_width": w, "pathology": pathology, "split": split,
                   "abnormality_id": aid, "csv_file": csv.name, "csv_row": rown}
            for c in EXTRA:
                if c in df.columns:
                    row[c.replace(" ", "_")] = r[c]
            if use_masks:
                mrel = _clean(r["roi mask file path"])
                cands = _locate(root, mrel)
                if not cands:
                    raise InputError(f"ROI mask not found under {root} (looked for '{mrel}' and its folder)",
                                     path=csv, row=rown, field="ROI mask file path")
                sized = [m for m in cands if image_shape(m) == (h, w)]
                if not sized:
                    dropped["mask size differs from film"] += 1
                    continue
                box = _mask_bbox(sized[0])
                if box is None:
                    dropped["empty mask"] += 1
                    continue
                row.update(zip(["bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1"], map(float, box)))
            rows.append(row)
    if not rows:
        raise InputError(f"no usable abnormality rows in {[c.name for c in csvs]}", path=root)
    out = pd.DataFrame(rows)
    out["pixel_spacing_mm"] = [dicom_spacing(p) for p in out["image_path"]]
    out.attrs["dataset"] = {"csv_files": [c.name for c in csvs], "films": int(out["image_path"].nunique()),
                            "patients": int(out["patient_id"].nunique()), "abnormalities": int(len(out))}
    out.attrs["dropped"] = {k: v for k, v in dropped.items() if v}
    return out
