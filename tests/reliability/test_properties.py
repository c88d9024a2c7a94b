"""Property-based tests (hypothesis) of the manifest validator and the readers.

Validator: every well-formed manifest passes unchanged (order, ids, labels)
and validating twice changes nothing; one bad value anywhere is an
InputError naming that row and field. Readers: any 8/12/16-bit array
written as PNG, TIFF or DICOM reads back as ``value / (2**bits - 1)``;
finite float TIFFs come back in [0, 1]; a NaN anywhere is refused; any
well-formed Info.txt parses to its own rows.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from mammodecomp.errors import InputError
from mammodecomp.io import read_image
from mammodecomp.manifest import validate_manifest
from mammodecomp.sources.mias import parse_info
from relhelp import write_dicom

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=12)


@st.composite
def manifests(draw):
    n = draw(st.integers(2, 25))
    roi = draw(st.lists(ids, min_size=n, max_size=n, unique=True))
    pats = draw(st.lists(ids, min_size=n, max_size=n))
    labels = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    labels[0], labels[1] = 0, 1  # both classes present
    H = draw(st.lists(st.integers(8, 4000), min_size=n, max_size=n))
    W = draw(st.lists(st.integers(8, 4000), min_size=n, max_size=n))
    rows = [draw(st.integers(0, h - 1)) for h in H]
    cols = [draw(st.integers(0, w - 1)) for w in W]
    rad = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    return pd.DataFrame({"roi_id": roi, "patient_id": pats, "label": labels,
                         "image_path": [f"img/{r}.png" for r in roi], "center_row": np.array(rows, float),
                         "center_col": np.array(cols, float), "radius": np.array(rad, float),
                         "image_height": np.array(H, float), "image_width": np.array(W, float)})


@SETTINGS
@given(manifests())
def test_valid_manifests_pass_unchanged_and_idempotent(df):
    out = validate_manifest(df, check_files=False, root="/data")
    assert out["roi_id"].tolist() == df["roi_id"].tolist()
    assert out["patient_id"].tolist() == df["patient_id"].tolist()
    assert out["label"].tolist() == df["label"].tolist() and out["label"].dtype == np.int64
    assert all(Path(p).is_absolute() for p in out["image_path"])
    again = validate_manifest(out, check_files=False)
    pd.testing.assert_frame_equal(again, out)


BREAKS = ["label", "duplicate", "missing_patient", "outside", "not_a_number"]


@SETTINGS
@given(manifests(), st.sampled_from(BREAKS), st.data())
def test_one_bad_value_names_its_row_and_field(df, how, data):
    n = len(df)
    i = data.draw(st.integers(1, n - 1) if how == "duplicate" else st.integers(0, n - 1))
    df = df.astype({"label": object, "center_row": object})
    if how == "label":
        df.loc[i, "label"] = data.draw(st.sampled_from([2, -1, "yes", 0.5, "benign"]))
        needles = [f"row {i + 1}", "field 'label'"]
    elif how == "duplicate":
        j = data.draw(st.integers(0, i - 1))
        df.loc[i, "roi_id"] = df.loc[j, "roi_id"]
        needles = [f"duplicate roi_id '{df.loc[j, 'roi_id']}'", f"rows {j + 1} and {i + 1}", "field 'roi_id'"]
    elif how == "missing_patient":
        df.loc[i, "patient_id"] = data.draw(st.sampled_from([None, "", "   ", float("nan")]))
        needles = [f"row {i + 1}", "field 'patient_id'", "missing"]
    elif how == "outside":
        df.loc[i, "center_row"] = float(df.loc[i, "image_height"]) + data.draw(st.integers(0, 500))
        needles = [f"row {i + 1}", "outside the"]
    else:
        df.loc[i, "center_row"] = data.draw(st.sampled_from(["ten", "1,5", "x"]))
        needles = [f"row {i + 1}", "field 'center_row'", "not a number"]
    with pytest.raises(InputError) as e:
        validate_manifest(df, path="m.csv", check_files=False)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("m.csv")
    for needle in needles:
        assert needle in msg, (needle, msg)


@SETTINGS
@given(st.lists(ids, min_size=1, max_size=10), st.integers(0, 1))
def test_single_class_is_refused(pats, label):
    df = pd.DataFrame({"roi_id": [f"r{k}" for k in range(len(pats))], "patient_id": pats,
                       "label": [label] * len(pats), "image_path": "x.png"})
    with pytest.raises(InputError, match=f"have label {label}; a classifier needs both classes"):
        validate_manifest(df, check_files=False)


# --------------------------------------------------------------------------- readers
shapes = st.tuples(st.integers(1, 24), st.integers(1, 24))


@SETTINGS
@given(st.sampled_from(["png", "tif", "dcm"]), st.sampled_from([8, 12, 16]), shapes, st.data())
def test_integer_images_read_back_on_their_bit_depth(kind, bits, shape, data):
    if kind == "dcm" and bits == 8:
        bits = 12
    top = 2 ** bits - 1
    arr = data.draw(arrays(np.uint8 if bits == 8 else np.uint16, shape, elements=st.integers(0, top)))
    if kind != "dcm" and bits == 16:
        arr.flat[0] = max(int(arr.flat[0]), 4096)  # PNG/TIFF know 16-bit data by values >= 4096
    if kind != "dcm" and bits == 12:
        arr.flat[0] = min(int(arr.flat[0]), 4095)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"a.{kind}"
        if kind == "png":
            Image.fromarray(arr).save(p)
        elif kind == "tif":
            tifffile.imwrite(p, arr)
        else:
            write_dicom(p, arr, bits_stored=bits)
        out = read_image(p)
    assert out.shape == shape and out.dtype == np.float32
    np.testing.assert_allclose(out, arr.astype(np.float64) / top, rtol=0, atol=1e-6)


@SETTINGS
@given(arrays(np.float32, shapes, elements=st.floats(allow_nan=False, allow_infinity=False, width=32)))
def test_finite_float_tiffs_come_back_in_unit_range(arr):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.tif"
        tifffile.imwrite(p, arr)
        out = read_image(p)
    assert out.shape == arr.shape and np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    if arr.min() >= 0 and arr.max() <= 1:
        np.testing.assert_array_equal(out, arr)  # already in [0, 1]: untouched


@SETTINGS
@given(arrays(np.float32, shapes, elements=st.floats(0, 1, width=32)), st.data())
def test_a_nan_or_inf_anywhere_is_refused(arr, data):
    k = data.draw(st.integers(0, arr.size - 1))
    arr.flat[k] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.tif"
        tifffile.imwrite(p, arr)
        with pytest.raises(InputError, match="NaN or Inf"):
            read_image(p)


@st.composite
def info_rows(draw):
    n = draw(st.integers(1, 20))
    nums = draw(st.lists(st.integers(1, 322), min_size=n, max_size=n))
    rows = []
    for num in nums:
        bg = draw(st.sampled_from("FGD"))
        kind = draw(st.sampled_from(["NORM", "CIRC", "SPIC", "CALC", "ARCH", "ASYM", "MISC"]))
        if kind == "NORM":
            rows.append((f"mdb{num:03d} {bg} NORM", None))
            continue
        sev = draw(st.sampled_from("BM"))
        if draw(st.booleans()):
            x, y, r = draw(st.integers(0, 1023)), draw(st.integers(0, 1023)), draw(st.integers(1, 300))
            rows.append((f"mdb{num:03d} {bg} {kind} {sev} {x} {y} {r}", (x, y, r)))
        else:
            rows.append((f"mdb{num:03d} {bg} {kind} {sev}" + draw(st.sampled_from(["", " *NOTE 3*"])), None))
    header = draw(st.lists(st.text(alphabet="abc XYZ:;()\t", max_size=30), max_size=3))
    return header, rows


@SETTINGS
@given(info_rows())
def test_wellformed_info_parses_to_its_rows(hr):
    header, rows = hr
    text = "\n".join([*header, *[r for r, _ in rows]]) + "\n"
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "Info.txt"
        p.write_text(text)
        df = parse_info(p)
    assert df["film_id"].tolist() == [r.split()[0] for r, _ in rows]
    for (_, coords), (_, got) in zip(rows, df.iterrows()):
        if coords is None:
            assert np.isnan(got["radius"])
        else:
            assert (got["x"], got["y"], got["radius"]) == tuple(float(c) for c in coords)
