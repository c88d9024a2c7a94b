"""`data fetch` against a small archive served on 127.0.0.1 (never the internet)."""
import hashlib
import http.server
import io
import tarfile
import threading
from functools import partial

import pytest

from mammodecomp.errors import InputError
from mammodecomp.fetch import fetch_mias, mias_pixel_table, pixel_sha256

PGM1 = b"P5 1 1 255\n\x00"


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
    p = _archive(tmp_path, {"Info.txt": b"mdb001 G CIRC B 535 425 197\n", "mdb001.pgm": PGM1})
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    film = hashlib.sha256(b"1x1:\x00").hexdigest()  # independent: the pixel digest written out by hand
    dest = fetch_mias(tmp_path / "mias", url=f"{server}/all-mias.tar.gz", sha256=digest, size=p.stat().st_size,
                      expected={"mdb001": film})
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


def test_fetch_refuses_an_altered_film_and_names_it(tmp_path):
    members = {"all-mias/Info.txt": b"x\n", "all-mias/mdb001.pgm": PGM1, "all-mias/mdb002.pgm": b"P5 1 1 255\n\x07"}
    p = _archive(tmp_path, members)
    expected = {"mdb001": hashlib.sha256(b"1x1:\x00").hexdigest(), "mdb002": hashlib.sha256(b"1x1:\x06").hexdigest()}
    with pytest.raises(InputError, match=r"all-mias.tar.gz: all-mias/mdb002.pgm: film mdb002 differs from the official "
                                         r"mini-MIAS: pixel SHA-256 [0-9a-f]{16}\.\.\., expected [0-9a-f]{16}\.\.\.; "
                                         r"the archive is damaged or altered"):
        fetch_mias(tmp_path / "mias", archive=p, expected=expected)
    assert not (tmp_path / "mias").exists() and not list(tmp_path.glob(".fetch-*"))
    expected["mdb003"] = expected["mdb001"]
    with pytest.raises(InputError, match=r"film mdb002 differs"):
        fetch_mias(tmp_path / "mias", archive=p, expected=expected)
    del expected["mdb002"]
    with pytest.raises(InputError, match=r"film mdb003 is missing; expected all 2 mini-MIAS films"):
        fetch_mias(tmp_path / "mias", archive=p, expected=expected)


def test_shipped_table_matches_the_real_films_and_refuses_an_altered_copy(tmp_path, mias_root):
    """The packaged digests against ../shared/data/mini-mias, given as a local folder; then one film altered."""
    import numpy as np
    from PIL import Image
    table = mias_pixel_table()
    assert len(table) == 322 and sorted(table)[0] == "mdb001" and sorted(table)[-1] == "mdb322"
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in mias_root.iterdir():  # as the official archive has them: PGMs and Info.txt
        if f.suffix == ".png":
            Image.open(f).save(copy / f"{f.stem}.pgm")
        elif f.name == "Info.txt":
            (copy / f.name).write_bytes(f.read_bytes())
    a = np.array(Image.open(copy / "mdb123.pgm"))
    a[500, 500] ^= 1
    Image.fromarray(a).save(copy / "mdb123.pgm")
    with pytest.raises(InputError, match=r"copy: mdb123.pgm: film mdb123 differs from the official mini-MIAS"):
        fetch_mias(tmp_path / "mias", archive=copy)
    assert not (tmp_path / "mias").exists()
    Image.open(mias_root / "mdb123.png").save(copy / "mdb123.pgm")
    dest = fetch_mias(tmp_path / "mias", archive=copy)
    assert len(list(dest.glob("mdb*.pgm"))) == 322 and pixel_sha256(dest / "mdb123.pgm") == table["mdb123"]
