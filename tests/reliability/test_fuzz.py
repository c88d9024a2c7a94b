"""Fuzzing the image readers and the Info.txt parser (harness: fuzz_readers.py).

For any bytes, a reader returns a valid [0, 1] float32 image / a table, or
raises a one-line InputError naming the file. The suite runs a bounded
number of inputs; ``MAMMODECOMP_FUZZ_ITERS=100000`` runs more.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import fuzz_readers  # noqa: E402

ITERS = int(os.environ.get("MAMMODECOMP_FUZZ_ITERS", "300"))


def test_seed_corpus_is_valid(tmp_path):
    """Every seed file reads cleanly: mutations start from good inputs, 12- and 16-bit included."""
    from mammodecomp.io import read_image
    # brightest pixel of each seed on its own bit depth's scale (12-bit: 255 * 16 of 4095)
    peak = {"a12.png": 4080 / 4095, "a12.dcm": 4095 / 4095}
    for name, data in fuzz_readers.seed_images().items():
        p = tmp_path / name
        p.write_bytes(data)
        a = read_image(p)
        assert a.shape == (16, 16) and a.dtype == np.float32
        assert a.max() == pytest.approx(peak.get(name, 1.0), abs=1e-4), name


def test_harness_detects_a_broken_reader(tmp_path, monkeypatch):
    """The harness is able to fail: a reader that raises a bare error is reported."""
    import mammodecomp.io as mio

    def broken(path, **kw):
        raise KeyError("boom")

    monkeypatch.setattr(mio, "read_image", broken)
    with pytest.raises(fuzz_readers.ContractViolation, match="KeyError"):
        fuzz_readers.check_image_bytes(b"x", tmp_path, ".png")


@pytest.mark.parametrize("target", ["image", "info"])
def test_random_loop(tmp_path, target):
    assert fuzz_readers.run_loop(target, ITERS, seed=0, workdir=tmp_path) == ITERS


@pytest.mark.parametrize("target", ["image", "info"])
def test_atheris(tmp_path, target):
    """Coverage-guided fuzzing when atheris is installed (a subprocess: libFuzzer exits the process)."""
    pytest.importorskip("atheris")
    corpus = fuzz_readers.write_corpus(target, tmp_path / "corpus")
    r = subprocess.run([sys.executable, str(HERE / "fuzz_readers.py"), target, f"-runs={ITERS}", "-seed=1",
                        "-max_len=4096", str(corpus)], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "Done" in r.stderr
