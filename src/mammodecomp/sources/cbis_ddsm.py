"""``cbis-ddsm``: the CBIS-DDSM case description CSVs + images, in either published layout.

Two layouts are recognised from what is under ``--root`` (:func:`detect_layout`):

``tcia`` (the DICOM download from TCIA, the CSVs put beside the DICOM tree)::

    ROOT/mass_case_description_train_set.csv   ROOT/mass_case_description_test_set.csv
    ROOT/calc_case_description_train_set.csv   ROOT/calc_case_description_test_set.csv
    ROOT/<image file path>        e.g. Mass-Training_P_00001_LEFT_CC/<uid>/<uid>/000000.dcm
    ROOT/<ROI mask file path>     (ROOT/CBIS-DDSM/<...> is also searched; the retriever's
                                   descriptive folder names are found by subject folder)

``kaggle`` (the JPEG re-publication on Kaggle)::

    ROOT/csv/{mass,calc}_case_description_{train,test}_set.csv
    ROOT/csv/dicom_info.csv       one row per image: image_path (CBIS-DDSM/jpeg/<SeriesInstanceUID>/1-NNN.jpg),
                                  SeriesInstanceUID, SeriesDescription (full mammogram images /
                                  cropped images / ROI mask images), PatientID, Rows, Columns, ...
    ROOT/csv/meta.csv
    ROOT/jpeg/<SeriesInstanceUID>/1-NNN.jpg

  The case CSVs' paths name ``<Subject>/<StudyUID>/<SeriesUID>/00000N.dcm``;
  the series UID is joined to ``dicom_info.csv`` to find the JPEG. JPEG masks
  are lossy: they are thresholded at 128 (of 255), and only accepted when at
  most 5% of their pixels lie between 32 and 223 (a cropped image has most of
  its pixels there).

Columns used (the CSVs' own names; ``breast_density`` and ``breast density``
both accepted): ``patient_id, breast density, left or right breast, image
view, abnormality id, abnormality type, pathology, image file path, ROI mask
file path`` (+ ``mass shape, mass margins, calc type, calc distribution,
assessment, subtlety`` kept as metadata). ``cropped image file path`` is only
searched for the mask (some rows swap the two): ROIs are cropped from the
full film by :mod:`mammodecomp.roi`.

Rules
-----
- label: ``BENIGN`` and ``BENIGN_WITHOUT_CALLBACK`` -> 0, ``MALIGNANT`` -> 1;
  any other pathology is an InputError naming the CSV row.
- patient: ``P_NNNNN`` taken from the image file path
  (``Mass-Training_P_00001_LEFT_CC/...`` -> ``P_00001``); DICOM tags are
  never copied into the manifest (only Rows, Columns and pixel spacing are
  read from the headers).
- the ROI mask gives the box (``bbox_*``, half-open, pixels of the full film).
  Files are checked by content: the mask is the candidate with the film's
  size and two values. Candidates are the file the CSV names, then the other
  files of its folder (TCIA: every DICOM under the abnormality's subject
  folder, whatever the study date or series; Kaggle: the series' images,
  ``ROI mask images`` first). Abnormalities with no mask of the film's size,
  no two-valued one, or an empty one are dropped and counted.
- ``abnormality`` (``mass``, ``calcification``/``calc``) and ``split``
  (``train``/``test``, the official split from the CSV name, kept in the
  column ``split``) select rows; the others are counted as dropped.
- a film or mask that cannot be found is an InputError naming the CSV row;
  with ``skip_missing=True`` the row is dropped and counted by reason
  (a partial download keeps what it has).
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


#: the layouts :func:`detect_layout` knows, as named in its error
LAYOUTS = {
    "tcia": "TCIA download: the four *case_description*.csv beside the DICOM tree "
            "<Subject>/<StudyInstanceUID>/<SeriesInstanceUID>/*.dcm",
    "kaggle": "Kaggle JPEG re-publication: csv/ (the four case CSVs, dicom_info.csv, meta.csv) and "
              "jpeg/<SeriesInstanceUID>/1-NNN.jpg",
}
KAGGLE_INFO_COLUMNS = ["image_path", "SeriesInstanceUID", "SeriesDescription"]
FILM_DESC, CROP_DESC, MASK_DESC = "full mammogram images", "cropped images", "ROI mask images"
#: JPEG masks: threshold, and the grey band that at most 1% of a mask's pixels may fall in
JPEG_MASK_THRESHOLD, JPEG_MASK_BAND, JPEG_MASK_BAND_FRACTION = 128, (32, 223), 0.05


def _series_uid(rel: str) -> str:
    parts = [q for q in rel.split("/") if q]
    return parts[-2] if len(parts) >= 2 else ""


def _locate(root: Path, rel: str) -> list[Path]:
    """The file named in the CSV, or the DICOMs in its top folder when it is not there."""
    for base in (root, root / "CBIS-DDSM"):
        p = base / rel
        if p.is_file():
            return [p]
    return _subject_dicoms(root, rel)


def _subject_dicoms(root: Path, rel: str) -> list[Path]:
    top = rel.split("/")[0]
    for base in (root, root / "CBIS-DDSM"):
        d = base / top
        if d.is_dir():
            return sorted(d.rglob("*.dcm"))
    return []


def find_csvs(root: Path) -> list[Path]:
    csvs = sorted(p for p in root.glob("*.csv") if "case_description" in p.name.lower())
    if not csvs:
        csvs = sorted(p for p in root.glob("*/*.csv") if "case_description" in p.name.lower())
    return csvs


def detect_layout(root: Path) -> tuple[str, Path]:
    """``(layout, base folder)`` of a CBIS-DDSM copy, from what is under *root*.

    Kaggle's ``csv/dicom_info.csv`` is looked for in *root* and in a
    ``CBIS-DDSM`` or ``*cbis*`` folder inside it; TCIA's case CSVs in *root*
    or one folder down. Neither: an InputError naming the known layouts.
    """
    bases = [root] + sorted(p for p in root.glob("*") if p.is_dir() and "cbis" in p.name.lower())
    for base in bases:
        if (base / "csv" / "dicom_info.csv").is_file():
            return "kaggle", base
    if find_csvs(root):
        return "tcia", root
    raise InputError("no CBIS-DDSM layout found; expected one of: "
                     + "; ".join(f"{k} ({v})" for k, v in LAYOUTS.items()), path=root)


class _Tcia:
    """DICOM files, found by the CSV path or by subject folder."""
    name = "tcia"

    def __init__(self, root: Path):
        self.root = root
        self.csvs = find_csvs(root)

    def film(self, rel: str) -> list[Path]:
        return _locate(self.root, rel)

    def mask_candidates(self, rels: list[str]) -> list[Path]:
        out: list[Path] = []
        for rel in rels:   # the named file first, then every DICOM of its subject folder
            for base in (self.root, self.root / "CBIS-DDSM"):
                if (base / rel).is_file():
                    out.append(base / rel)
        for rel in rels:
            out += _subject_dicoms(self.root, rel)
        return list(dict.fromkeys(out))

    def mask_bbox(self, path: Path):
        import pydicom
        try:
            arr = pydicom.dcmread(path).pixel_array
        except Exception as e:
            raise InputError(f"cannot read ROI mask ({type(e).__name__}: {e})", path=path) from None
        if np.unique(arr).size > 2:
            return "not two-valued"
        return _bbox(arr > 0)

    def spacing(self, path: Path) -> float:
        return dicom_spacing(path)

    def mask_absent(self, rels: list[str]) -> bool:
        return False   # TCIA lists no files: an absent mask shows as no candidate at all


class _Kaggle:
    """JPEGs under ``jpeg/<SeriesInstanceUID>/``, joined on the series UID through ``dicom_info.csv``."""
    name = "kaggle"

    def __init__(self, base: Path):
        self.root = base
        self.info_path = base / "csv" / "dicom_info.csv"
        info = read_csv(self.info_path, KAGGLE_INFO_COLUMNS, dtype=str)
        self.by_uid: dict[str, list[tuple[Path, str]]] = {}
        for i, (ip, uid, desc) in enumerate(zip(info["image_path"], info["SeriesInstanceUID"],
                                                info["SeriesDescription"])):
            ip = _clean(ip)
            if "jpeg/" not in ip:
                raise InputError(f"image_path '{ip}' has no 'jpeg/' folder; expected "
                                 "CBIS-DDSM/jpeg/<SeriesInstanceUID>/1-NNN.jpg", path=self.info_path, row=i + 1,
                                 field="image_path")
            path = base / ip[ip.index("jpeg/"):]
            self.by_uid.setdefault(str(uid).strip(), []).append((path, str(desc).strip().lower()))
        self.csvs = sorted(p for p in (base / "csv").glob("*.csv") if "case_description" in p.name.lower())

    def _series(self, uid: str) -> list[tuple[Path, str]]:
        listed = list(self.by_uid.get(uid, []))
        folder = self.root / "jpeg" / uid
        if folder.is_dir():  # files on disk that dicom_info.csv does not list
            known = {p for p, _ in listed}
            listed += [(p, "") for p in sorted(folder.glob("*.jpg")) if p not in known]
        return listed

    def film(self, rel: str) -> list[Path]:
        entries = self._series(_series_uid(rel))
        films = [p for p, d in entries if d == FILM_DESC.lower()] or [p for p, _ in entries]
        return [p for p in films if p.is_file()]

    def mask_candidates(self, rels: list[str]) -> list[Path]:
        out: list[Path] = []
        for want in (MASK_DESC.lower(), None):   # 'ROI mask images' first, then the rest of the series
            for rel in rels:
                out += [p for p, d in self._series(_series_uid(rel)) if (want is None or d == want)]
        return [p for p in dict.fromkeys(out) if p.is_file()]

    def mask_absent(self, rels: list[str]) -> bool:
        """dicom_info.csv lists an ``ROI mask images`` file of these series that is not on disk."""
        return any(d == MASK_DESC.lower() and not p.is_file()
                   for rel in rels for p, d in self.by_uid.get(_series_uid(rel), []))

    def mask_bbox(self, path: Path):
        from PIL import Image
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("L"))
        except Exception as e:  # noqa: BLE001
            raise InputError(f"cannot read ROI mask ({type(e).__name__}: {e})", path=path) from None
        lo, hi = JPEG_MASK_BAND
        if ((arr >= lo) & (arr <= hi)).mean() > JPEG_MASK_BAND_FRACTION:
            return "not two-valued"
        return _bbox(arr >= JPEG_MASK_THRESHOLD)

    def spacing(self, path: Path) -> float:
        return np.nan   # the JPEGs carry no pixel spacing


def _bbox(m: np.ndarray):
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


ABNORMALITY_ALIASES = {"mass": "mass", "calc": "calcification", "calcification": "calcification"}


@SOURCES.register("cbis-ddsm")
def cbis_ddsm_source(root: str | Path, task: str = "benign-malignant", *,
                     abnormality: tuple[str, ...] | str | None = ("mass", "calcification"),
                     split: str | None = None, skip_missing: bool = False, layout: str | None = None,
                     use_masks: bool = True) -> pd.DataFrame:
    """Manifest for CBIS-DDSM (see the module docstring for layouts and rules).

    Parameters
    ----------
    root : folder with the description CSVs and the images (either layout).
    abnormality : which abnormality types to keep (``mass``, ``calcification`` or ``calc``).
    split : ``train`` or ``test`` (the official split); None keeps both.
    skip_missing : drop rows whose film or mask is absent (counted per
        reason) instead of stopping at the first.
    layout : ``tcia`` or ``kaggle``; None detects it.
    use_masks : read the ROI masks for boxes; False gives whole-film rows.
    """
    check_task("cbis-ddsm", task, ("benign-malignant",))
    root = require_dir(root, "CBIS-DDSM")
    if isinstance(abnormality, str):
        abnormality = (abnormality,)
    keep_types = set()
    for a in abnormality or ("mass", "calcification"):
        if str(a).lower() not in ABNORMALITY_ALIASES:
            raise InputError(f"abnormality '{a}' is not mass or calc(ification)", field="abnormality")
        keep_types.add(ABNORMALITY_ALIASES[str(a).lower()])
    if split is not None and split not in ("train", "test"):
        raise InputError(f"split '{split}' is not train or test (CBIS-DDSM's official split)", field="split")
    if layout is None:
        layout, base = detect_layout(root)
    elif layout in LAYOUTS:
        base = root
    else:
        raise InputError(f"unknown CBIS-DDSM layout '{layout}'; expected one of: {', '.join(LAYOUTS)}")
    reader = _Kaggle(base) if layout == "kaggle" else _Tcia(base)
    csvs = reader.csvs
    if not csvs:
        raise InputError("no CBIS-DDSM description CSV (*case_description*.csv, e.g. "
                         "mass_case_description_train_set.csv)", path=base / "csv" if layout == "kaggle" else base)
    rows = []
    dropped = dict.fromkeys(["abnormality type not selected", "split not selected", "film file missing",
                             "ROI mask file missing", "mask size differs from film",
                             "no two-valued mask of the film's size", "empty mask"], 0)
    listed_films, listed_patients, listed_rows = set(), set(), 0
    shape_cache: dict[Path, tuple[float, float]] = {}
    missing_hint = "; pass --skip-missing (skip_missing=True) to keep the rows whose files are there"
    for csv in csvs:
        df = read_csv(csv, [], dtype=str)
        df.columns = [_norm(c) for c in df.columns]
        missing = [c for c in NEEDED if c not in df.columns]
        if missing:
            raise InputError(f"missing column(s) {missing}; is this a CBIS-DDSM description CSV?", path=csv)
        csv_split = "test" if "test" in csv.name.lower() else "train"
        csv_rel = str(csv.relative_to(root)) if csv.is_relative_to(root) else str(csv)
        for i, r in df.iterrows():
            rown = int(i) + 1
            listed_rows += 1
            path_rel = _clean(r["image file path"])
            listed_films.add(path_rel)
            atype = str(r["abnormality type"]).strip().lower()
            if atype not in keep_types:
                dropped["abnormality type not selected"] += 1
                continue
            if split is not None and csv_split != split:
                dropped["split not selected"] += 1
                continue
            pathology = str(r["pathology"]).strip().upper()
            if pathology not in PATHOLOGY:
                raise InputError(f"pathology '{r['pathology']}' is not BENIGN, BENIGN_WITHOUT_CALLBACK or "
                                 "MALIGNANT", path=csv, row=rown, field="pathology")
            pid = patient_from_path(path_rel)
            if pid is None:
                raise InputError(f"no patient id (P_NNNNN) in image file path '{path_rel}'", path=csv,
                                 row=rown, field="image file path")
            listed_patients.add(pid)
            found = reader.film(path_rel)
            if len(found) > 1:
                raise InputError(f"film '{path_rel}' is ambiguous: {len(found)} candidate files "
                                 f"({found[0].name}, {found[1].name}, ...), expected 1", path=csv, row=rown,
                                 field="image file path")
            if not found:
                if skip_missing:
                    dropped["film file missing"] += 1
                    continue
                where = (f"under {base / 'jpeg'} (series {_series_uid(path_rel)} via {reader.info_path.name})"
                         if layout == "kaggle" else f"under {root} or {root / 'CBIS-DDSM'}")
                raise InputError(f"film '{path_rel}' not found {where} ({layout} layout){missing_hint}",
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
                   "image_height": h, "image_width": w, "pathology": pathology, "split": csv_split,
                   "abnormality_id": aid, "csv_file": csv_rel, "csv_row": rown}
            for c in EXTRA:
                if c in df.columns:
                    row[c.replace(" ", "_")] = r[c]
            if use_masks:
                mrel = _clean(r["roi mask file path"])
                crel = _clean(r["cropped image file path"]) if "cropped image file path" in df.columns else ""
                rels = [mrel] + ([crel] if crel else [])
                cands = reader.mask_candidates(rels)
                sized = [m for m in cands if image_shape(m) == (h, w)]
                if not sized and reader.mask_absent(rels):
                    cands = []   # the crop is there, the listed mask is not: a partial download
                if not cands:
                    if skip_missing:
                        dropped["ROI mask file missing"] += 1
                        continue
                    raise InputError(f"ROI mask not found under {base} (looked for '{mrel}' and its folder, "
                                     f"{layout} layout){missing_hint}", path=csv, row=rown,
                                     field="ROI mask file path")
                if not sized:
                    dropped["mask size differs from film"] += 1
                    continue
                box = "not two-valued"
                for m in sized:
                    box = reader.mask_bbox(m)
                    if box != "not two-valued":
                        break
                if box == "not two-valued":
                    dropped["no two-valued mask of the film's size"] += 1
                    continue
                if box is None:
                    dropped["empty mask"] += 1
                    continue
                row.update(zip(["bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1"], map(float, box)))
            rows.append(row)
    if not rows:
        raise InputError(f"no usable abnormality rows in {[c.name for c in csvs]} (dropped: "
                         + ", ".join(f"{k}: {v}" for k, v in dropped.items() if v) + ")", path=root)
    out = pd.DataFrame(rows)
    out["pixel_spacing_mm"] = [reader.spacing(p) for p in out["image_path"]]
    out.attrs["dataset"] = {"layout": layout, "csv_files": [c.name for c in csvs], "films": len(listed_films),
                            "patients": len({patient_from_path(f) for f in listed_films} - {None}),
                            "abnormalities": listed_rows}
    if layout == "kaggle":
        out.attrs["dataset"]["masks"] = (f"JPEG (lossy), thresholded at {JPEG_MASK_THRESHOLD} of 255")
    out.attrs["dropped"] = {k: v for k, v in dropped.items() if v}
    out.attrs["csv_root"] = str(root)
    return out
