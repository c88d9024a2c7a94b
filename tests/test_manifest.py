"""mammodecomp.manifest.validate_manifest: each error is one line naming file, row and field."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammodecomp.errors import InputError
from mammodecomp.manifest import load_manifest, manifest_hash, save_manifest, validate_manifest


@pytest.fixture
def good(tmp_path):
    for n in ("a.png", "b.png", "c.png"):
        (tmp_path / n).write_bytes(b"x")
    return pd.DataFrame({"roi_id": ["r1", "r2", "r3"], "patient_id": ["p1", "p2", "p2"], "label": [0, 1, 1],
                         "image_path": ["a.png", "b.png", "c.png"], "center_row": [10.0, 20.0, np.nan],
                         "center_col": [10.0, 30.0, np.nan], "radius": [5.0, 3.0, np.nan],
                         "image_height": [100, 100, 100], "image_width": [50, 50, 50]})


def _err(df, tmp_path, **kw) -> str:
    with pytest.raises(InputError) as e:
        validate_manifest(df, path=tmp_path / "m.csv", **kw)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(tmp_path / "m.csv"))
    return msg


def test_good_manifest_normalised(good, tmp_path):
    out = validate_manifest(good, path=tmp_path / "m.csv")
    assert out["image_path"].tolist() == [str(tmp_path / n) for n in ("a.png", "b.png", "c.png")]
    assert out["label"].dtype == np.int64 and out["center_row"].dtype == float
    assert good["image_path"].iloc[0] == "a.png"  # the input is not modified


def test_missing_required_column(good, tmp_path):
    msg = _err(good.drop(columns="patient_id"), tmp_path)
    assert "missing required column(s) ['patient_id']" in msg


def test_no_rows(good, tmp_path):
    assert "no rows" in _err(good.iloc[:0], tmp_path)


def test_missing_file(good, tmp_path):
    (tmp_path / "b.png").unlink()
    msg = _err(good, tmp_path)
    assert "row 2" in msg and "field 'image_path'" in msg and "b.png" in msg


def test_missing_file_not_checked_when_asked(good, tmp_path):
    (tmp_path / "b.png").unlink()
    assert len(validate_manifest(good, path=tmp_path / "m.csv", check_files=False)) == 3


def test_duplicate_roi_id(good, tmp_path):
    good.loc[2, "roi_id"] = "r1"
    msg = _err(good, tmp_path)
    assert "duplicate roi_id 'r1' (rows 1 and 3)" in msg and "field 'roi_id'" in msg


@pytest.mark.parametrize("bad", [2, -1, 0.5, "malignant"])
def test_label_not_binary(good, tmp_path, bad):
    good["label"] = good["label"].astype(object)
    good.loc[1, "label"] = bad
    msg = _err(good, tmp_path)
    assert "row 2" in msg and "field 'label'" in msg and "not a binary label" in msg and str(bad) in msg


def test_single_class(good, tmp_path):
    good["label"] = 1
    msg = _err(good, tmp_path)
    assert "all 3 rows have label 1" in msg and "field 'label'" in msg
    assert len(validate_manifest(good, path=tmp_path / "m.csv", require_both_classes=False)) == 3


@pytest.mark.parametrize("col", ["roi_id", "patient_id", "label", "image_path"])
def test_nan_in_required(good, tmp_path, col):
    good[col] = good[col].astype(object)
    good.loc[2, col] = np.nan
    msg = _err(good, tmp_path)
    assert "row 3" in msg and f"field '{col}'" in msg and "missing" in msg


def test_blank_string_is_missing(good, tmp_path):
    good.loc[0, "patient_id"] = "  "
    assert "row 1, field 'patient_id'" in _err(good, tmp_path)


def test_coordinate_not_a_number(good, tmp_path):
    good["radius"] = good["radius"].astype(object)
    good.loc[1, "radius"] = "big"
    msg = _err(good, tmp_path)
    assert "row 2" in msg and "field 'radius'" in msg and "'big' is not a number" in msg


def test_infinite_coordinate(good, tmp_path):
    good.loc[0, "center_col"] = np.inf
    assert "row 1, field 'center_col'" in _err(good, tmp_path)


def test_partial_circle(good, tmp_path):
    good.loc[2, "center_row"] = 5.0
    msg = _err(good, tmp_path)
    assert "row 3" in msg and "together" in msg


def test_negative_radius(good, tmp_path):
    good.loc[0, "radius"] = 0.0
    assert "row 1" in _err(good, tmp_path)


def test_centre_outside_image(good, tmp_path):
    good.loc[1, "center_col"] = 50.0  # width 50: columns 0..49
    msg = _err(good, tmp_path)
    assert "row 2" in msg and "outside the 100x50 image" in msg
    assert len(validate_manifest(good, path=tmp_path / "m.csv", check_bounds=False)) == 3


def test_bbox_outside_and_empty(good, tmp_path):
    b = good.drop(columns=["center_row", "center_col", "radius"]).assign(
        bbox_row0=[0.0, 10, np.nan], bbox_col0=[0.0, 10, np.nan], bbox_row1=[100.0, 20, np.nan],
        bbox_col1=[50.0, 20, np.nan])
    assert len(validate_manifest(b, path=tmp_path / "m.csv")) == 3  # half-open: 100 x 50 fits exactly
    b.loc[1, "bbox_col1"] = 51.0
    msg = _err(b, tmp_path)
    assert "row 2" in msg and "reaches outside the 100x50 image" in msg
    b.loc[1, "bbox_col1"] = 10.0
    assert "row 2" in _err(b, tmp_path) and "empty" in _err(b, tmp_path)


def test_partial_coordinate_columns(good, tmp_path):
    msg = _err(good.drop(columns="radius"), tmp_path)
    assert "without the rest" in msg


def test_roundtrip_csv_and_parquet(good, tmp_path):
    good["patient_id"] = ["007", "010", "010"]  # leading zeros must survive CSV
    for name in ("m.csv", "m.parquet"):
        save_manifest(good, tmp_path / name)
        back = load_manifest(tmp_path / name)
        assert back["patient_id"].tolist() == ["007", "010", "010"]
        assert manifest_hash(back) == manifest_hash(validate_manifest(good, path=tmp_path / name))


def test_load_missing_and_unreadable(tmp_path):
    with pytest.raises(InputError, match="manifest file not found"):
        load_manifest(tmp_path / "none.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="cannot read manifest"):
        load_manifest(tmp_path / "bad.parquet")
