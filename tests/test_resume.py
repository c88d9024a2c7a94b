"""A fold interrupted after its best epoch resumes; it does not restart.

The resumed fold must end bit-identical to an uninterrupted one: weights,
optimiser state (Adam moments, step counts), scheduler, selected checkpoint and
test logits; and the resumed invocation must train only the epochs that were
missing. A fold that restarts from scratch ends with the same weights (training
is deterministic), so only the epochs trained tell a resume from a restart;
a resume that skips the optimiser's state ends with other weights.

Written against the public ``mammodecomp.train.fit_fold``; the crash is a fault
injected into the per-epoch state save (``fit._save_state``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import mammodecomp.fit as T
from mammodecomp.config import resolve_config
from mammodecomp.fit import fit_fold

pytestmark = pytest.mark.xdist_group("train")

EPOCHS = 7


def _cfg(*extra):
    return resolve_config(recipe="small", overrides=[
        f"train.epochs={EPOCHS}", "train.batch_size=8", "train.threads=1", "train.early_stopping=null",
        "train.lr=0.01", *extra])


def _data():
    """36 ROIs of 3 channels, 16 x 16: a bright centre for class 1 in the training and test
    rows, for class 0 in the inner-validation rows, so the validation loss is best early on."""
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 18)
    x = rng.normal(0, 1, (36, 3, 16, 16)).astype(np.float32)
    idx = np.arange(36)
    bright = np.where((idx >= 20) & (idx < 28), 1 - y, y)
    x[:, :, 6:10, 6:10] += 0.8 * bright[:, None, None, None]
    return x, y, idx[:20], idx[20:28], idx[28:]


class _Crash(Exception):
    pass


def _fit(cfg, out, monkeypatch, crash_after=None):
    """fit_fold; with ``crash_after=k`` the process 'dies' right after epoch k's state is saved.
    Returns (result or None, epochs whose state this invocation saved)."""
    real = T._save_state
    saved = []

    def hooked(path, model, opt, sched, epoch, *a, **k):
        real(path, model, opt, sched, epoch, *a, **k)
        saved.append(int(epoch))
        if crash_after is not None and epoch == crash_after:
            raise _Crash(f"killed after epoch {epoch}")

    monkeypatch.setattr(T, "_save_state", hooked)
    x, y, tr, va, te = _data()
    try:
        res = fit_fold(cfg, x, y, tr, va, te, out, seed=1234)
    except _Crash:
        res = None
    finally:
        monkeypatch.setattr(T, "_save_state", real)
    return res, saved


def _assert_same_tree(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_same_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_same_tree(u, v, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted fold."""
    out = tmp_path_factory.mktemp("ref") / "fold"
    mp = pytest.MonkeyPatch()
    try:
        res, saved = _fit(_cfg(), out, mp)
    finally:
        mp.undo()
    assert saved == list(range(EPOCHS))
    return res, out


@pytest.mark.parametrize("extra", [[], ["train.ema=0.9"]], ids=["plain", "ema"])
def test_fold_interrupted_after_its_best_epoch_resumes_bit_identical(reference, tmp_path, monkeypatch, extra):
    if extra:
        ref_out = tmp_path / "ref"
        ref, saved = _fit(_cfg(*extra), ref_out, monkeypatch)
        assert saved == list(range(EPOCHS))
    else:
        ref, ref_out = reference
    # interrupt two epochs after the best one, so the kept checkpoint predates the crash
    crash = ref.best_epoch + 2
    assert crash <= EPOCHS - 2, f"best epoch {ref.best_epoch}: the data no longer give an early best epoch"
    out = tmp_path / "fold"
    res, saved = _fit(_cfg(*extra), out, monkeypatch, crash_after=crash)
    assert res is None and saved == list(range(crash + 1))
    assert not (out / "done.json").exists()
    res, saved = _fit(_cfg(*extra), out, monkeypatch)
    # resumed, not restarted: only the missing epochs were trained
    assert saved == list(range(crash + 1, EPOCHS))
    # the final training state equals the uninterrupted run's, bit for bit
    a = torch.load(ref_out / "state.pt", weights_only=True)
    b = torch.load(out / "state.pt", weights_only=True)
    for key in ("model", "opt", "sched", "epoch", "best_loss", "best_epoch", "bad", "gen", "aug", "rng",
                *(["ema"] if extra else [])):
        _assert_same_tree(a[key], b[key], key)
    assert b["opt"]["state"], "the optimiser state holds the Adam moments"
    # the selected checkpoint (from before the crash) and everything predicted with it
    assert (ref_out / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    assert res.best_epoch == ref.best_epoch < crash
    np.testing.assert_array_equal(res.test_logits, ref.test_logits)
    assert res.threshold == ref.threshold
    cols = [c for c in ref.history.columns if c != "seconds"]
    pd.testing.assert_frame_equal(res.history[cols], ref.history[cols])
