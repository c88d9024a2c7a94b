"""Download a public data set archive, verify it and unpack it safely.

Only ``mammodecomp data fetch`` touches the network, and only when asked.
The archive is streamed to a temporary file, its size and SHA-256 are
checked (when expected values are given), it is unpacked with tarfile's
``data`` filter (no absolute paths, no links out of the folder, no devices)
into a temporary folder, its contents are checked, and only then is the
folder renamed into place.

The site serves mini-MIAS over plain http only and publishes no checksum
of the archive, so the check is on what matters: every one of the 322 films
is decoded and the SHA-256 of its pixels (:func:`pixel_sha256`) compared
with the table shipped in the package (``checksums/mias_pixels.csv``,
computed once from a copy checked pixel for pixel against the official
PGMs). A missing film or one whose pixels differ refuses the archive, naming
the first such film, and nothing is left behind. PGM and PNG copies of the
same film hash alike.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import InputError
from .progress import progress

#: the Mammographic Image Analysis Society mini-database, as PEIPA distributes it
MIAS_URL = "http://peipa.essex.ac.uk/pix/mias/all-mias.tar.gz"


def _download(url: str, dest: Path, timeout: float) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(dest, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            bar = progress(total=total, desc="download", leave=False)
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                f.write(chunk)
                h.update(chunk)
                n += len(chunk)
                bar.update(len(chunk))
            bar.close()
    except (OSError, ValueError) as e:
        raise InputError(f"download failed from {url} ({type(e).__name__}: {e}); "
                         "download the archive by hand and pass it with --archive") from None
    return n, h.hexdigest()


MIAS_PIXELS = "checksums/mias_pixels.csv"


def pixel_sha256(path: str | Path) -> str:
    """SHA-256 of an 8-bit grey film's decoded pixels (``"HxW:"`` + row-major bytes).

    The file format does not enter: a PGM and a lossless PNG of one film
    give the same digest.

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    >>> Image.fromarray(a).save(d / "f.pgm"); Image.fromarray(a).save(d / "f.png")
    >>> pixel_sha256(d / "f.pgm") == pixel_sha256(d / "f.png")
    True
    """
    from PIL import Image
    try:
        with Image.open(path) as im:
            if im.mode != "L":
                raise InputError(f"film is mode {im.mode}; expected 8-bit grey", path=path)
            arr = np.asarray(im, dtype=np.uint8)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises many types on corrupt input
        raise InputError(f"cannot decode film ({type(e).__name__}: {e})", path=path) from None
    h = hashlib.sha256(f"{arr.shape[0]}x{arr.shape[1]}:".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def mias_pixel_table() -> dict[str, str]:
    """``{film: pixel SHA-256}`` for the 322 mini-MIAS films, as shipped in the package."""
    text = resources.files("mammodecomp").joinpath(MIAS_PIXELS).read_text()
    rows = [line.split(",") for line in text.splitlines()[1:] if line.strip()]
    return {name: digest for name, digest in rows}


def verify_mias(root: str | Path, expected: dict[str, str] | None = None) -> int:
    """Check every film of *expected* (default: :func:`mias_pixel_table`) under *root*; return how many.

    Raises InputError naming the first film (in name order) that is missing
    or whose decoded pixels differ.
    """
    root = Path(root)
    expected = mias_pixel_table() if expected is None else expected
    for name in sorted(expected):
        found = [root / f"{name}{ext}" for ext in (".pgm", ".png", ".PGM", ".PNG") if (root / f"{name}{ext}").is_file()]
        if not found:
            raise InputError(f"film {name} is missing; expected all {len(expected)} mini-MIAS films "
                             f"({name}.pgm)", path=root)
        got = pixel_sha256(found[0])
        if got != expected[name]:
            raise InputError(f"film {name} differs from the official mini-MIAS: pixel SHA-256 {got[:16]}..., "
                             f"expected {expected[name][:16]}...; the archive is damaged or altered",
                             path=found[0])
    return len(expected)


def fetch_mias(dest: str | Path, *, url: str = MIAS_URL, archive: str | Path | None = None,
               sha256: str | None = None, size: int | None = None, timeout: float = 60.0,
               verify: bool = True, expected: dict[str, str] | None = None) -> Path:
    """Fetch (or take a local copy of) the mini-MIAS archive and unpack it into ``dest``.

    Parameters
    ----------
    archive : a local copy: the ``.tar.gz`` (or plain tar), or a folder
        holding the unpacked files.
    sha256, size : expected archive digest and size, when you know them.
    verify : check every film's decoded pixels against the shipped table
        (:func:`verify_mias`); *expected* replaces the table (tests).

    Returns ``dest``. The result must hold ``Info.txt`` and the films, else
    nothing is left behind and an :class:`InputError` says what was found.
    """
    dest = Path(dest)
    if (dest / "Info.txt").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest.parent))
    try:
        src = Path(archive) if archive is not None else None
        if src is not None and src.is_dir():
            if sha256 is not None or size is not None:
                raise InputError("--sha256/--size check an archive file; this is a folder", path=src)
            out = work / "unpacked"
            shutil.copytree(src, out)
            return _finish(out, src, dest, verify, expected)
        if archive is not None:
            if not src.is_file():
                raise InputError("archive not found", path=src)
            data = src.read_bytes()
            n, digest = len(data), hashlib.sha256(data).hexdigest()
            tgz = src
        else:
            tgz = work / "archive.tar.gz"
            n, digest = _download(url, tgz, timeout)
        if size is not None and n != size:
            raise InputError(f"archive is {n} bytes; expected {size}", path=tgz if archive else url)
        if sha256 is not None and digest.lower() != sha256.lower():
            raise InputError(f"archive SHA-256 is {digest}; expected {sha256}", path=tgz if archive else url)
        out = work / "unpacked"
        out.mkdir()
        try:
            with tarfile.open(tgz) as tf:
                tf.extractall(out, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise InputError(f"cannot unpack archive ({type(e).__name__}: {e})", path=tgz) from None
        return _finish(out, tgz if archive else url, dest, verify, expected)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _finish(out: Path, what, dest: Path, verify: bool, expected: dict[str, str] | None) -> Path:
    infos = list(out.rglob("Info.txt"))
    if not infos:
        raise InputError("archive holds no Info.txt; is this the mini-MIAS archive?", path=what)
    root = infos[0].parent
    films = [p for p in root.iterdir() if p.name.startswith("mdb") and p.suffix.lower() in {".pgm", ".png"}]
    if not films:
        raise InputError("archive holds Info.txt but no mdbNNN.pgm films", path=what)
    if verify:
        try:
            verify_mias(root, expected)
        except InputError as e:  # name the film as it is in the archive, not in the temporary folder
            film = Path(e.path).relative_to(out) if e.path is not None and Path(e.path).is_relative_to(out) else None
            raise InputError(e.message, path=f"{what}: {film}" if film else what) from None
    os.replace(root, dest)
    return dest
