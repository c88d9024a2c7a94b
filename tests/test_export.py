"""ONNX export: the exported file computes what the fold model computes, and the parity
check inside ``export_onnx`` refuses a file that does not.

The run directory is hand-built (tests/diagnose_support.py: real config, plan and
safetensors checkpoints, no training); fold 0's BatchNorm statistics are set to
non-trivial values first, so an export that ran BatchNorm in training mode, or
dropped the fold's normalisation, would differ.
"""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from mammodecomp.export import export_onnx
from mammodecomp.fit import _save_weights, load_fold_model
from diagnose_support import make_run

pytestmark = pytest.mark.xdist_group("export")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    make_run(out, recipe="small", seed=4)
    model = load_fold_model(out, 0, 0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    _save_weights(out / "folds" / "r0f0" / "model.safetensors", model)
    return out


def _inputs(run_dir) -> np.ndarray:
    """The run's own model inputs (components, float32), as predict feeds them."""
    return np.load(run_dir / "components.npy").astype(np.float32)


def test_exported_file_matches_the_fold_model_under_onnxruntime(run_dir, tmp_path):
    path = export_onnx(run_dir, tmp_path / "exp")
    assert path == tmp_path / "exp" / "model_r0f0.onnx"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["components"]
    model = load_fold_model(run_dir, 0, 0)
    x = _inputs(run_dir)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).reshape(-1).numpy()
    assert np.ptp(ref) > 1e-2, "the logits must vary for the comparison to mean anything"
    for batch in (x[:1], x[:7], x):                       # the batch axis is dynamic
        got = sess.run(None, {"components": batch})[0].reshape(-1)
        np.testing.assert_allclose(got, ref[:len(batch)], rtol=0, atol=1e-4)
    info = json.loads((tmp_path / "exp" / "export.json").read_text())
    assert (info["onnx"], info["repeat"], info["fold"], info["input_size"]) == ("model_r0f0.onnx", 0, 0, 32)
    assert info["channels"] == ["c0", "c1", "c2"]
    # the export measured its own parity and wrote it down
    assert isinstance(info["max_abs_diff"], float) and info["max_abs_diff"] <= 1e-4
    card = (tmp_path / "exp" / "MODEL_CARD.md").read_text()
    assert f"ONNX vs PyTorch max abs difference on random inputs: {info['max_abs_diff']}" in card
    assert "Research only" in card
    # the card quotes the run's headline with its patient-bootstrap CI, as summary.json has them
    s = json.loads((run_dir / "summary.json").read_text())
    assert (f"Pooled out-of-fold AUC {s['auc']:.3f} (95% patient-bootstrap CI "
            f"{s['auc_ci'][0]:.3f}-{s['auc_ci'][1]:.3f}).") in card
    assert s["auc_ci"][0] < s["auc_ci"][1] - 0.01      # so a swapped bound would show


def test_export_refuses_a_file_that_differs_from_pytorch(run_dir, tmp_path, monkeypatch):
    """Fault injection: onnxruntime's output shifted by 0.01; the parity check must raise
    and leave no model file behind."""
    real = ort.InferenceSession

    class Shifted:
        def __init__(self, *a, **k):
            self._s = real(*a, **k)

        def run(self, *a, **k):
            return [o + np.float32(0.01) for o in self._s.run(*a, **k)]

    monkeypatch.setattr(ort, "InferenceSession", Shifted)
    out = tmp_path / "exp"
    with pytest.raises(RuntimeError, match=r"^ONNX output differs from PyTorch by 1\.0\de-02 > 0\.0001$"):
        export_onnx(run_dir, out)
    assert not (out / "model_r0f0.onnx").exists()
    assert not (out / "MODEL_CARD.md").exists() and not (out / "export.json").exists()
    assert not list(out.glob(".*.tmp"))
