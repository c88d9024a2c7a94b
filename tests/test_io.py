"""mammodecomp.io.read_image: bit depths, DICOM rescale/MONOCHROME1, bad files -> InputError."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from mammodecomp.errors import InputError
from mammodecomp.io import read_image


def write_dicom(path, arr, *, bits_stored=12, photometric="MONOCHROME2", slope=None, intercept=None,
                spacing=None, patient_name="ANON^ANON", patient_id="ANON"):
    """A minimal uncompressed single-frame grey DICOM (used by the source tests too)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    arr = np.asarray(arr)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # digital mammography, for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.Modality = "MG"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if arr.dtype == np.uint8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept if intercept is not None else 0
    if spacing is not None:
        ds.PixelSpacing = [spacing, spacing]
    ds.PixelData = arr.astype(np.uint8 if arr.dtype == np.uint8 else np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


RAMP = np.arange(64, dtype=np.int64).reshape(8, 8)


def test_png_8bit_exact(tmp_path):
    a = (RAMP * 4).astype(np.uint8)
    a[0, 0] = 255
    Image.fromarray(a).save(tmp_path / "a.png")
    out, meta = read_image(tmp_path / "a.png", return_meta=True)
    assert out.dtype == np.float32 and out.shape == (8, 8)
    np.testing.assert_allclose(out, a / 255.0, atol=1e-7)
    assert meta["bits"] == 8


def test_pgm_8bit(tmp_path):
    a = (RAMP * 3).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "a.pgm")
    np.testing.assert_allclose(read_image(tmp_path / "a.pgm"), a / 255.0, atol=1e-7)


@pytest.mark.parametrize("peak,scale", [(65535, 65535.0), (4095, 4095.0)])
def test_png_16bit_and_12bit_in_16(tmp_path, peak, scale):
    a = (RAMP * (peak // 63)).astype(np.uint16)
    a[-1, -1] = peak
    Image.fromarray(a).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    np.testing.assert_allclose(out, a / scale, atol=1e-6)
    assert out.max() == pytest.approx(1.0)
    # distinct 16-bit levels stay distinct (no 8-bit quantisation)
    assert len(np.unique(out)) == len(np.unique(a))


@pytest.mark.parametrize("dtype,peak", [(np.uint8, 255), (np.uint16, 4095), (np.uint16, 65535)])
def test_tiff_bit_depths(tmp_path, dtype, peak):
    a = (RAMP * (peak // 63)).astype(dtype)
    a[-1, -1] = peak
    tifffile.imwrite(tmp_path / "a.tif", a)
    np.testing.assert_allclose(read_image(tmp_path / "a.tif"), a / float(peak), atol=1e-6)


def test_dicom_12bit_spacing_meta(tmp_path):
    a = (RAMP * 65).astype(np.uint16)
    p = write_dicom(tmp_path / "a.dcm", a, bits_stored=12, spacing=0.07)
    out, meta = read_image(p, return_meta=True)
    np.testing.assert_allclose(out, a / 4095.0, atol=1e-6)
    assert meta == {"bits": 12, "photometric": "MONOCHROME2", "pixel_spacing_mm": pytest.approx(0.07),
                    "voi": None, "transfer_syntax": "1.2.840.10008.1.2.1"}


def test_dicom_found_by_magic_without_suffix(tmp_path):
    a = (RAMP * 65).astype(np.uint16)
    p = write_dicom(tmp_path / "noext", a)
    np.testing.assert_allclose(read_image(p), a / 4095.0, atol=1e-6)


def test_dicom_monochrome1_inverted(tmp_path):
    a = (RAMP * 65).astype(np.uint16)
    p = write_dicom(tmp_path / "m1.dcm", a, photometric="MONOCHROME1")
    np.testing.assert_allclose(read_image(p), 1.0 - a / 4095.0, atol=1e-6)


def test_dicom_rescale_negative_slope_inverts(tmp_path):
    a = (RAMP * 65).astype(np.uint16)
    plain = read_image(write_dicom(tmp_path / "p.dcm", a))
    pos = read_image(write_dicom(tmp_path / "s.dcm", a, slope=2.0, intercept=-100.0))
    neg = read_image(write_dicom(tmp_path / "n.dcm", a, slope=-1.0, intercept=4095.0))
    np.testing.assert_allclose(pos, plain, atol=1e-6)  # a linear map with positive slope keeps [0, 1]
    np.testing.assert_allclose(neg, 1.0 - plain, atol=1e-6)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="image file not found"):
        read_image(tmp_path / "none.png")


@pytest.mark.parametrize("name", ["a.png", "a.tif", "a.dcm", "a.jpg"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(InputError) as e:
        read_image(tmp_path / name)
    msg = str(e.value)
    assert name in msg and "\n" not in msg


def test_truncated_png(tmp_path):
    a = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot decode image"):
        read_image(tmp_path / "t.png")


def test_truncated_dicom_pixel_data(tmp_path):
    a = (RAMP * 65).astype(np.uint16)
    p = write_dicom(tmp_path / "a.dcm", np.tile(a, (8, 8)))
    data = p.read_bytes()
    (tmp_path / "t.dcm").write_bytes(data[:-1000])
    with pytest.raises(InputError) as e:
        read_image(tmp_path / "t.dcm")
    assert "t.dcm" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_garbage_dicom(tmp_path):
    (tmp_path / "g.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 40)
    with pytest.raises(InputError, match="g.dcm"):
        read_image(tmp_path / "g.dcm")


def test_corrupt_tiff(tmp_path):
    (tmp_path / "c.tif").write_bytes(b"II*\x00" + b"\x07" * 50)
    with pytest.raises(InputError, match="cannot decode TIFF"):
        read_image(tmp_path / "c.tif")


def test_nan_pixels_refused(tmp_path):
    a = np.ones((8, 8), np.float32)
    a[2, 3] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", a)
    with pytest.raises(InputError, match="NaN"):
        read_image(tmp_path / "nan.tif")


def test_float_tiff_out_of_range_rescaled(tmp_path):
    a = np.linspace(-1, 3, 64, dtype=np.float32).reshape(8, 8)
    tifffile.imwrite(tmp_path / "f.tif", a)
    out = read_image(tmp_path / "f.tif")
    assert out.min() == 0.0 and out.max() == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["png", "tif", "dcm"])
def test_pixel_limit(tmp_path, kind):
    a = np.zeros((20, 20), np.uint16)
    p = tmp_path / f"big.{kind}"
    if kind == "png":
        Image.fromarray(a.astype(np.uint8)).save(p)
    elif kind == "tif":
        tifffile.imwrite(p, a)
    else:
        write_dicom(p, a)
    with pytest.raises(InputError, match="above the limit of 399"):
        read_image(p, max_pixels=399)
    assert read_image(p, max_pixels=400).shape == (20, 20)


def test_colour_png_to_grey(tmp_path):
    a = np.zeros((4, 4, 3), np.uint8)
    a[..., 1] = 255
    Image.fromarray(a).save(tmp_path / "c.png")
    out = read_image(tmp_path / "c.png")
    assert out.shape == (4, 4) and out.max() == pytest.approx(0.587, abs=0.01)


def test_atomic_write_gives_new_files_the_umask_mode_and_keeps_an_existing_files_mode(tmp_path):
    import os
    from mammodecomp.io import atomic_write
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "report.html", "w") as f:
            f.write("x")
        assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
        (tmp_path / "secret.json").write_text("{}")
        os.chmod(tmp_path / "secret.json", 0o600)
        with atomic_write(tmp_path / "secret.json", "w") as f:
            f.write("{}")
        assert (tmp_path / "secret.json").stat().st_mode & 0o777 == 0o600
        os.umask(0o077)
        with atomic_write(tmp_path / "private.txt", "w") as f:
            f.write("x")
        assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_progress_bars_redraw_rarely_when_stderr_is_not_a_terminal(monkeypatch):
    import io
    import sys
    from mammodecomp.progress import progress
    monkeypatch.delenv("MAMMODECOMP_QUIET", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    bar = progress(range(3), desc="x")
    assert bar.mininterval == 30.0
    list(bar)
