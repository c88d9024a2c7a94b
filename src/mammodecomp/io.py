"""File I/O: atomic writes and image readers.

Nothing is written half: :func:`atomic_write` writes to a temporary name in
the destination folder, fsyncs, then renames over the target, so a reader sees
either the old file or the new one, never a torn one.

:func:`read_image` returns a 2-D float32 array in [0, 1] for PNG, PGM, TIFF and
DICOM, keeping the source bit depth (8, 12 or 16 bit; DICOM rescale slope and
intercept applied; MONOCHROME1 inverted so that dense tissue is bright).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InputError

#: refuse images above this many pixels (decompression bombs); the environment
#: variable ``MAMMODECOMP_MAX_PIXELS`` overrides it where no explicit limit is given
DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "MAMMODECOMP_MAX_PIXELS"

IMAGE_SUFFIXES = {".png", ".pgm", ".pnm", ".tif", ".tiff", ".dcm", ".dicom", ".jpg", ".jpeg", ".bmp"}


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator:
    """Open a temporary file beside *path*; on success rename it onto *path*.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_write(d / "a.txt", "w") as f:
    ...     _ = f.write("hello")
    >>> (d / "a.txt").read_text()
    'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; give it the mode a plain open() would (or keep the old file's)
        try:
            perm = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            perm = 0o666 & ~_umask()
        os.fchmod(fd, perm)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process's umask: read from /proc on Linux (setting it to read it back, the
    portable way, would briefly change it for every other thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj) -> None:
    """Write *obj* as indented, strict JSON, atomically.

    NaN and infinities become ``null`` (:func:`strict_json`): the file is
    JSON for every parser, not only Python's.
    """
    text = json.dumps(strict_json(obj), indent=2, sort_keys=False, allow_nan=False)
    with atomic_write(path, "w") as f:
        f.write(text + "\n")


def strict_json(obj):
    """*obj* with numpy scalars and arrays made plain and non-finite floats made None.

    >>> strict_json({"a": float("nan"), "b": [1.5, float("inf")], "c": np.float32(2), "d": np.arange(2)})
    {'a': None, 'b': [1.5, None], 'c': 2.0, 'd': [0, 1]}
    """
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, str) else k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict_json(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if np.isfinite(f) else None
    if obj is None or isinstance(obj, str):
        return obj
    try:
        return _json_default(obj)     # Path -> str
    except TypeError:                 # not JSON at all: left for json.dumps to name
        return obj


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | Path):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON ({e.msg} at line {e.lineno})", path=path) from None


def save_array(path: str | Path, arr: np.ndarray) -> None:
    """Save a numpy array (.npy) atomically."""
    with atomic_write(path, "wb") as f:
        np.save(f, arr)


def _to_unit(arr: np.ndarray, path: Path, bits: int | None = None) -> np.ndarray:
    """Scale integer pixels to [0, 1] by the bit depth; check finiteness."""
    if arr.size == 0 or arr.ndim != 2 or min(arr.shape) == 0:
        raise InputError(f"empty or not a 2-D grey image (shape {arr.shape})", path=path)
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        if bits is None:
            maxv = int(arr.max()) if arr.size else 0
            if arr.dtype == np.uint8 or arr.dtype == bool:
                bits = 8
            elif maxv < 4096:
                bits = 12
            else:
                bits = 16
        out = arr.astype(np.float32) / float(2 ** bits - 1)
    else:
        # float64: (hi - lo) of float32 extremes would overflow to Inf and give NaN
        out64 = arr.astype(np.float64)
        if not np.all(np.isfinite(out64)):
            raise InputError("image has NaN or Inf pixels; expected finite values", path=path)
        lo, hi = float(out64.min()), float(out64.max())
        if lo < 0 or hi > 1:
            out64 = (out64 - lo) / (hi - lo) if hi > lo else np.zeros_like(out64)
        out = out64.astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def _check_pixels(shape, path: Path, max_pixels: int) -> None:
    n = int(np.prod(shape))
    if n > max_pixels:
        raise InputError(f"image has {n} pixels, above the limit of {max_pixels} "
                         "(raise max_pixels if this is intended)", path=path)


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: *max_pixels*, else ``$MAMMODECOMP_MAX_PIXELS``, else 100 megapixels.

    Examples
    --------
    >>> max_pixels_limit(400)
    400
    """
    if max_pixels is not None:
        return int(max_pixels)
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"environment variable {MAX_PIXELS_ENV}={raw!r}; expected a positive number of pixels, "
                         "e.g. 100000000")
    return value


@contextlib.contextmanager
def _quiet_decoders() -> Iterator[None]:
    """Silence decoder warnings and log records (tifffile, pydicom, PIL) during one read.

    A bad file becomes one InputError line; the libraries' own chatter about
    it would otherwise print many lines before that line.
    """
    loggers = [logging.getLogger(n) for n in ("tifffile", "pydicom", "PIL")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for lg, lv in zip(loggers, levels):
                lg.setLevel(lv)


def read_image(path: str | Path, *, max_pixels: int | None = None, return_meta: bool = False,
               voi: bool = True):
    """Read a grey image as float32 in [0, 1].

    Parameters
    ----------
    path : file path (PNG, PGM, TIFF, JPEG, BMP or DICOM).
    max_pixels : refuse larger images before decoding them; default
        ``$MAMMODECOMP_MAX_PIXELS`` or 100 megapixels (:func:`max_pixels_limit`).
    return_meta : also return a dict with ``bits``, ``pixel_spacing_mm`` and
        ``photometric`` where known (DICOM: also ``voi`` and ``transfer_syntax``).
    voi : DICOM only: apply the file's VOI LUT Sequence or window (the first
        one) after its modality LUT or rescale, as a viewer shows it.

    Notes
    -----
    Colour images are converted to grey (ITU-R 601 luma). 16-bit PNG/TIFF keep
    their depth; a 16-bit container holding 12-bit data (max < 4096) is
    scaled by 4095.

    DICOM pixels are decoded by pydicom's pixel handlers, so compressed
    transfer syntaxes (JPEG Lossless, JPEG-LS, JPEG 2000, 12-bit JPEG
    Extended, RLE) read through pylibjpeg and its plugins (dependencies).
    Modality LUT (or rescale) and VOI LUT (or window) are applied with
    pydicom's ``apply_modality_lut``/``apply_voi_lut``; [0, 1] is the output
    range of the last of them. Frames, samples and pixels are counted from
    the header, before any decoding: multi-frame and colour files are refused.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("image file not found", path=path)
    max_pixels = max_pixels_limit(max_pixels)
    suffix = path.suffix.lower()
    meta: dict = {"bits": None, "pixel_spacing_mm": None, "photometric": None}
    with _quiet_decoders():
        if suffix in {".dcm", ".dicom"} or _looks_dicom(path):
            arr, meta = _read_dicom(path, max_pixels, voi)
            out = arr
        elif suffix in {".tif", ".tiff"}:
            out = _read_tiff(path, max_pixels, meta)
        else:
            out = _read_pil(path, max_pixels, meta)
    return (out, meta) if return_meta else out


def _looks_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def _read_pil(path: Path, max_pixels: int, meta: dict) -> np.ndarray:
    from PIL import Image
    try:
        with Image.open(path) as im:
            _check_pixels((im.size[1], im.size[0]), path, max_pixels)
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.int64)
                arr = arr.astype(np.uint16 if arr.max() < 65536 else np.uint32)
            elif mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
                arr = np.asarray(im.convert("L"))
            elif mode == "F":
                arr = np.asarray(im, dtype=np.float32)
            else:
                arr = np.asarray(im.convert("L") if mode not in ("L", "1") else im)
            arr = np.array(arr)  # force the decode inside the try
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(f"image is above PIL's decompression-bomb limit (and the limit of {max_pixels} "
                         "pixels)", path=path) from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types on corrupt input
        raise InputError(f"cannot decode image ({type(e).__name__}: {e}); expected a valid "
                         "PNG/PGM/JPEG/BMP file", path=path) from None
    meta["bits"] = 8 if arr.dtype == np.uint8 else None
    return _to_unit(arr, path)


def _read_tiff(path: Path, max_pixels: int, meta: dict) -> np.ndarray:
    import tifffile
    try:
        with tifffile.TiffFile(path) as tf:
            page = tf.pages[0]
            _check_pixels(page.shape[:2], path, max_pixels)
            arr = page.asarray()
    except InputError:
        raise
    except Exception as e:  # tifffile raises many types on corrupt input
        raise InputError(f"cannot decode TIFF ({type(e).__name__}: {e})", path=path) from None
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.dtype.kind in "uif":
        grey = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        if np.issubdtype(arr.dtype, np.integer):
            grey = grey / float(np.iinfo(arr.dtype).max)  # 8- or 16-bit RGB by its own depth
        elif np.isfinite(grey).all() and grey.max() > 1:
            grey = grey / 255.0
        arr = grey
    if arr.dtype.kind not in "uifb":
        raise InputError(f"TIFF pixel type {arr.dtype} is not a grey or RGB image", path=path)
    return _to_unit(arr, path)


def _read_dicom(path: Path, max_pixels: int, apply_voi: bool = True):
    try:
        return _read_dicom_checked(path, max_pixels, apply_voi)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - pydicom raises many types on corrupt headers
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise InputError(f"cannot read DICOM ({type(e).__name__}: {first}); expected a valid single-frame "
                         "grey DICOM", path=path) from None


def _read_dicom_checked(path: Path, max_pixels: int, apply_voi: bool = True):
    import pydicom
    from pydicom.errors import InvalidDicomError
    try:
        ds = pydicom.dcmread(path, defer_size="4 MB")  # large pixel data is read only once the header passed
    except (InvalidDicomError, OSError, EOFError, ValueError) as e:
        raise InputError(f"cannot read DICOM ({type(e).__name__}: {e})", path=path) from None
    if "PixelData" not in ds:
        raise InputError("DICOM has no pixel data", path=path)
    # everything the limit needs comes from the header: nothing is decoded before these checks
    rows, cols = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    n = frames * samples * rows * cols
    if n > max_pixels:
        raise InputError(f"image has {n} pixels ({frames} frame(s) of {rows}x{cols}"
                         + (f" x {samples} samples" if samples > 1 else "")
                         + f"), above the limit of {max_pixels} (raise max_pixels if this is intended)", path=path)
    if frames != 1:
        raise InputError(f"DICOM has {frames} frames of {rows}x{cols}; expected a single-frame grey image "
                         "(nothing was decoded)", path=path)
    if samples != 1:
        raise InputError(f"DICOM has {samples} samples per pixel ({ds.get('PhotometricInterpretation', '?')}); "
                         "expected a single-frame grey image", path=path)
    bits = int(getattr(ds, "BitsStored", 16))
    if not 1 <= bits <= 32:
        raise InputError(f"DICOM BitsStored is {bits}; expected 1 to 32", path=path)
    try:
        arr = ds.pixel_array   # pydicom's pixel handlers (pylibjpeg, Pillow, gdcm where installed)
    except Exception as e:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        name = getattr(ts, "name", "") if ts != "unknown" else ""
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot decode DICOM pixel data (transfer syntax {ts}{f' {name}' if name else ''}: "
                         f"{first}); expected an uncompressed transfer syntax or one that pydicom's installed "
                         "decoders (pylibjpeg, Pillow) read", path=path) from None
    if arr.ndim != 2:
        raise InputError(f"expected a single-frame grey DICOM, got pixel array of shape {arr.shape}", path=path)
    out, lo, hi, voi = _dicom_luts(arr, ds, bits, apply_voi)
    if hi < lo:
        lo, hi = hi, lo
    out = ((out.astype(np.float64) - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    if not np.all(np.isfinite(out)):
        raise InputError("DICOM has NaN or Inf pixels", path=path)
    spacing = getattr(ds, "PixelSpacing", None) or getattr(ds, "ImagerPixelSpacing", None)
    meta = {"bits": bits, "photometric": photometric, "voi": voi,
            "transfer_syntax": str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")) or None,
            "pixel_spacing_mm": float(spacing[0]) if spacing else None}
    return np.clip(out, 0.0, 1.0), meta


def _lut_depth(item) -> int:
    return int(item.LUTDescriptor[2])


def _dicom_luts(arr: np.ndarray, ds, bits: int, apply_voi: bool):
    """Modality LUT (or rescale), then VOI LUT (or window), with pydicom's own functions.

    Returns ``(values, lo, hi, voi)``: the values and the output range of the
    last transform applied, which maps to [0, 1]. Without a VOI transform the
    range is that of the stored bits through the modality transform (a 12-bit
    image in a 16-bit container is divided by 4095); with a window it is the
    window's output range, and with a VOI LUT Sequence the LUT's nominal
    depth, so two files that differ only in ``BitsStored`` read alike.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
    raw_lo, raw_hi = (-float(2 ** (bits - 1)), float(2 ** (bits - 1) - 1)) if signed else (0.0, float(2 ** bits - 1))
    if ds.get("ModalityLUTSequence"):
        lo, hi = 0.0, float(2 ** _lut_depth(ds.ModalityLUTSequence[0]) - 1)
    else:
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        lo, hi = raw_lo * slope + intercept, raw_hi * slope + intercept
        if ("RescaleSlope" in ds) != ("RescaleIntercept" in ds):  # pydicom needs both; one alone still counts
            arr = arr.astype(np.float64) * slope + intercept
    values = apply_modality_lut(arr, ds)
    voi = None
    if apply_voi and ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        n_entries, first = int(item.LUTDescriptor[0]) or 65536, int(item.LUTDescriptor[1])
        if _lut_depth(item) == 8 and n_entries > 256:
            # pydicom 3.0 indexes an 8-bit LUT with uint8 indices (entries past 255 wrap): give it the
            # same entries declared as 16-bit (their values are unchanged; the range stays 8-bit below)
            import copy

            from pydicom.dataset import Dataset
            from pydicom.pixels.processing import apply_voi
            tmp = Dataset()
            tmp.VOILUTSequence = copy.deepcopy(ds.VOILUTSequence)
            tmp.VOILUTSequence[0].LUTDescriptor = [int(item.LUTDescriptor[0]), first, 16]
            if hasattr(ds, "file_meta"):
                tmp.file_meta = ds.file_meta
            values = apply_voi(np.asarray(values), tmp, index=0)
        else:
            values = apply_voi_lut(values, ds, index=0, prefer_lut=True)
        lo, hi, voi = 0.0, float(2 ** _lut_depth(item) - 1), "lut"
    elif apply_voi and "WindowCenter" in ds and "WindowWidth" in ds:
        width = ds["WindowWidth"].value
        width = float(width[0] if ds["WindowWidth"].VM > 1 else width)
        if width >= 1:
            values = apply_voi_lut(values, ds, index=0, prefer_lut=False)
            voi = "window"   # its output range is the modality range computed above (pydicom's y_min, y_max)
    return values, lo, hi, voi
