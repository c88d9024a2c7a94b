"""csv, folder and synthetic sources on small files in their layouts."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mammodecomp.errors import InputError
from mammodecomp.manifest import save_manifest
from mammodecomp.roi import extract_rois
from mammodecomp.sources import build_manifest, summarize


def png(path, shape=(40, 30), value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)
    return path


# ---------------------------------------------------------------- csv
@pytest.fixture
def csv_root(tmp_path):
    for n in ("a", "b", "c"):
        png(tmp_path / "img" / f"{n}.png")
    return tmp_path


def test_csv_minimal(csv_root):
    (csv_root / "labels.csv").write_text("path,label,patient_id\nimg/a.png,0,007\nimg/b.png,1,008\n"
                                         "img/c.png,malignant,008\n")
    df = build_manifest("csv", csv_root / "labels.csv")
    assert df["label"].tolist() == [0, 1, 1] and df["label_name"].tolist() == ["benign", "malignant", "malignant"]
    assert df["patient_id"].tolist() == ["007", "008", "008"]  # ids stay strings
    assert df["roi_id"].tolist() == ["img/a.png", "img/b.png", "img/c.png"]
    assert df["image_path"].iloc[0] == str(csv_root / "img" / "a.png")
    assert "image_height" not in df.columns  # no coordinates, no header reads
    # the folder holding one CSV works too
    assert build_manifest("csv", csv_root)["roi_id"].tolist() == df["roi_id"].tolist()
    rois, _ = extract_rois(df, size=8, progress=False)
    assert rois.shape == (3, 8, 8)


def test_csv_bbox_string_and_several_rois_per_image(csv_root):
    (csv_root / "labels.csv").write_text('path,label,patient_id,bbox,site,age\nimg/a.png,0,p1,"0 0 10 10",x,50\n'
                                         'img/a.png,1,p1,"5;5;40;30",y,50\nimg/b.png,benign,p2,,z,61.5\n')
    df = build_manifest("csv", csv_root / "labels.csv")
    assert df["roi_id"].tolist() == ["img/a.png#1", "img/a.png#2", "img/b.png"]
    assert df[["bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1"]].iloc[1].tolist() == [5, 5, 40, 30]
    assert df["image_height"].tolist() == [40, 40, 40] and df["site"].tolist() == ["x", "y", "z"]
    assert df["age"].tolist() == [50, 50, 61.5]
    assert np.isnan(df["bbox_row0"].iloc[2])


def test_csv_bbox_outside_image_named(csv_root):
    (csv_root / "labels.csv").write_text("path,label,patient_id,bbox_row0,bbox_col0,bbox_row1,bbox_col1\n"
                                         "img/a.png,0,p1,0,0,10,10\nimg/b.png,1,p2,0,0,41,10\n")
    with pytest.raises(InputError, match=r"labels.csv.*row 2: bbox .* reaches outside the 40x30 image"):
        build_manifest("csv", csv_root / "labels.csv")


@pytest.mark.parametrize("body,match", [
    ("path,label\nimg/a.png,0\n", r"missing column\(s\) \['patient_id'\]"),
    ("path,label,patient_id\nimg/a.png,0,p1\nimg/b.png,maybe,p2\n", r"row 2, field 'label': label 'maybe'"),
    ("path,label,patient_id\nimg/a.png,0,p1\nimg/b.png,2,p2\n", r"row 2, field 'label'"),
    ("path,label,patient_id\nimg/a.png,0,p1\nimg/zz.png,1,p2\n", r"row 2, field 'image_path': image file not found"),
    ("path,label,patient_id\nimg/a.png,1,p1\nimg/b.png,1,p2\n", r"a classifier needs both classes"),
    ("path,label,patient_id\nimg/a.png,0,p1\nimg/b.png,1,\n", r"row 2, field 'patient_id'"),
    ("path,label,patient_id,bbox\nimg/a.png,0,p1,1 2 3\nimg/b.png,1,p2,\n", r"row 1, field 'bbox'"),
    ("path,label,patient_id,roi_id\nimg/a.png,0,p1,r\nimg/b.png,1,p2,r\n", r"duplicate roi_id 'r'"),
    ("", r"CSV file is empty"),
])
def test_csv_errors(csv_root, body, match):
    (csv_root / "labels.csv").write_text(body)
    with pytest.raises(InputError, match=match) as e:
        build_manifest("csv", csv_root / "labels.csv")
    assert "labels.csv" in str(e.value) and "\n" not in str(e.value)


def test_csv_folder_with_two_csvs(csv_root):
    (csv_root / "a.csv").write_text("x")
    (csv_root / "b.csv").write_text("x")
    with pytest.raises(InputError, match="holds 2 CSV files"):
        build_manifest("csv", csv_root)


# ---------------------------------------------------------------- folder
def test_folder_benign_malignant_with_patient_regex(tmp_path):
    for name in ("P01_L.png", "P01_R.png", "P02_L.png"):
        png(tmp_path / "benign" / name)
    png(tmp_path / "malignant" / "sub" / "P03_L.png")
    png(tmp_path / "malignant" / "P01_X.tif")
    (tmp_path / "malignant" / "notes.txt").write_text("ignored")
    df = build_manifest("folder", tmp_path, patient_regex=r"(?P<patient>P\d+)_")
    assert df["roi_id"].tolist() == ["benign/P01_L.png", "benign/P01_R.png", "benign/P02_L.png",
                                     "malignant/P01_X.tif", "malignant/sub/P03_L.png"]
    assert df["label"].tolist() == [0, 0, 0, 1, 1]
    assert df["patient_id"].tolist() == ["P01", "P01", "P02", "P01", "P03"]
    s = summarize(df)
    assert s["patients"] == 3 and s["classes"] == {"benign": 3, "malignant": 2} and s["located_rois"] == 0


def test_folder_numeric_classes_one_patient_per_file(tmp_path):
    png(tmp_path / "0" / "a.png")
    png(tmp_path / "1" / "a.png")
    df = build_manifest("folder", tmp_path, task="normal-abnormal")
    assert df["patient_id"].tolist() == ["0/a.png", "1/a.png"]
    assert df["label_name"].tolist() == ["normal", "abnormal"]


def test_folder_errors(tmp_path):
    with pytest.raises(InputError, match="folder not found"):
        build_manifest("folder", tmp_path / "none")
    png(tmp_path / "benign" / "a.png")
    png(tmp_path / "cancer" / "b.png")
    with pytest.raises(InputError, match=r"sub-folder\(s\) \['cancer'\] are not class names"):
        build_manifest("folder", tmp_path)
    (tmp_path / "cancer" / "b.png").rename(tmp_path / "b.png")
    (tmp_path / "cancer").rmdir()
    (tmp_path / "malignant").mkdir()
    with pytest.raises(InputError, match="class folder holds no images"):
        build_manifest("folder", tmp_path)
    png(tmp_path / "malignant" / "zz.png")
    with pytest.raises(InputError, match=r"zz.png: file name does not match patient_regex"):
        build_manifest("folder", tmp_path, patient_regex=r"^a")
    png(tmp_path / "0" / "c.png")
    with pytest.raises(InputError, match="both mean class 0"):
        build_manifest("folder", tmp_path)


# ---------------------------------------------------------------- synthetic
def test_synthetic_folder(tmp_path):
    root = tmp_path / "synth"
    for k in range(4):
        png(root / "rois" / f"r{k}.png", shape=(16, 16), value=50 * k)
    m = pd.DataFrame({"roi_id": [f"r{k}" for k in range(4)], "patient_id": ["s0", "s0", "s1", "s2"],
                      "label": [0, 1, 0, 1], "image_path": [f"rois/r{k}.png" for k in range(4)],
                      "latent_evidence": [0.1, 0.9, 0.2, 0.8], "oracle_prob": [0.2, 0.8, 0.3, 0.7]})
    save_manifest(m, root / "manifest.parquet")
    df = build_manifest("synthetic", root)
    assert df["image_path"].iloc[0] == str(root / "rois" / "r0.png")
    assert df["source"].unique().tolist() == ["synthetic"] and "oracle_prob" in df.columns
    assert summarize(df)["patients"] == 3
    (root / "rois" / "r3.png").unlink()
    with pytest.raises(InputError, match=r"manifest.parquet, row 4, field 'image_path'"):
        build_manifest("synthetic", root)
    with pytest.raises(InputError, match="no manifest.parquet"):
        build_manifest("synthetic", tmp_path)


def test_synthetic_written_by_synth(tmp_path):
    from mammodecomp import synth
    root = synth.write_synthetic(tmp_path / "s", n_patients=4, size=64, seed=0)
    df = build_manifest("synthetic", root)
    assert len(df) > 0 and set(df["label"]) == {0, 1}
