"""cbis-ddsm and vindr-mammo sources on tiny DICOMs and CSVs with the real column names."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammodecomp.errors import InputError
from mammodecomp.roi import extract_rois
from mammodecomp.sources import build_manifest, summarize
from test_io import write_dicom

H, W = 64, 48
SECRET_NAME, SECRET_ID = "DOE^JANE", "SECRET123"


def film(path, seed=0):
    arr = np.random.default_rng(seed).integers(0, 4096, (H, W)).astype(np.uint16)
    return write_dicom(path, arr, patient_name=SECRET_NAME, patient_id=SECRET_ID)


def mask(path, box, shape=(H, W)):
    m = np.zeros(shape, np.uint8)
    r0, c0, r1, c1 = box
    m[r0:r1, c0:c1] = 255
    return write_dicom(path, m, bits_stored=8, patient_name=SECRET_NAME, patient_id=SECRET_ID)


def no_secrets(df):
    text = df.astype(str).to_csv()
    return SECRET_ID not in text and "DOE" not in text and "JANE" not in text


# ---------------------------------------------------------------- CBIS-DDSM
MASS_COLS = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
             "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
             "image file path", "cropped image file path", "ROI mask file path"]
CALC_COLS = ["patient_id", "breast density", "left or right breast", "image view", "abnormality id",
             "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
             "image file path", "cropped image file path", "ROI mask file path"]
U1, U2 = "1.3.6.1.4.1.9590.100.1.2.1", "1.3.6.1.4.1.9590.100.1.2.2"


def cbis_layout(root):
    root.mkdir(parents=True, exist_ok=True)
    # P_00001 LEFT CC: film at the listed path; two masses
    film(root / f"Mass-Training_P_00001_LEFT_CC/{U1}/{U2}/000000.dcm", 1)
    # mask 1: the folder holds the cropped image and the mask under other names (as TCIA downloads do)
    write_dicom(root / f"Mass-Training_P_00001_LEFT_CC_1/{U1}/{U2}/1-1.dcm", np.ones((10, 12), np.uint16))
    mask(root / f"Mass-Training_P_00001_LEFT_CC_1/{U1}/{U2}/1-2.dcm", (10, 5, 30, 25))
    mask(root / f"Mass-Training_P_00001_LEFT_CC_2/{U1}/{U2}/000001.dcm", (40, 30, 50, 40))
    # P_00002 RIGHT MLO: film stored as 1-1.dcm under its folder
    film(root / f"CBIS-DDSM/Mass-Training_P_00002_RIGHT_MLO/{U1}/{U2}/1-1.dcm", 2)
    mask(root / f"CBIS-DDSM/Mass-Training_P_00002_RIGHT_MLO_1/{U1}/{U2}/000001.dcm", (0, 0, 64, 48))
    # P_00003 calcification, test split
    film(root / f"Calc-Test_P_00003_LEFT_MLO/{U1}/{U2}/000000.dcm", 3)
    mask(root / f"Calc-Test_P_00003_LEFT_MLO_1/{U1}/{U2}/000001.dcm", (20, 20, 22, 23))
    mass = pd.DataFrame([
        ["P_00001", 3, "LEFT", "CC", 1, "mass", "OVAL", "SPICULATED", 4, "MALIGNANT", 4,
         f"Mass-Training_P_00001_LEFT_CC/{U1}/{U2}/000000.dcm", "x", f"Mass-Training_P_00001_LEFT_CC_1/{U1}/{U2}/000001.dcm\n"],
        ["P_00001", 3, "LEFT", "CC", 2, "mass", "ROUND", "CIRCUMSCRIBED", 3, "BENIGN_WITHOUT_CALLBACK", 2,
         f"Mass-Training_P_00001_LEFT_CC/{U1}/{U2}/000000.dcm", "x", f"Mass-Training_P_00001_LEFT_CC_2/{U1}/{U2}/000001.dcm"],
        ["P_00002", 2, "RIGHT", "MLO", 1, "mass", "IRREGULAR", "ILL_DEFINED", 3, "BENIGN", 3,
         f"Mass-Training_P_00002_RIGHT_MLO/{U1}/{U2}/000000.dcm", "x", f"Mass-Training_P_00002_RIGHT_MLO_1/{U1}/{U2}/000001.dcm"],
    ], columns=MASS_COLS)
    calc = pd.DataFrame([
        ["P_00003", 2, "LEFT", "MLO", 1, "calcification", "PLEOMORPHIC", "CLUSTERED", 4, "MALIGNANT", 3,
         f"Calc-Test_P_00003_LEFT_MLO/{U1}/{U2}/000000.dcm", "x", f"Calc-Test_P_00003_LEFT_MLO_1/{U1}/{U2}/000001.dcm"],
    ], columns=CALC_COLS)
    mass.to_csv(root / "mass_case_description_train_set.csv", index=False)
    calc.to_csv(root / "calc_case_description_test_set.csv", index=False)
    return root


def test_cbis_manifest(tmp_path):
    root = cbis_layout(tmp_path / "cbis")
    df = build_manifest("cbis-ddsm", root).set_index("roi_id")
    assert sorted(df.index) == ["Calc-Test_P_00003_LEFT_MLO_1", "Mass-Training_P_00001_LEFT_CC_1",
                                "Mass-Training_P_00001_LEFT_CC_2", "Mass-Training_P_00002_RIGHT_MLO_1"]
    r = df.loc["Mass-Training_P_00001_LEFT_CC_1"]
    assert (r.label, r.patient_id, r.laterality, r.view, r.split, r.lesion_type) == (1, "P_00001", "L", "CC",
                                                                                      "train", "mass")
    assert [r.bbox_row0, r.bbox_col0, r.bbox_row1, r.bbox_col1] == [10, 5, 30, 25]  # mask found among 1-1/1-2
    assert df.loc["Mass-Training_P_00001_LEFT_CC_2", "label"] == 0  # BENIGN_WITHOUT_CALLBACK
    assert df.loc["Mass-Training_P_00002_RIGHT_MLO_1", "image_path"].endswith("1-1.dcm")
    assert df.loc["Calc-Test_P_00003_LEFT_MLO_1", ["split", "label", "calc_type"]].tolist() == [
        "test", 1, "PLEOMORPHIC"]
    assert set(df.image_height) == {H} and set(df.image_width) == {W}
    assert df.loc["Mass-Training_P_00001_LEFT_CC_1", "breast_density"] == "3"
    assert df.loc["Calc-Test_P_00003_LEFT_MLO_1", "breast_density"] == "2"  # 'breast density' spelling
    assert no_secrets(df.reset_index())
    s = summarize(df.reset_index())
    assert s["patients"] == 3 and s["classes"] == {"benign": 2, "malignant": 2} and s["films"] == 3
    rois, meta = extract_rois(df.reset_index(), size=16, progress=False)
    assert rois.shape == (4, 16, 16) and meta.crop_side_px.tolist() == [64, 64, 64, 64]


def test_cbis_filter_and_whole_film(tmp_path):
    root = cbis_layout(tmp_path / "cbis")
    df = build_manifest("cbis-ddsm", root, abnormality=("mass",))
    assert set(df.lesion_type) == {"mass"} and summarize(df)["dropped"] == {"abnormality type not selected": 1}
    whole = build_manifest("cbis-ddsm", root, use_masks=False)
    assert "bbox_row0" not in whole.columns and len(whole) == 4


def test_cbis_mask_of_other_size_dropped(tmp_path):
    root = cbis_layout(tmp_path / "cbis")
    p = root / f"Mass-Training_P_00001_LEFT_CC_2/{U1}/{U2}/000001.dcm"
    mask(p, (1, 1, 5, 5), shape=(32, 24))
    df = build_manifest("cbis-ddsm", root)
    assert len(df) == 3 and df.attrs["dropped"] == {"mask size differs from film": 1}


def test_cbis_bad_pathology_names_row(tmp_path):
    root = cbis_layout(tmp_path / "cbis")
    csv = root / "mass_case_description_train_set.csv"
    m = pd.read_csv(csv)
    m.loc[1, "pathology"] = "UNPROVEN"
    m.to_csv(csv, index=False)
    with pytest.raises(InputError, match=r"mass_case_description_train_set.csv, row 2, field 'pathology': "
                                         r"pathology 'UNPROVEN'"):
        build_manifest("cbis-ddsm", root)


def test_cbis_missing_mask_and_csv(tmp_path):
    root = cbis_layout(tmp_path / "cbis")
    import shutil
    shutil.rmtree(root / "Calc-Test_P_00003_LEFT_MLO_1")
    with pytest.raises(InputError, match=r"calc_case_description_test_set.csv, row 1, field 'ROI mask file path'"):
        build_manifest("cbis-ddsm", root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: no CBIS-DDSM layout found; expected one of: tcia \(TCIA download: "
                                         r".*\); kaggle \(Kaggle JPEG re-publication: csv/ .* and "
                                         r"jpeg/<SeriesInstanceUID>/1-NNN.jpg\)$"):
        build_manifest("cbis-ddsm", tmp_path / "empty")
    (tmp_path / "empty" / "mass_case_description_train_set.csv").write_text("patient_id,pathology\nP_1,BENIGN\n")
    with pytest.raises(InputError, match=r"missing column\(s\)"):
        build_manifest("cbis-ddsm", tmp_path / "empty")


def test_cbis_missing_film_named(tmp_path):
    root = cbis_layout(tmp_path / "cbis")
    import shutil
    shutil.rmtree(root / "Calc-Test_P_00003_LEFT_MLO")
    with pytest.raises(InputError, match=r"calc_case_description_test_set.csv, row 1, field 'image file path': film 'Calc-Test"):
        build_manifest("cbis-ddsm", root, use_masks=False)


# ---------------------------------------------------------------- VinDr-Mammo
FIND_COLS = ["study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
             "breast_birads", "breast_density", "finding_categories", "finding_birads", "xmin", "ymin", "xmax",
             "ymax", "split"]


def vindr_layout(root):
    rows = [
        ["s1", "se1", "i1", "L", "CC", H, W, "BI-RADS 4", "DENSITY C", "['Mass']", "BI-RADS 4", 5.0, 10.0, 20.0, 30.0, "training"],
        ["s1", "se1", "i1", "L", "CC", H, W, "BI-RADS 4", "DENSITY C", "['Suspicious Calcification']", "BI-RADS 3", 1.5, 2.5, 8.0, 9.0, "training"],
        ["s1", "se1", "i2", "R", "MLO", H, W, "BI-RADS 1", "DENSITY C", "['No Finding']", None, None, None, None, None, "training"],
        ["s2", "se2", "i3", "L", "MLO", H, W, "BI-RADS 2", "DENSITY B", "['Mass']", "BI-RADS 2", 0.0, 0.0, 48.0, 64.0, "test"],
        ["s2", "se2", "i4", "R", "CC", H, W, "BI-RADS 5", "DENSITY B", "['Architectural Distortion', 'Mass']", "BI-RADS 5", 10.0, 10.0, 12.0, 12.0, "test"],
        ["s2", "se2", "i4", "R", "CC", H, W, "BI-RADS 5", "DENSITY B", "['Asymmetry']", "BI-RADS 1", 10.0, 10.0, 12.0, 12.0, "test"],
    ]
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=FIND_COLS).to_csv(root / "finding_annotations.csv", index=False)
    breast = pd.DataFrame([[s, se, i, lat, v, h, w, b, d, sp] for s, se, i, lat, v, h, w, b, d, *_, sp in rows],
                          columns=["study_id", "series_id", "image_id", "laterality", "view_position", "height",
                                   "width", "breast_birads", "breast_density", "split"]).drop_duplicates("image_id")
    breast.to_csv(root / "breast-level_annotations.csv", index=False)
    for k, (s, i) in enumerate([("s1", "i1"), ("s1", "i2"), ("s2", "i3"), ("s2", "i4")]):
        arr = np.random.default_rng(k).integers(0, 4096, (H, W)).astype(np.uint16)
        write_dicom(root / "images" / s / f"{i}.dicom", arr, spacing=0.085, patient_name=SECRET_NAME,
                    patient_id=SECRET_ID)
    return root


def test_vindr_manifest_and_birads_rule(tmp_path):
    root = vindr_layout(tmp_path / "vindr")
    df = build_manifest("vindr-mammo", root)
    assert df.roi_id.tolist() == ["i1_1", "i1_2", "i3_1", "i4_1"]
    assert df.label.tolist() == [1, 0, 0, 1] and df.label_name.tolist() == ["malignant", "benign", "benign",
                                                                            "malignant"]
    assert df.patient_id.tolist() == ["s1", "s1", "s2", "s2"] and df.split.tolist()[-1] == "test"
    r = df.iloc[0]
    assert [r.bbox_row0, r.bbox_col0, r.bbox_row1, r.bbox_col1] == [10, 5, 30, 20]  # rows from y, cols from x
    assert r.image_path == str(root / "images" / "s1" / "i1.dicom") and r.pixel_spacing_mm == pytest.approx(0.085)
    assert df.lesion_type.iloc[3] == "Architectural Distortion+Mass"
    assert df.attrs["dropped"] == {"no box or no finding BI-RADS": 1, "finding BI-RADS outside the label rule": 1}
    assert df.attrs["dataset"] == {"images": 4, "studies": 2, "finding_rows": 6}
    assert no_secrets(df)
    rois, meta = extract_rois(df, size=16, mode="fixed", fov_mm=3.4, progress=False)
    assert meta.crop_side_px.tolist() == [40] * 4


def test_vindr_options(tmp_path):
    root = vindr_layout(tmp_path / "vindr")
    df = build_manifest("vindr-mammo", root, categories=("Mass",))
    assert df.roi_id.tolist() == ["i1_1", "i3_1", "i4_1"] and df.attrs["dropped"]["category not selected"] == 1
    df = build_manifest("vindr-mammo", root, benign_birads=(2,), malignant_birads=(4, 5), read_spacing=False)
    assert df.roi_id.tolist() == ["i1_1", "i3_1", "i4_1"] and "pixel_spacing_mm" not in df.columns


def test_vindr_errors(tmp_path):
    root = vindr_layout(tmp_path / "vindr")
    f = pd.read_csv(root / "finding_annotations.csv")
    f.loc[3, "ymax"] = 65.0  # film height 64
    f.to_csv(root / "finding_annotations.csv", index=False)
    with pytest.raises(InputError, match=r"finding_annotations.csv, row 4: bbox .* reaches outside the 64x48 image"):
        build_manifest("vindr-mammo", root)
    f.loc[3, "image_id"] = "i9"
    f.to_csv(root / "finding_annotations.csv", index=False)
    with pytest.raises(InputError, match=r"finding_annotations.csv, row 4, field 'image_id': image_id 'i9'"):
        build_manifest("vindr-mammo", root)
    (root / "breast-level_annotations.csv").unlink()
    with pytest.raises(InputError, match="breast-level_annotations.csv: file not found"):
        build_manifest("vindr-mammo", root)
    f.drop(columns="finding_birads").to_csv(root / "finding_annotations.csv", index=False)
    (root / "breast-level_annotations.csv").write_text("x\n1\n")
    with pytest.raises(InputError, match=r"finding_annotations.csv: missing column\(s\) \['finding_birads'\]"):
        build_manifest("vindr-mammo", root)


def test_vindr_partial_download_names_csv_row(tmp_path):
    root = vindr_layout(tmp_path / "vindr")
    (root / "images" / "s2" / "i3.dicom").unlink()
    with pytest.raises(InputError, match=r"finding_annotations.csv, row 4, field 'image_id': image file not found: "
                                         r".*i3.dicom; pass --skip-missing"):
        build_manifest("vindr-mammo", root)
    df = build_manifest("vindr-mammo", root, skip_missing=True)
    assert df.roi_id.tolist() == ["i1_1", "i1_2", "i4_1"] and df.attrs["dropped"]["image file missing"] == 1
    df = build_manifest("vindr-mammo", root, skip_missing=True, split="training")
    assert df.roi_id.tolist() == ["i1_1", "i1_2"] and df.attrs["dropped"]["split not selected"] == 2


def test_vindr_summary_prints_the_data_set_counts(tmp_path, capsys):
    from mammodecomp.cli import main
    root = vindr_layout(tmp_path / "vindr")
    try:
        main(["data", "summary", "--source", "vindr-mammo", "--root", str(root)])
    except SystemExit as e:
        assert e.code in (0, None)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("vindr-mammo (benign-malignant): 4 images, 2 studies; 4 ROIs (4 located) = 2 benign + "
                      "2 malignant from 2 patients")
    assert out[1] == "dropped: no box or no finding BI-RADS: 1, finding BI-RADS outside the label rule: 1"
