"""`data fetch` against a small archive served on 127.0.0.1 (never the internet)."""
import hashlib
import http.server
import io
import tarfile
import threading
from functools import partial

import pytest

from mammodecomp.errors import InputError
from mammodecomp.fetch import fetch_mias


def _archive(tmp_path, members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    p = tmp_path / "srv" / "all-mias.tar.gz"
    p.parent.mkdir()
    p.write_bytes(buf.getvalue())
    return p


@pytest.fixture
def server(tmp_path):
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "srv"))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_fetch_download_checks_and_unpacks(tmp_path, server):
    p = _archive(tmp_path, {"Info.txt": b"mdb001 G CIRC B 535 425 197\n", "mdb001.pgm": b"P5 1 1 255\n\x00"})
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    dest = fetch_mias(tmp_path / "mias", url=f"{server}/all-mias.tar.gz", sha256=digest, size=p.stat().st_size)
    assert (dest / "Info.txt").is_file() and (dest / "mdb001.pgm").is_file()
    assert not list(tmp_path.glob(".fetch-*"))


def test_fetch_bad_checksum_leaves_nothing(tmp_path, server):
    _archive(tmp_path, {"Info.txt": b"x", "mdb001.pgm": b"y"})
    with pytest.raises(InputError, match="SHA-256 is .*; expected 00"):
        fetch_mias(tmp_path / "mias", url=f"{server}/all-mias.tar.gz", sha256="00" * 32)
    assert not (tmp_path / "mias").exists() and not list(tmp_path.glob(".fetch-*"))


def test_fetch_refuses_path_traversal_and_wrong_content(tmp_path, server):
    _archive(tmp_path, {"../evil.txt": b"x"})
    with pytest.raises(InputError, match="cannot unpack archive"):
        fetch_mias(tmp_path / "mias", url=f"{server}/all-mias.tar.gz")
    assert not (tmp_path / "evil.txt").exists()


def test_fetch_unreachable_is_one_line_error(tmp_path):
    with pytest.raises(InputError, match="download failed .* --archive"):
        fetch_mias(tmp_path / "mias", url="http://127.0.0.1:9/none.tar.gz", timeout=2)
