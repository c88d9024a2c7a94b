"""kill -9 at moments during ``mammodecomp decompose``; two decompose runs into one store at once.

After every kill the store holds either no entry or a complete one (never a
torn file); the rerun finishes and its entry equals an uninterrupted run's,
byte for byte. Two concurrent runs both succeed and leave one entry equal to
the reference.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.xdist_group("decompose-crash")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from mammodecomp.synth import write_synthetic
    root = tmp_path_factory.mktemp("syn")
    write_synthetic(root / "set", n_patients=40, size=64, seed=0)
    return root / "set" / "manifest.parquet"


def _cmd(manifest, store):
    return [sys.executable, "-m", "mammodecomp", "-q", "decompose", "--manifest", str(manifest),
            "--method", "starlet", "-k", "3", "--out", str(store), "--size", "32", "--batch-size", "1"]


ENV = dict(os.environ, MAMMODECOMP_QUIET="1", OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted run (in-process: the same command without a process start-up)."""
    from relhelp import run_cli_plain
    store = tmp_path_factory.mktemp("ref") / "store"
    code, out, err = run_cli_plain(_cmd(data, store)[3:])
    assert code == 0, err
    (entry,) = store.glob("*.npy")
    return {"store": store, "key": entry.stem, "npy": entry.read_bytes(),
            "json": json.loads((store / f"{entry.stem}.json").read_text()),
            "rois": (store / f"{entry.stem}.rois.csv").read_text()}


def _kill_when(proc, ready, deadline_s):
    """SIGKILL *proc* once ``ready()`` is true (or at the deadline); True if it was still running."""
    t0 = time.monotonic()
    while proc.poll() is None and not ready() and time.monotonic() - t0 < deadline_s:
        time.sleep(0.002)
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return alive


def _assert_no_torn_entry(store, ref):
    entry = store / f"{ref['key']}.npy"
    if entry.exists():
        assert entry.read_bytes() == ref["npy"]
    assert not [p for p in store.glob("*.npy") if p.name != entry.name]


def _assert_equal_to_reference(store, ref):
    assert (store / f"{ref['key']}.npy").read_bytes() == ref["npy"]
    got = json.loads((store / f"{ref['key']}.json").read_text())
    for k in ("key", "version", "method", "k", "params", "shape", "dtype"):
        assert got[k] == ref["json"][k]
    assert (store / f"{ref['key']}.rois.csv").read_text() == ref["rois"]
    np.load(store / f"{ref['key']}.npy", mmap_mode="r")  # a loadable .npy header
    assert not list(store.glob(".*.tmp")) and not list(store.glob("*.tmp"))


#: the same command in a process that SIGKILLs itself at a chosen point of the entry's write
#: (fault injection: deterministic, whatever the machine's load)
FAULT = r"""
import os, signal, sys
point = sys.argv[1]
if point == "rows":          # the 5th batch: 4 rows sit in the temporary memmap
    import mammodecomp.decompose
    D = sys.modules["mammodecomp.decompose"]      # the package (mammodecomp.decompose the name is the function)
    real, calls = D.decompose, []
    def dying(*a, **k):
        calls.append(1)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*a, **k)
    D.decompose = dying
elif point == "rename":      # every row and <key>.json written, the entry not yet renamed into place
    real_replace = os.replace
    def dying_replace(src, dst, *a, **k):
        if str(dst).endswith(".npy") and os.path.basename(str(src)).endswith(".tmp"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *a, **k)
    os.replace = dying_replace
from mammodecomp.cli import main
main(sys.argv[2:])
"""


def _killed_at(point, data, store):
    cmd = _cmd(data, store)
    p = subprocess.run([sys.executable, "-c", FAULT, point, *cmd[3:]], env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == -signal.SIGKILL, (point, p.returncode, p.stderr[-2000:])


@pytest.mark.parametrize("point", ["rows", "rename"])
def test_kill_minus_9_mid_write_leaves_no_entry_and_the_rerun_matches(data, reference, tmp_path, point):
    store = tmp_path / "store"
    _killed_at(point, data, store)
    # the kill came mid-write: the temporary file is there, the entry is not
    tmps = list(store.glob(f".{reference['key']}.npy.*.tmp"))
    assert len(tmps) == 1, sorted(p.name for p in store.iterdir())
    assert not (store / f"{reference['key']}.npy").exists()
    if point == "rename":
        assert (store / f"{reference['key']}.json").is_file()    # described, but not an entry without its .npy
    from mammodecomp.store import DecompStore
    assert DecompStore(store).get(reference["key"]) is None
    # the rerun clears the dead writer's temporary file and writes the reference entry
    r = subprocess.run(_cmd(data, store), env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "computed"
    _assert_equal_to_reference(store, reference)


def test_kill_minus_9_at_random_moments_then_rerun(data, reference, tmp_path):
    """Kills at seeded moments (wherever they land, even after the end): never a torn entry."""
    store = tmp_path / "store"
    rng = np.random.default_rng(7)
    for delay in rng.uniform(0.3, 3.0, size=2):
        p = subprocess.Popen(_cmd(data, store), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        _kill_when(p, lambda: time.monotonic() - t0 >= delay, 120)
        _assert_no_torn_entry(store, reference)
        if (store / f"{reference['key']}.npy").exists():
            break  # a later kill cannot undo a finished entry; the rerun below still runs
    r = subprocess.run(_cmd(data, store), env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    _assert_equal_to_reference(store, reference)


def test_two_decompose_runs_into_one_store_at_once(data, reference, tmp_path):
    store = tmp_path / "store"
    procs = [subprocess.Popen(_cmd(data, store), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    verbs = sorted(out.split()[0] for out, _ in outs)
    assert verbs == ["computed", "reused"], verbs  # computed once, under the entry's lock
    _assert_equal_to_reference(store, reference)
    assert len(list(store.glob("*.npy"))) == 1
