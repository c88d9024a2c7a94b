"""Fuzzing harness for the image readers and the mini-MIAS ``Info.txt`` parser.

The contract under test: for *any* bytes, :func:`mammodecomp.io.read_image`
either returns a 2-D float32 array whose values are finite and in [0, 1], or
raises :class:`~mammodecomp.errors.InputError` with a one-line message that
names the file; :func:`mammodecomp.sources.mias.parse_info` either returns a
table or raises a one-line ``InputError`` naming ``Info.txt``. Any other
exception is a bug.

Two engines drive the same targets:

* ``atheris`` (coverage-guided, libFuzzer) when it is installed::

      python tests/reliability/fuzz_readers.py image -runs=100000 CORPUS_DIR
      python tests/reliability/fuzz_readers.py info -runs=100000 CORPUS_DIR

* a plain seeded random loop otherwise (and always in the test suite): valid
  seed files are truncated, bit-flipped, overwritten, spliced or replaced by
  random bytes, :func:`mutations` yields one input per iteration::

      python tests/reliability/fuzz_readers.py image --loop --iters 100000

The test suite (``test_fuzz.py``) runs a bounded number of iterations;
``MAMMODECOMP_FUZZ_ITERS`` sets more.
"""
from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

#: file suffixes the image target writes its input under (the first input byte picks one)
SUFFIXES = (".png", ".pgm", ".tif", ".dcm")


class ContractViolation(AssertionError):
    """A reader broke its contract (crashed or returned a bad array)."""


def seed_images() -> dict[str, bytes]:
    """Small valid files of every supported format and bit depth (the seed corpus).

    Returns
    -------
    dict
        File name -> bytes: 8-bit PGM and PNG, 16-bit and 12-bit-in-16 PNG,
        16-bit and float TIFF, 16-bit and 12-bit DICOM.
    """
    import tifffile
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ramp = np.arange(16 * 16, dtype=np.int64).reshape(16, 16)
    out: dict[str, bytes] = {}

    def pil(arr, fmt):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt)
        return buf.getvalue()

    out["a8.pgm"] = pil(ramp.astype(np.uint8), "PPM")
    out["a8.png"] = pil(ramp.astype(np.uint8), "PNG")
    out["a16.png"] = pil((ramp * 257).astype(np.uint16), "PNG")
    out["a12.png"] = pil((ramp * 16).astype(np.uint16), "PNG")
    buf = io.BytesIO()
    tifffile.imwrite(buf, (ramp * 257).astype(np.uint16))
    out["a16.tif"] = buf.getvalue()
    buf = io.BytesIO()
    tifffile.imwrite(buf, (ramp / 255.0).astype(np.float32))
    out["f32.tif"] = buf.getvalue()
    for bits in (16, 12):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.Rows, ds.Columns = ramp.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.PixelSpacing = 1, 0, [0.1, 0.1]
        ds.PixelData = (ramp * (2 ** bits - 1) // 255).astype(np.uint16).tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out[f"a{bits}.dcm"] = buf.getvalue()
    return out


SEED_INFO = (b"mini-MIAS database: header text\n"
             b"mdb001 G CIRC B 535 425 197\nmdb002 G CIRC B 522 280 69\nmdb003 D NORM \n"
             b"mdb216 D CALC M *NOTE 3*\nmdb005 F CIRC B 477 133 30\n")


def mutations(seeds: list[bytes], n: int, seed: int = 0) -> Iterator[bytes]:
    """Yield *n* mutated inputs drawn from *seeds* (seeded, reproducible).

    Each input is a seed with one to three of: truncation, random bit flips,
    a random chunk overwritten, a chunk duplicated or deleted, or (1 in 10)
    plain random bytes.
    """
    rng = np.random.default_rng(seed)
    for _ in range(n):
        if rng.random() < 0.1:
            yield rng.integers(0, 256, int(rng.integers(0, 512)), dtype=np.uint8).tobytes()
            continue
        b = bytearray(seeds[int(rng.integers(len(seeds)))])
        for _ in range(int(rng.integers(1, 4))):
            if not b:
                break
            op = int(rng.integers(5))
            i = int(rng.integers(len(b)))
            if op == 0:
                del b[i:]
            elif op == 1:
                for j in rng.integers(0, len(b), int(rng.integers(1, 9))):
                    b[int(j)] ^= 1 << int(rng.integers(8))
            elif op == 2:
                m = int(rng.integers(1, 17))
                b[i:i + m] = rng.integers(0, 256, m, dtype=np.uint8).tobytes()
            elif op == 3:
                m = int(rng.integers(1, 65))
                b[i:i] = b[i:i + m]
            else:
                del b[i:i + int(rng.integers(1, 65))]
        yield bytes(b)


def check_image_bytes(data: bytes, workdir: Path, suffix: str, max_pixels: int = 4_000_000) -> None:
    """Write *data* as ``fuzz<suffix>`` in *workdir* and hold :func:`read_image` to its contract.

    Raises
    ------
    ContractViolation
        The reader raised something other than ``InputError``, gave a
        multi-line message or one that does not name the file, or returned
        an array that is not 2-D float32, finite, in [0, 1].
    """
    from mammodecomp.errors import InputError
    from mammodecomp.io import read_image

    path = workdir / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        arr = read_image(path, max_pixels=max_pixels)
    except InputError as e:
        msg = str(e)
        if "\n" in msg or path.name not in msg:
            raise ContractViolation(f"bad error message for {suffix} input: {msg!r}") from None
        return
    except Exception as e:  # noqa: BLE001 - the point of the harness
        raise ContractViolation(f"read_image({suffix}) raised {type(e).__name__}: {e}") from e
    if not (isinstance(arr, np.ndarray) and arr.ndim == 2 and arr.dtype == np.float32 and arr.size > 0):
        raise ContractViolation(f"read_image({suffix}) returned {type(arr).__name__} "
                                f"{getattr(arr, 'shape', None)} {getattr(arr, 'dtype', None)}")
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise ContractViolation(f"read_image({suffix}) returned values outside [0, 1] or non-finite")


def check_info_bytes(data: bytes, workdir: Path) -> None:
    """Write *data* as ``Info.txt`` in *workdir* and hold :func:`parse_info` to its contract."""
    from mammodecomp.errors import InputError
    from mammodecomp.sources.mias import parse_info

    path = workdir / "Info.txt"
    path.write_bytes(data)
    try:
        df = parse_info(path)
    except InputError as e:
        msg = str(e)
        if "\n" in msg or "Info.txt" not in msg:
            raise ContractViolation(f"bad error message for Info.txt: {msg!r}") from None
        return
    except Exception as e:  # noqa: BLE001
        raise ContractViolation(f"parse_info raised {type(e).__name__}: {e}") from e
    if len(df) == 0 or not df["film_id"].str.match(r"^mdb\d{3}$").all():
        raise ContractViolation("parse_info returned rows that are not mdbNNN data rows")


def run_loop(target: str, iters: int, seed: int = 0, workdir: Path | None = None) -> int:
    """The fallback engine: *iters* seeded mutations through one target; returns the count run."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="mammodecomp-fuzz-"))
    if target == "image":
        seeds = seed_images()
        by_suffix = list(seeds.items())
        rng = np.random.default_rng(seed + 1)
        for k, data in enumerate(mutations([v for _, v in by_suffix], iters, seed)):
            # mostly the suffix of a seed of that format; sometimes a mismatched one
            suffix = SUFFIXES[int(rng.integers(len(SUFFIXES)))]
            check_image_bytes(data, workdir, suffix)
    elif target == "info":
        for data in mutations([SEED_INFO], iters, seed):
            check_info_bytes(data, workdir)
    else:
        raise SystemExit(f"unknown target {target!r}; expected image or info")
    return iters


def _atheris_target(target: str, workdir: Path) -> Callable[[bytes], None]:
    def image(data: bytes) -> None:
        if not data:
            return
        check_image_bytes(data[1:], workdir, SUFFIXES[data[0] % len(SUFFIXES)])

    def info(data: bytes) -> None:
        check_info_bytes(data, workdir)

    return {"image": image, "info": info}[target]


def write_corpus(target: str, folder: Path) -> Path:
    """Write the seed corpus of *target* into *folder* (atheris/libFuzzer reads it)."""
    folder.mkdir(parents=True, exist_ok=True)
    if target == "image":
        for name, data in seed_images().items():
            pick = bytes([SUFFIXES.index(Path(name).suffix)])
            (folder / name).write_bytes(pick + data)
    else:
        (folder / "Info.txt").write_bytes(SEED_INFO)
    return folder


def main(argv: list[str]) -> int:
    """``fuzz_readers.py TARGET [--loop] [--iters N] [libFuzzer args...]``."""
    if not argv or argv[0] not in ("image", "info"):
        print(__doc__)
        return 2
    target, rest = argv[0], argv[1:]
    workdir = Path(tempfile.mkdtemp(prefix="mammodecomp-fuzz-"))
    try:
        import atheris
    except ImportError:
        atheris = None
    if atheris is None or "--loop" in rest:
        iters = int(rest[rest.index("--iters") + 1]) if "--iters" in rest else \
            int(os.environ.get("MAMMODECOMP_FUZZ_ITERS", "1000"))
        run_loop(target, iters, workdir=workdir)
        print(f"fuzz {target}: {iters} inputs, no contract violation (random loop)")
        return 0
    with atheris.instrument_imports(include=["mammodecomp"]):
        import mammodecomp.io  # noqa: F401
        import mammodecomp.sources.mias  # noqa: F401
    fn = _atheris_target(target, workdir)
    atheris.Setup([sys.argv[0], *rest], fn)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
