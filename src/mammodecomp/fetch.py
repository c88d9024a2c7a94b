"""Download a public data set archive, verify it and unpack it safely.

Only ``mammodecomp data fetch`` touches the network, and only when asked.
The archive is streamed to a temporary file, its size and SHA-256 are
checked (when expected values are given), it is unpacked with tarfile's
``data`` filter (no absolute paths, no links out of the folder, no devices)
into a temporary folder, its contents are checked, and only then is the
folder renamed into place.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

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


def fetch_mias(dest: str | Path, *, url: str = MIAS_URL, archive: str | Path | None = None,
               sha256: str | None = None, size: int | None = None, timeout: float = 60.0) -> Path:
    """Fetch (or take a local copy of) the mini-MIAS archive and unpack it into ``dest``.

    Returns ``dest``. The result must hold ``Info.txt`` and at least one
    ``mdbNNN.pgm``/``.png`` film, else nothing is left behind and an
    :class:`InputError` says what was found.
    """
    dest = Path(dest)
    if (dest / "Info.txt").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest.parent))
    try:
        if archive is not None:
            src = Path(archive)
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
        infos = list(out.rglob("Info.txt"))
        if not infos:
            raise InputError("archive holds no Info.txt; is this the mini-MIAS archive?", path=tgz)
        root = infos[0].parent
        films = [p for p in root.iterdir() if p.name.startswith("mdb") and p.suffix.lower() in {".pgm", ".png"}]
        if not films:
            raise InputError("archive holds Info.txt but no mdbNNN.pgm films", path=tgz)
        os.replace(root, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest
