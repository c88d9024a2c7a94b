"""cbis-ddsm as users have it: Kaggle's JPEG re-publication, partial downloads, files checked by content.

The Kaggle fixture mirrors the published layout file for file (tiny pixels)::

    csv/calc_case_description_test_set.csv   csv/calc_case_description_train_set.csv
    csv/mass_case_description_test_set.csv   csv/mass_case_description_train_set.csv
    csv/dicom_info.csv   csv/meta.csv
    jpeg/<SeriesInstanceUID>/1-NNN.jpg

``dicom_info.csv`` and ``meta.csv`` carry the Kaggle files' column names; the
source reads ``image_path``, ``SeriesInstanceUID`` and ``SeriesDescription``.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mammodecomp.errors import InputError
from mammodecomp.manifest import load_manifest
from mammodecomp.sources import build_manifest, summarize
from test_sources_dicom import CALC_COLS, MASS_COLS, U1, U2, cbis_layout, film, mask

H, W = 64, 48
DICOM_INFO_COLS = ["file_path", "image_path", "AccessionNumber", "BitsAllocated", "BitsStored", "BodyPartExamined",
                   "Columns", "ContentDate", "ContentTime", "ConversionType", "HighBit", "InstanceNumber",
                   "LargestImagePixelValue", "Laterality", "Modality", "PatientBirthDate", "PatientID",
                   "PatientName", "PatientOrientation", "PatientSex", "PhotometricInterpretation",
                   "PixelRepresentation", "ReferringPhysicianName", "Rows", "SOPClassUID", "SOPInstanceUID",
                   "SamplesPerPixel", "SecondaryCaptureDeviceManufacturer",
                   "SecondaryCaptureDeviceManufacturerModelName", "SeriesDescription", "SeriesInstanceUID",
                   "SeriesNumber", "SmallestImagePixelValue", "SpecificCharacterSet", "StudyDate", "StudyID",
                   "StudyInstanceUID", "StudyTime"]
META_COLS = ["SeriesInstanceUID", "StudyInstanceUID", "Subject ID", "Study Description", "Study Date",
             "Series Description", "Manufacturer", "3D", "Number of Images", "File Size (Bytes)", "File Size"]
UID = "1.3.6.1.4.1.9590.100.1.2."
# (subject, CSV name, abnormality type, pathology, mask box) ; the film series, the ROI series
CASES = [
    # crop and mask in one series (the usual pattern), the CSV naming them as 000000/000001
    ("Mass-Training_P_00001_LEFT_CC", "mass_case_description_train_set.csv", "mass", "MALIGNANT", (8, 8, 32, 24)),
    # second abnormality of the same film; the CSV swaps the crop and mask paths (a known Kaggle quirk)
    ("Mass-Training_P_00001_LEFT_CC", "mass_case_description_train_set.csv", "mass", "BENIGN", (40, 16, 56, 40)),
    ("Mass-Test_P_00002_RIGHT_MLO", "mass_case_description_test_set.csv", "mass", "BENIGN_WITHOUT_CALLBACK",
     (16, 0, 48, 16)),
    ("Calc-Training_P_00003_LEFT_MLO", "calc_case_description_train_set.csv", "calcification", "MALIGNANT",
     (24, 24, 32, 40)),
    ("Calc-Test_P_00004_RIGHT_CC", "calc_case_description_test_set.csv", "calcification", "BENIGN",
     (0, 8, 16, 24)),
]


def _jpeg(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=95)
    return path


def kaggle_layout(root: Path) -> Path:
    rng = np.random.default_rng(0)
    info, meta, csv_rows = [], [], {name: [] for name in {c[1] for c in CASES} | {
        "mass_case_description_train_set.csv", "mass_case_description_test_set.csv",
        "calc_case_description_train_set.csv", "calc_case_description_test_set.csv"}}
    film_series: dict[str, str] = {}
    film_study: dict[str, str] = {}
    aid_count: dict[str, int] = {}
    n = 0
    for subject, csv_name, atype, pathology, box in CASES:
        n += 1
        study = f"{UID}{100 + n}"
        if subject not in film_series:
            film_study[subject] = study
            fs = film_series[subject] = f"{UID}{200 + n}"
            img = rng.integers(30, 220, (H, W)).astype(np.uint8)
            _jpeg(root / "jpeg" / fs / f"1-{n}.jpg", img)
            info.append((f"CBIS-DDSM/jpeg/{fs}/1-{n}.jpg", subject, fs, study, "full mammogram images", H, W))
            meta.append((fs, study, subject, "", "", "full mammogram images", "", "NO", 1, 1, ""))
        aid = aid_count[subject] = aid_count.get(subject, 0) + 1
        roi_subject = f"{subject}_{aid}"
        rs = f"{UID}{300 + n}"
        crop = rng.integers(30, 220, (box[2] - box[0], box[3] - box[1])).astype(np.uint8)
        m = np.zeros((H, W), np.uint8)
        m[box[0]:box[2], box[1]:box[3]] = 255
        _jpeg(root / "jpeg" / rs / f"1-{10 + n}.jpg", crop)
        _jpeg(root / "jpeg" / rs / f"2-{10 + n}.jpg", m)
        info.append((f"CBIS-DDSM/jpeg/{rs}/1-{10 + n}.jpg", roi_subject, rs, study, "cropped images", *crop.shape))
        info.append((f"CBIS-DDSM/jpeg/{rs}/2-{10 + n}.jpg", roi_subject, rs, study, "ROI mask images", H, W))
        meta.append((rs, study, roi_subject, "", "", "ROI mask images", "", "NO", 2, 1, ""))
        film_rel = f"{subject}/{film_study[subject]}/{film_series[subject]}/000000.dcm\n"
        crop_rel, mask_rel = f"{roi_subject}/{study}/{rs}/000000.dcm\n", f"{roi_subject}/{study}/{rs}/000001.dcm\n"
        if aid == 2:
            crop_rel, mask_rel = mask_rel, crop_rel
        side, view = subject.split("_")[-2:]
        if atype == "mass":
            csv_rows[csv_name].append(["P_" + subject.split("_P_")[1][:5], 3, side, view, aid, "mass", "OVAL",
                                       "CIRCUMSCRIBED", 4, pathology, 3, film_rel, crop_rel, mask_rel])
        else:
            csv_rows[csv_name].append(["P_" + subject.split("_P_")[1][:5], 2, side, view, aid, "calcification",
                                       "PLEOMORPHIC", "CLUSTERED", 4, pathology, 3, film_rel, crop_rel, mask_rel])
    (root / "csv").mkdir(parents=True, exist_ok=True)
    for name, rows in csv_rows.items():
        cols = MASS_COLS if name.startswith("mass") else CALC_COLS
        pd.DataFrame(rows, columns=cols).to_csv(root / "csv" / name, index=False)
    recs = []
    for k, (ip, subject, series, study, desc, rows, cols) in enumerate(info):
        r = dict.fromkeys(DICOM_INFO_COLS, "")
        r.update(file_path=f"CBIS-DDSM/dicom/{UID}9{k}.dcm", image_path=ip, PatientID=subject,
                 SeriesInstanceUID=series, StudyInstanceUID=study, SeriesDescription=desc, Rows=rows, Columns=cols,
                 BitsAllocated=16, BitsStored=16, Modality="MG", PhotometricInterpretation="MONOCHROME2",
                 SOPInstanceUID=f"{UID}9{k}")
        recs.append(r)
    pd.DataFrame(recs, columns=DICOM_INFO_COLS).to_csv(root / "csv" / "dicom_info.csv", index=False)
    pd.DataFrame(meta, columns=META_COLS).to_csv(root / "csv" / "meta.csv", index=False)
    return root


@pytest.fixture
def kaggle(tmp_path):
    return kaggle_layout(tmp_path / "cbis-ddsm-kaggle")


def _series_of(root, subject_suffix, desc):
    info = pd.read_csv(root / "csv" / "dicom_info.csv", dtype=str)
    r = info[(info.PatientID == subject_suffix) & (info.SeriesDescription == desc)].iloc[0]
    return root / r.image_path.split("CBIS-DDSM/")[1]


def test_kaggle_layout_detected_and_read(kaggle):
    df = build_manifest("cbis-ddsm", kaggle).set_index("roi_id")
    assert sorted(df.index) == ["Calc-Test_P_00004_RIGHT_CC_1", "Calc-Training_P_00003_LEFT_MLO_1",
                                "Mass-Test_P_00002_RIGHT_MLO_1", "Mass-Training_P_00001_LEFT_CC_1",
                                "Mass-Training_P_00001_LEFT_CC_2"]
    boxes = {f"{c[0]}_{i}": c[4] for i, c in [(1, CASES[0]), (2, CASES[1]), (1, CASES[2]), (1, CASES[3]),
                                               (1, CASES[4])]}
    for rid, box in boxes.items():  # JPEG masks thresholded back to the drawn box
        assert df.loc[rid, ["bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1"]].tolist() == list(box), rid
    r = df.loc["Mass-Training_P_00001_LEFT_CC_2"]  # crop and mask paths swapped in the CSV: found by content
    assert (r.label, r.patient_id, r.split, r.laterality, r.view) == (0, "P_00001", "train", "L", "CC")
    assert r.image_path == str(_series_of(kaggle, "Mass-Training_P_00001_LEFT_CC", "full mammogram images"))
    assert df.loc["Calc-Test_P_00004_RIGHT_CC_1", ["split", "lesion_type"]].tolist() == ["test", "calcification"]
    assert set(df.image_height) == {H} and set(df.image_width) == {W} and df.pixel_spacing_mm.isna().all()
    s = summarize(df.reset_index())
    assert s["dataset"]["layout"] == "kaggle" and s["dataset"]["films"] == 4 and s["dataset"]["patients"] == 4
    assert s["dataset"]["masks"] == "JPEG (lossy), thresholded at 128 of 255"
    assert s["classes"] == {"benign": 3, "malignant": 2} and s["dropped"] == {}


def test_kaggle_partial_download(kaggle):
    film_path = _series_of(kaggle, "Mass-Test_P_00002_RIGHT_MLO", "full mammogram images")
    film_path.unlink()
    with pytest.raises(InputError, match=r"csv/mass_case_description_test_set.csv, row 1, field 'image file path': "
                                         r"film 'Mass-Test_P_00002_RIGHT_MLO/.*/000000.dcm' not found under .*jpeg "
                                         r"\(series 1.3.6.1.4.1.9590.100.1.2.203 via dicom_info.csv\) \(kaggle "
                                         r"layout\); pass --skip-missing"):
        build_manifest("cbis-ddsm", kaggle)
    shutil.rmtree(_series_of(kaggle, "Calc-Test_P_00004_RIGHT_CC_1", "ROI mask images").parent)
    df = build_manifest("cbis-ddsm", kaggle, skip_missing=True)
    assert len(df) == 3 and df.attrs["dropped"] == {"film file missing": 1, "ROI mask file missing": 1}
    _series_of(kaggle, "Calc-Training_P_00003_LEFT_MLO_1", "ROI mask images").unlink()  # its crop stays
    with pytest.raises(InputError, match=r"csv/calc_case_description_train_set.csv, row 1, field 'ROI mask file path'"
                                         r": ROI mask not found"):
        build_manifest("cbis-ddsm", kaggle, abnormality="calc", split="train")
    df = build_manifest("cbis-ddsm", kaggle, skip_missing=True)
    assert len(df) == 2 and df.attrs["dropped"] == {"film file missing": 1, "ROI mask file missing": 2}
    df = build_manifest("cbis-ddsm", kaggle, skip_missing=True, abnormality="mass", split="train")
    assert sorted(df.roi_id) == ["Mass-Training_P_00001_LEFT_CC_1", "Mass-Training_P_00001_LEFT_CC_2"]
    assert df.attrs["dropped"] == {"abnormality type not selected": 2, "split not selected": 1}


def test_kaggle_crop_only_is_not_a_mask(kaggle):
    """A series whose only image of the film's size is grey texture has no usable mask."""
    m = _series_of(kaggle, "Calc-Training_P_00003_LEFT_MLO_1", "ROI mask images")
    _jpeg(m, np.random.default_rng(1).integers(30, 220, (H, W)).astype(np.uint8))
    df = build_manifest("cbis-ddsm", kaggle)
    assert len(df) == 4 and df.attrs["dropped"] == {"no two-valued mask of the film's size": 1}


def test_tcia_named_mask_is_the_crop(tmp_path):
    """The CSV names an existing file that is the cropped image: the mask beside it is used."""
    root = cbis_layout(tmp_path / "cbis")
    d = root / f"Mass-Training_P_00001_LEFT_CC_2/{U1}/{U2}"
    from test_io import write_dicom
    write_dicom(d / "000001.dcm", np.full((10, 10), 7, np.uint16))  # the named file: a crop
    mask(d / "000000.dcm", (40, 30, 50, 40))
    df = build_manifest("cbis-ddsm", root).set_index("roi_id")
    assert df.loc["Mass-Training_P_00001_LEFT_CC_2", ["bbox_row0", "bbox_col0", "bbox_row1",
                                                      "bbox_col1"]].tolist() == [40, 30, 50, 40]
    assert df.attrs["dropped"] == {}


def test_tcia_crop_and_mask_in_two_study_dates(tmp_path):
    """Retriever layout: the ROI subject folder holds two dated studies, the crop in one, the mask in the other."""
    root = cbis_layout(tmp_path / "cbis")
    shutil.rmtree(root / "Calc-Test_P_00003_LEFT_MLO_1")
    sub = root / "CBIS-DDSM" / "Calc-Test_P_00003_LEFT_MLO_1"
    from test_io import write_dicom
    write_dicom(sub / "08-29-2017-DDSM-NA-96009" / "1.000000-cropped images-94682" / "1-1.dcm",
                np.full((6, 6), 9, np.uint16))
    mask(sub / "08-29-2017-DDSM-NA-96010" / "1.000000-ROI mask images-94683" / "1-1.dcm", (20, 20, 22, 23))
    df = build_manifest("cbis-ddsm", root).set_index("roi_id")
    assert df.loc["Calc-Test_P_00003_LEFT_MLO_1", ["bbox_row0", "bbox_col1"]].tolist() == [20, 23]


def test_tcia_skip_missing_and_selection(tmp_path):
    root = cbis_layout(tmp_path / "cbis")
    shutil.rmtree(root / "CBIS-DDSM" / "Mass-Training_P_00002_RIGHT_MLO")
    with pytest.raises(InputError, match=r"mass_case_description_train_set.csv, row 3, field 'image file path': "
                                         r"film .* \(tcia layout\); pass --skip-missing"):
        build_manifest("cbis-ddsm", root)
    df = build_manifest("cbis-ddsm", root, skip_missing=True, abnormality=("mass",))
    assert df.roi_id.tolist() == ["Mass-Training_P_00001_LEFT_CC_1", "Mass-Training_P_00001_LEFT_CC_2"]
    assert df.attrs["dropped"] == {"abnormality type not selected": 1, "film file missing": 1}
    df = build_manifest("cbis-ddsm", root, skip_missing=True, split="train")
    assert len(df) == 2 and df.attrs["dropped"] == {"split not selected": 1, "film file missing": 1}
    with pytest.raises(InputError, match="split 'val' is not train or test"):
        build_manifest("cbis-ddsm", root, split="val")
    with pytest.raises(InputError, match="abnormality 'arch' is not mass or calc"):
        build_manifest("cbis-ddsm", root, abnormality="arch")


# ----------------------------------------------------------------- the CLI, as a user runs it
def _cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "mammodecomp", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_cli_kaggle_partial_summary_and_build(tmp_path):
    kaggle_layout(tmp_path / "data" / "cbis")
    _series_of(tmp_path / "data" / "cbis", "Mass-Test_P_00002_RIGHT_MLO", "full mammogram images").unlink()
    p = _cli(["data", "summary", "--source", "cbis-ddsm", "--root", "data/cbis"], tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and p.stderr.startswith("error: ")
    assert "row 1, field 'image file path'" in p.stderr and "--skip-missing" in p.stderr
    p = _cli(["data", "summary", "--source", "cbis-ddsm", "--root", "data/cbis", "--skip-missing"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        "cbis-ddsm (benign-malignant): 4 films, 4 patients; 4 ROIs (4 located) = 2 benign + 2 malignant "
        "from 3 patients",
        "dropped: film file missing: 1",
        "masks: JPEG (lossy), thresholded at 128 of 255"]
    p = _cli(["data", "build", "--source", "cbis-ddsm", "--root", "data/cbis", "--skip-missing", "--abnormality",
              "mass", "--split", "train", "--out", "out/m.parquet"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[1] == "dropped: abnormality type not selected: 2, split not selected: 1"
    df = load_manifest(tmp_path / "out" / "m.parquet")
    assert sorted(df.roi_id) == ["Mass-Training_P_00001_LEFT_CC_1", "Mass-Training_P_00001_LEFT_CC_2"]


def test_cli_unknown_layout_and_misplaced_options(tmp_path):
    (tmp_path / "data").mkdir()
    p = _cli(["data", "summary", "--source", "cbis-ddsm", "--root", "data"], tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert p.stderr.startswith(f"error: {tmp_path / 'data'}: no CBIS-DDSM layout found; expected one of: tcia (")
    p = _cli(["data", "summary", "--source", "mias", "--root", "data", "--abnormality", "mass"], tmp_path)
    assert p.returncode == 2
    assert p.stderr == "error: --abnormality is for source(s) cbis-ddsm; source 'mias' does not take it\n"


def test_readme_data_set_examples_print_what_the_readme_says(tmp_path):
    """Each `$ mammodecomp data ...` line of README's "Published data sets", run on the same fixtures
    (the mini-MIAS line on ../shared/data/mini-mias, left out where that copy is absent)."""
    import re

    from test_sources_dicom import vindr_layout
    repo = Path(__file__).resolve().parents[1]
    MIAS = repo.parent / "shared" / "data" / "mini-mias"   # noqa: N806 (as tests/conftest.py names it)
    sec = (repo / "README.md").read_text().split("## Published data sets", 1)[1].split("\n## ", 1)[0]
    kaggle = kaggle_layout(tmp_path / "cbis-kaggle")
    _series_of(kaggle, "Mass-Test_P_00002_RIGHT_MLO", "full mammogram images").unlink()
    vindr_layout(tmp_path / "vindr")
    checked = 0
    for block in re.findall(r"```console\n(.*?)```", sec, re.S):
        cmds = re.split(r"^\$ ", block, flags=re.M)[1:]
        for cmd in cmds:
            line, *expect = cmd.rstrip("\n").split("\n")
            args = line.split()[1:]
            if "mias" in args and not (MIAS / "Info.txt").is_file():
                checked += 1
                continue
            cwd = repo if "mias" in args else tmp_path
            if "--out" in args:
                args[args.index("--out") + 1] = str(tmp_path / "out" / "m.parquet")
            p = _cli(args, cwd)
            got = (p.stdout + p.stderr).replace(str(tmp_path), "/tmp/i17demo").splitlines()
            if "build" not in args:
                assert got == expect, line
            else:
                assert p.returncode == 0, p.stderr
            checked += 1
    assert checked == 6
