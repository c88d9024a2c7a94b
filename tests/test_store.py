"""Tests of mammodecomp.store: keys, crash safety, concurrent writers."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mammodecomp.store as store_mod
from mammodecomp.decompose import decompose
from mammodecomp.errors import InputError
from mammodecomp.store import DecompStore


def _imgs(seed=0, n=4, size=16):
    return np.random.default_rng(seed).random((n, size, size)).astype(np.float32)


def test_key_changes_with_each_part(tmp_path, monkeypatch):
    s = DecompStore(tmp_path)
    x = _imgs()
    base = s.key(x, "vmd", 5, {"alpha": 5000.0, "tol": 1e-6})
    assert base == s.key(x.copy(), "vmd", 5, {"tol": 1e-6, "alpha": 5000.0})  # order-free, value-based
    y = x.copy()
    y[2, 3, 4] += 1e-3
    variants = [
        s.key(y, "vmd", 5, {"alpha": 5000.0, "tol": 1e-6}),  # one pixel
        s.key(x[:, :, :15], "vmd", 5, {"alpha": 5000.0, "tol": 1e-6}),  # shape
        s.key(x, "fabemd", 5, {"alpha": 5000.0, "tol": 1e-6}),  # method
        s.key(x, "vmd", 4, {"alpha": 5000.0, "tol": 1e-6}),  # k
        s.key(x, "vmd", 5, {"alpha": 2000.0, "tol": 1e-6}),  # a parameter value
        s.key(x, "vmd", 5, {"alpha": 5000.0, "tol": 1e-6, "append_raw": True}),  # a new parameter
        DecompStore(tmp_path, dtype="float32").key(x, "vmd", 5, {"alpha": 5000.0, "tol": 1e-6}),  # dtype
    ]
    monkeypatch.setattr(store_mod, "CODE_VERSION", "decompose-999")
    variants.append(s.key(x, "vmd", 5, {"alpha": 5000.0, "tol": 1e-6}))  # code version
    assert len({base, *variants}) == len(variants) + 1


def test_reuse_and_rebuild(tmp_path):
    s = DecompStore(tmp_path)
    x = _imgs()
    a = s.get_or_compute(x, "starlet", 3, batch_size=3, progress=False)
    assert s.last_computed and isinstance(a, np.memmap) and a.dtype == np.float16
    np.testing.assert_allclose(a, decompose(x, "starlet", 3), atol=2e-3)
    s.get_or_compute(x, "starlet", 3, progress=False)
    assert s.last_computed is False
    s.get_or_compute(x, "starlet", 4, progress=False)  # another key part -> a new entry
    assert s.last_computed is True
    assert len(list(tmp_path.glob("*.npy"))) == 2
    meta = (tmp_path / f"{s.key(x, 'starlet', 3)}.json").read_text()
    assert '"method": "starlet"' in meta and store_mod.CODE_VERSION in meta
    import json
    assert json.loads(meta)["shape"] == [4, 3, 16, 16]


def test_partial_entry_never_served(tmp_path, monkeypatch):
    s = DecompStore(tmp_path)
    x = _imgs()
    key = s.key(x, "starlet", 3)
    # a torn temp file left by a crashed writer
    (tmp_path / f".{key}.npy.4242.tmp").write_bytes(b"\x93NUMPY garbage")
    assert s.get(key) is None
    # a writer that dies after its first batch leaves no entry and no temp file
    calls = {"n": 0}
    real = decompose

    def dying(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed")
        return real(*a, **kw)

    import importlib
    dmod = importlib.import_module("mammodecomp.decompose")
    monkeypatch.setattr(dmod, "decompose", dying)
    with pytest.raises(RuntimeError):
        s.get_or_compute(x, "starlet", 3, batch_size=2, progress=False)
    assert s.get(key) is None
    assert not list(tmp_path.glob("*.tmp"))
    monkeypatch.setattr(dmod, "decompose", real)
    a = s.get_or_compute(x, "starlet", 3, batch_size=2, progress=False)
    np.testing.assert_allclose(a, decompose(x, "starlet", 3), atol=2e-3)


def test_bad_inputs(tmp_path):
    s = DecompStore(tmp_path)
    with pytest.raises(InputError, match="cache key"):
        s.key(_imgs(), "vmd", 5, {"init": object()})
    with pytest.raises(InputError, match="dtype"):
        DecompStore(tmp_path, dtype="int8")
    with pytest.raises(InputError, match=r"\(N,H,W\)"):
        s.key(np.zeros((4, 4)), "vmd", 5)


WRITER = textwrap.dedent("""
    import sys, time, pathlib, numpy as np
    from mammodecomp.store import DecompStore
    root, go = sys.argv[1], pathlib.Path(sys.argv[2])
    x = np.random.default_rng(7).random((12, 48, 48)).astype(np.float32)
    while not go.exists():
        time.sleep(0.01)
    s = DecompStore(root)
    a = s.get_or_compute(x, "vmd", 4, {"max_iter": 40, "tol": 0.0}, batch_size=1, progress=False)
    print(int(s.last_computed), float(np.asarray(a, dtype=np.float64).sum()))
""")


def test_two_writer_processes(tmp_path):
    go = tmp_path / "go"
    root = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    flags, sums = zip(*[(int(o[0].split()[0]), float(o[0].split()[1])) for o in outs])
    assert sorted(flags) == [0, 1]  # computed exactly once
    assert sums[0] == sums[1]
    npys = list(root.glob("*.npy"))
    assert len(npys) == 1 and not list(root.glob("*.tmp"))
    arr = np.load(npys[0])
    x = np.random.default_rng(7).random((12, 48, 48)).astype(np.float32)
    ref = decompose(x, "vmd", 4, max_iter=40, tol=0.0).astype(np.float16)
    np.testing.assert_allclose(arr.astype(np.float32), ref.astype(np.float32), atol=2e-3)  # float16 storage
