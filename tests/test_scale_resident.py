"""One device: inputs resident on the device (float16) give the host path's
out-of-fold predictions; batches come from the resident copy, not the host."""
import numpy as np
import pandas as pd
import pytest
import torch

from mammodecomp.config import resolve_config
from mammodecomp.device import fits_on_device, gather, make_resident, resident_nbytes
from mammodecomp.fit import fit_fold
from mammodecomp.rundir import read_run as load_run
from mammodecomp.train import cross_validate

pytestmark = pytest.mark.xdist_group("train")


def test_make_resident_is_float16_copy_in_chunks():
    x = np.random.default_rng(0).random((5, 2, 4, 4)).astype(np.float32)
    r = make_resident(x, "cpu", chunk_rows=2)
    assert r.dtype == torch.float16 and tuple(r.shape) == x.shape
    np.testing.assert_array_equal(r.numpy(), x.astype(np.float16))
    b = gather(r, torch.tensor([4, 0]), channels_last=True)
    assert b.dtype == torch.float32 and b.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(b.numpy(), x[[4, 0]].astype(np.float16).astype(np.float32))
    assert resident_nbytes(x) == x.size * 2
    assert fits_on_device(10**15, "cpu")


def test_device_resident_run_equals_host_run(tiny_cfg, tmp_path):
    host = cross_validate(tiny_cfg(tmp_path), tmp_path / "host", progress_bars=False)
    dev = cross_validate(tiny_cfg(tmp_path, "train.device_resident=true"), tmp_path / "dev", progress_bars=False)
    a, b = pd.read_csv(host / "oof.csv"), pd.read_csv(dev / "oof.csv")
    assert list(a["roi_id"]) == list(b["roi_id"])
    # components come from the float16 store, so the float16 copy is exact: same numbers to rounding
    np.testing.assert_allclose(a["logit"].to_numpy(), b["logit"].to_numpy(), rtol=0, atol=1e-5)
    ha, hb = load_run(host).histories, load_run(dev).histories
    for k in ha:
        np.testing.assert_allclose(ha[k]["train_loss"], hb[k]["train_loss"], rtol=0, atol=1e-6)


class _CountingArray(np.ndarray):
    """An ndarray that counts row look-ups (x[idx])."""

    calls = 0

    def __getitem__(self, item):
        type(self).calls += 1
        return np.asarray(super().__getitem__(item))


def _fold(tiny_cfg, tmp_path, name, *extra, resident=False):
    cfg = tiny_cfg(tmp_path, "train.epochs=1", *extra)
    rng = np.random.default_rng(1)
    x = rng.random((24, 3, 16, 16)).astype(np.float16).astype(np.float32).view(_CountingArray)
    y = np.tile([0, 1], 12)
    _CountingArray.calls = 0
    res = fit_fold(cfg, x, y, np.arange(16), np.arange(16, 20), np.arange(20, 24), tmp_path / name, seed=5,
                   resident=make_resident(np.asarray(x), "cpu") if resident else None)
    return res, _CountingArray.calls


def test_resident_fold_reads_no_host_rows_inside_the_epoch(tiny_cfg, tmp_path):
    res_h, calls_h = _fold(tiny_cfg, tmp_path, "h")
    res_d, calls_d = _fold(tiny_cfg, tmp_path, "d", resident=True)
    # host path: one look-up per batch and per evaluation batch; resident: only the normalisation fit
    assert calls_d == 1 and calls_h > 3
    np.testing.assert_allclose(res_h.test_logits, res_d.test_logits, rtol=0, atol=1e-5)
    assert res_h.best_epoch == res_d.best_epoch
