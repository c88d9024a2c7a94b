"""Compressed clinical DICOM, modality/VOI LUTs and frame counting in mammodecomp.io.read_image.

Real compressed files come from pydicom's own test files (always installed
with pydicom) and from pydicom-data (``JPEG-LL.dcm``: JPEG Lossless,
1.2.840.10008.1.2.4.70), skipped where absent. Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from mammodecomp.errors import InputError
from mammodecomp.io import read_image
from test_io import write_dicom


def _testfile(name: str):
    """A file that pydicom or pydicom-data ships, or a skip; never a download."""
    from pydicom.data.data_manager import DATA_ROOT, external_data_sources
    local = list((Path(DATA_ROOT) / "test_files").rglob(name))
    if local:
        return local[0]
    for src in external_data_sources().values():
        try:
            return src.get_path(name)
        except (ValueError, FileNotFoundError):
            pass
    pytest.skip(f"{name} is not installed (it comes with pydicom-data)")


def _raw_unit(path, *, voi=False):
    """Independent reference: stored values through rescale/window, in numpy, scaled to [0, 1]."""
    ds = pydicom.dcmread(path)
    a = ds.pixel_array.astype(np.float64)
    bits = ds.BitsStored
    lo, hi = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if ds.PixelRepresentation else (0.0, 2.0 ** bits - 1)
    s, b = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    a, lo, hi = a * s + b, lo * s + b, hi * s + b
    if voi:  # DICOM PS3.3 C.11.2.1.2.1 linear window
        c, w = float(ds.WindowCenter), float(ds.WindowWidth)
        a = np.where(a <= c - 0.5 - (w - 1) / 2, lo,
                     np.where(a > c - 0.5 + (w - 1) / 2, hi, ((a - (c - 0.5)) / (w - 1) + 0.5) * (hi - lo) + lo))
    return (a - lo) / (hi - lo)


@pytest.mark.parametrize("name,syntax", [("MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80"),
                                         ("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90"),
                                         ("MR_small_RLE.dcm", "1.2.840.10008.1.2.5")])
def test_lossless_compressed_equals_uncompressed(name, syntax):
    ref = _testfile("MR_small.dcm")
    path = _testfile(name)
    out, meta = read_image(path, return_meta=True)
    assert meta["transfer_syntax"] == syntax and meta["voi"] == "window"
    np.testing.assert_array_equal(out, read_image(ref))
    np.testing.assert_allclose(out, np.clip(_raw_unit(ref, voi=True), 0, 1), atol=1e-6)
    np.testing.assert_allclose(read_image(path, voi=False), _raw_unit(ref), atol=1e-6)


def test_jpeg_lossless_process14_and_12bit_extended():
    """JPEG Lossless (common in FFDM exports) and 12-bit JPEG Extended: two encodings of one image."""
    ll, meta = read_image(_testfile("JPEG-LL.dcm"), return_meta=True)
    assert meta["transfer_syntax"] == "1.2.840.10008.1.2.4.70" and ll.shape == (1024, 256)
    np.testing.assert_allclose(ll, _raw_unit(_testfile("JPEG-LL.dcm")), atol=1e-6)
    ext, meta = read_image(_testfile("JPGExtended.dcm"), return_meta=True)
    assert meta["transfer_syntax"] == "1.2.840.10008.1.2.4.51" and meta["bits"] == 12
    a = pydicom.dcmread(_testfile("JPEG-LL.dcm")).pixel_array.astype(float)
    b = pydicom.dcmread(_testfile("JPGExtended.dcm")).pixel_array.astype(float)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98  # lossy copy of the same picture
    np.testing.assert_allclose(ext, b / 4095.0, atol=1e-6)


def test_undecodable_file_is_one_line():
    # pydicom's JPEG-lossy.dcm has a corrupt scan header: no installed decoder reads it
    with pytest.raises(InputError, match=r"JPEG-lossy.dcm: cannot decode DICOM pixel data \(transfer syntax "
                                         r"1.2.840.10008.1.2.4.51 JPEG Extended") as e:
        read_image(_testfile("JPEG-lossy.dcm"))
    assert "\n" not in str(e.value)


def test_multiframe_refused_from_header_before_decoding(monkeypatch):
    path = _testfile("emri_small_jpeg_ls_lossless.dcm")  # 10 frames of 64x64
    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(lambda self: pytest.fail("decoded")))
    with pytest.raises(InputError, match=r"DICOM has 10 frames of 64x64; expected a single-frame grey image "
                                         r"\(nothing was decoded\)"):
        read_image(path)
    with pytest.raises(InputError, match=r"image has 40960 pixels \(10 frame\(s\) of 64x64\), above the limit "
                                         r"of 20000"):
        read_image(path, max_pixels=20_000)  # one frame (4096 px) is under the limit; ten are not


def _with(path, out, **tags):
    ds = pydicom.dcmread(path)
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(out, enforce_file_format=True)
    return out


def test_window_makes_bits_stored_irrelevant(tmp_path):
    """Same stored values and window, BitsStored 12 vs 16: the same picture."""
    a = np.random.default_rng(0).integers(0, 4096, (16, 12)).astype(np.uint16)
    p12 = _with(write_dicom(tmp_path / "a.dcm", a, bits_stored=12), tmp_path / "w12.dcm",
                WindowCenter=2000, WindowWidth=1500)
    p16 = _with(write_dicom(tmp_path / "b.dcm", a, bits_stored=16), tmp_path / "w16.dcm",
                WindowCenter=2000, WindowWidth=1500)
    w12, w16 = read_image(p12), read_image(p16)
    np.testing.assert_allclose(w12, w16, atol=1e-6)
    np.testing.assert_allclose(w12, np.clip(_raw_unit(p12, voi=True), 0, 1), atol=1e-6)
    assert (w12 == 0).any() and (w12 == 1).any()  # clipped outside the window
    # without the window, stored bits decide the scale (a 12-bit image in a 16-bit container)
    np.testing.assert_allclose(read_image(p12, voi=False), a / 4095.0, atol=1e-6)
    np.testing.assert_allclose(read_image(p16, voi=False), a / 65535.0, atol=1e-6)


def test_modality_and_voi_lut_sequences(tmp_path):
    from pydicom.dataset import Dataset
    a = np.arange(64, dtype=np.uint16).reshape(8, 8) * 60  # 0..3780, 12 bit
    base = write_dicom(tmp_path / "a.dcm", a, bits_stored=12)
    # Modality LUT: entries for stored values 100.. (first map 100), 16 bits per entry (PS3.3 C.11.1.1.1)
    mlut = (np.arange(4096 - 100) * 7919 % 65536).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [len(mlut), 100, 16]
    item.LUTData = mlut.tolist()
    item["LUTDescriptor"].VR = "US"
    item["LUTData"].VR = "US"
    pm = _with(base, tmp_path / "m.dcm", ModalityLUTSequence=[item])
    expect = mlut[np.clip(a.astype(int) - 100, 0, len(mlut) - 1)] / 65535.0
    np.testing.assert_allclose(read_image(pm), expect, atol=1e-6)
    # VOI LUT: 8-bit output over 4096 entries (a square-root curve)
    vlut = np.round(255 * np.sqrt(np.arange(4096) / 4095)).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 8]
    item.LUTData = vlut.tolist()
    item["LUTDescriptor"].VR = "US"
    item["LUTData"].VR = "US"
    pv = _with(base, tmp_path / "v.dcm", VOILUTSequence=[item], WindowCenter=10, WindowWidth=5)
    out, meta = read_image(pv, return_meta=True)
    assert meta["voi"] == "lut"  # the LUT is preferred to the window
    np.testing.assert_allclose(out, vlut[a] / 255.0, atol=1e-6)
    np.testing.assert_allclose(read_image(pv, voi=False), a / 4095.0, atol=1e-6)


@pytest.mark.slow
def test_every_shipped_dicom_decodes_or_gives_one_line():
    """Every DICOM that pydicom (and pydicom-data, where installed) ships: a [0, 1] image or one InputError line."""
    from pydicom.data.data_manager import DATA_ROOT, external_data_sources
    files = sorted((Path(DATA_ROOT) / "test_files").rglob("*.dcm"))
    for src in external_data_sources().values():
        files += sorted(Path(src.data_path).rglob("*.dcm")) if hasattr(src, "data_path") else []
    assert len(files) > 60
    ok = refused = 0
    for f in files:
        try:
            out = read_image(f, max_pixels=20_000_000)
        except InputError as e:
            assert "\n" not in str(e) and str(f) in str(e), f
            refused += 1
            continue
        assert out.ndim == 2 and out.dtype == np.float32 and np.isfinite(out).all(), f
        assert 0 <= out.min() <= out.max() <= 1, f
        ok += 1
    assert ok > 30 and refused > 10, (ok, refused)
