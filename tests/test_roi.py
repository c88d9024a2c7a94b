"""mammodecomp.roi: crop modes, padding, bit depth, per-ROI metadata."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import mammodecomp.roi as roi_mod
from mammodecomp.errors import InputError
from mammodecomp.roi import META_COLUMNS, crop_side, extract_roi, extract_rois, lesion_geometry


def disc_image(shape=(600, 500), centre=(300, 250), radius=40, value=0.8, back=0.3):
    rr, cc = np.mgrid[0:shape[0], 0:shape[1]]
    img = np.full(shape, back, np.float32)
    img[(rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius ** 2] = value
    return img


def frac_bright(roi, thr=0.55):
    return float((roi > thr).mean())


@pytest.mark.parametrize("radius", [40, 100])
def test_context_lesion_fills_roi_alike(radius):
    img = disc_image(radius=radius)
    roi, meta = extract_roi(img, {"center_row": 300, "center_col": 250, "radius": radius}, size=64,
                            mode="context", return_meta=True)
    assert meta["crop_side_px"] == 2 * radius and meta["scale"] == pytest.approx(64 / (2 * radius))
    assert frac_bright(roi) == pytest.approx(np.pi / 4, abs=0.04)


def test_context_min_side_for_small_lesions():
    img = disc_image(radius=8)
    roi, meta = extract_roi(img, {"center_row": 300, "center_col": 250, "radius": 8}, size=64, return_meta=True)
    assert meta["crop_side_px"] == 64
    assert frac_bright(roi) == pytest.approx(np.pi * 8 ** 2 / 64 ** 2, abs=0.02)


def test_fixed_fov_keeps_size_visible():
    fr = []
    for radius in (20, 40):
        img = disc_image(radius=radius)
        roi, meta = extract_roi(img, {"center_row": 300, "center_col": 250, "radius": radius,
                                      "pixel_spacing_mm": 0.2}, size=80, mode="fixed", fov_mm=40, return_meta=True)
        assert meta["crop_side_px"] == 200 and meta["roi_spacing_mm"] == pytest.approx(0.5)
        fr.append(frac_bright(roi))
    assert fr[1] / fr[0] == pytest.approx(4.0, rel=0.1)  # area grows with radius squared
    with pytest.raises(InputError, match="pixel spacing"):
        extract_roi(img, {"center_row": 300, "center_col": 250, "radius": 5}, mode="fixed")
    # an explicit spacing overrides the row's
    assert crop_side({"center_row": 1, "center_col": 1, "radius": 1, "pixel_spacing_mm": 0.2}, "fixed",
                     fov_mm=64, pixel_spacing_mm=0.1) == 640


def test_orientation_and_centring():
    img = np.zeros((200, 200), np.float32)
    img[80:100, 100:120] = 1.0  # upper-right quadrant of the window centred at (100, 100)
    roi = extract_roi(img, {"center_row": 100, "center_col": 100, "radius": 32}, size=64)
    assert roi[:32, 32:].mean() > 0.2 and roi[:32, :32].max() == 0 and roi[32:, :].max() == 0
    # same crop without resizing is the exact slice
    np.testing.assert_array_equal(roi, img[68:132, 68:132])


def test_bbox_rows():
    assert lesion_geometry({"bbox_row0": 10, "bbox_col0": 20, "bbox_row1": 30, "bbox_col1": 30}) == (20, 25, 10)
    img = disc_image(radius=50)
    row = {"bbox_row0": 250, "bbox_col0": 200, "bbox_row1": 350, "bbox_col1": 300}
    roi, meta = extract_roi(img, row, size=50, return_meta=True)
    assert meta["crop_side_px"] == 100 and frac_bright(roi) == pytest.approx(np.pi / 4, abs=0.05)


def test_padding_at_corner():
    img = np.linspace(0.2, 0.9, 100 * 100, dtype=np.float32).reshape(100, 100)
    row = {"center_row": 0, "center_col": 0, "radius": 10}
    refl, m1 = extract_roi(img, row, size=64, pad="reflect", return_meta=True)
    const, m2 = extract_roi(img, row, size=64, pad="constant", return_meta=True)
    assert m1["border_fraction"] == pytest.approx(0.75) == m2["border_fraction"]
    np.testing.assert_array_equal(const[32:, 32:], img[:32, :32])  # no resize at side 64
    assert (const[:32].max() == 0) and (const[:, :32].max() == 0)
    assert m2["background_fraction"] == pytest.approx(0.75)
    # reflection mirrors about the edge pixel
    np.testing.assert_array_equal(refl[31, 32:], img[1, :32])
    np.testing.assert_array_equal(refl[32:, 31], img[:32, 1])
    assert m1["background_fraction"] == 0.0


def test_whole_image_when_no_coordinates():
    img = np.random.default_rng(0).random((90, 60)).astype(np.float32)
    roi, meta = extract_roi(img, {"roi_id": "x", "radius": np.nan}, size=30, return_meta=True)
    assert roi.shape == (30, 30) and meta["crop_side_px"] == 90 and meta["scale"] == pytest.approx(1 / 3)
    assert meta["border_fraction"] == 0.0 and meta["roi_id"] == "x"
    assert roi.mean() == pytest.approx(img.mean(), abs=0.02)


def test_anti_aliased_downsampling():
    img = np.indices((512, 512)).sum(0) % 2 * 1.0  # one-pixel checkerboard
    roi = extract_roi(img.astype(np.float32), {}, size=64)
    assert roi.std() < 0.05 and roi.mean() == pytest.approx(0.5, abs=0.05)


def test_keeps_bit_depth_and_range(tmp_path):
    a = (np.arange(128 * 128).reshape(128, 128) * 3 % 4096).astype(np.uint16)
    a[0, 0] = 4095
    Image.fromarray(a).save(tmp_path / "f.png")
    df = pd.DataFrame({"roi_id": ["a"], "image_path": [str(tmp_path / "f.png")], "center_row": [64.0],
                       "center_col": [64.0], "radius": [20.0]})
    rois, meta = extract_rois(df, size=64, progress=False)
    np.testing.assert_allclose(rois[0], a[32:96, 32:96] / 4095.0, atol=1e-6)  # 12-bit levels, not 8
    assert rois.dtype == np.float32
    rois, _ = extract_rois(df, size=23, progress=False)
    assert rois.min() >= 0.0 and rois.max() <= 1.0


def test_extract_rois_reads_each_film_once_and_keeps_order(tmp_path, monkeypatch):
    paths = []
    for k in range(3):
        img = np.full((120, 100), 40 * (k + 1), np.uint8)
        Image.fromarray(img).save(tmp_path / f"f{k}.png")
        paths.append(str(tmp_path / f"f{k}.png"))
    df = pd.DataFrame({"roi_id": list("abcdef"), "image_path": [paths[i] for i in (0, 1, 0, 2, 1, 0)],
                       "center_row": [60.0] * 6, "center_col": [50.0] * 6, "radius": [5.0] * 6})
    calls = []
    real = roi_mod.read_image
    monkeypatch.setattr(roi_mod, "read_image", lambda p, **kw: calls.append(p) or real(p, **kw))
    rois, meta = extract_rois(df, size=16, progress=False)
    assert sorted(calls) == sorted(paths)
    assert list(meta.columns) == META_COLUMNS and meta.roi_id.tolist() == list("abcdef")
    np.testing.assert_allclose(rois.mean(axis=(1, 2)), [40, 80, 40, 120, 80, 40] / np.float32(255), atol=1e-6)
    np.testing.assert_allclose(meta.mean_intensity, rois.mean(axis=(1, 2)), atol=1e-6)
    again, meta2 = extract_rois(df, size=16, progress=False)
    np.testing.assert_array_equal(rois, again)
    pd.testing.assert_frame_equal(meta, meta2)


def test_bad_requests():
    img = np.zeros((50, 50), np.float32)
    with pytest.raises(InputError, match="outside the 50x50 image"):
        extract_roi(img, {"roi_id": "z", "center_row": 50, "center_col": 5, "radius": 3})
    with pytest.raises(InputError, match="crop mode 'tight'"):
        extract_roi(img, {}, mode="tight")
    with pytest.raises(InputError, match="pad 'wrap'"):
        extract_roi(img, {}, pad="wrap")
    with pytest.raises(InputError, match="2-D image"):
        extract_roi(np.zeros((3, 4, 4)), {})
    with pytest.raises(InputError, match="image file not found"):
        extract_rois(pd.DataFrame({"roi_id": ["a"], "image_path": ["/nonexistent.png"]}), progress=False)
