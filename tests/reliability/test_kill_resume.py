"""kill -9 in the middle of `mammodecomp cv`; the rerun finishes with the
same out-of-fold predictions and summary as an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

pytestmark = pytest.mark.xdist_group("train")

ARGS = ["--recipe", "small", "--set", "data.synth.n_patients=16", "--set", "data.synth.size=64",
        "--set", "data.roi_size=32", "--set", "train.epochs=4", "--set", "train.batch_size=8",
        "--set", "cv.n_folds=2", "--set", "cv.n_boot=50", "--set", "train.threads=1"]


def _cv(out, store):
    return [sys.executable, "-m", "mammodecomp", "-q", "cv", *ARGS, "--set", f"decomposition.store={store}",
            "--out", str(out)]


def test_kill_minus_9_then_rerun_is_identical(tmp_path):
    env = dict(os.environ, MAMMODECOMP_QUIET="1")
    store = tmp_path / "store"
    ref = subprocess.run(_cv(tmp_path / "ref", store), env=env, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    # kill as soon as the second fold has written its first epoch (it has 3 epochs to go)
    p = subprocess.Popen(_cv(tmp_path / "run", store), env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    target = tmp_path / "run" / "folds" / "r0f1" / "state.pt"
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None and not target.exists():
        time.sleep(0.05)
    killed = p.poll() is None
    if killed:
        os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert killed, f"cv ended (exit {p.returncode}) before the second fold wrote its first epoch"
    assert p.returncode == -signal.SIGKILL
    # killed mid-run: fold 0 finished, fold 1 in progress, no out-of-fold table yet
    done0 = tmp_path / "run" / "folds" / "r0f0" / "done.json"
    assert done0.is_file() and target.is_file()
    assert not (tmp_path / "run" / "folds" / "r0f1" / "done.json").exists()
    assert not (tmp_path / "run" / "oof.csv").exists()
    done0_stat = (done0.read_bytes(), done0.stat().st_mtime_ns)
    again = subprocess.run(_cv(tmp_path / "run", store), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    a = pd.read_csv(tmp_path / "ref" / "oof.csv")
    b = pd.read_csv(tmp_path / "run" / "oof.csv")
    pd.testing.assert_frame_equal(a, b)
    sa = json.loads((tmp_path / "ref" / "summary.json").read_text())
    sb = json.loads((tmp_path / "run" / "summary.json").read_text())
    for k in ("auc", "auc_ci"):
        assert sa[k] == sb[k]
    assert not list((tmp_path / "run").rglob("*.tmp"))
    # the finished fold was kept, not trained again
    assert (done0.read_bytes(), done0.stat().st_mtime_ns) == done0_stat
