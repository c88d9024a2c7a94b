"""ONNX export of a fold model, with a model card.

The exported graph is decomposition-free: it takes the K-channel tensor
(N, K, H, W) of raw components, as :func:`mammodecomp.data.prepare_inputs`
makes them, applies the fold's normalisation and returns one logit per ROI.
The decomposition (method, K, parameters) and ROI extraction are written in
the model card, so a deployment can reproduce the input exactly.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from .io import atomic_write, read_json, write_json
from .rundir import DONE


def export_onnx(run_dir: str | Path, out_dir: str | Path, *, repeat: int = 0, fold: int = 0,
                check: bool = True, atol: float = 1e-4) -> Path:
    """Write ``model_r{R}f{F}.onnx`` and ``MODEL_CARD.md``; check against PyTorch.

    With ``check`` (the default) onnxruntime runs the file on 4 random inputs
    and the outputs must match PyTorch's to ``atol``, else ``RuntimeError``.
    """
    import torch

    from .fit import load_fold_model
    from .rundir import read_run
    run = read_run(run_dir, finished=False)
    model = load_fold_model(run.path, repeat, fold).float().eval()
    C = len(run.info["channels"])
    S = run.config.data.roi_size
    x = torch.rand(4, C, S, S, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["components"], output_names=["logit"],
                          dynamic_axes={"components": {0: "batch"}, "logit": {0: "batch"}}, opset_version=17)
    out_dir = Path(out_dir)
    path = out_dir / f"model_r{repeat}f{fold}.onnx"
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())
    max_err = None
    if check:
        import onnxruntime as ort
        sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"components": x.numpy()})[0].reshape(-1)
        with torch.no_grad():
            ref = model(x).reshape(-1).numpy()
        max_err = float(np.abs(got - ref).max())
        if max_err > atol:
            path.unlink()
            raise RuntimeError(f"ONNX output differs from PyTorch by {max_err:.2e} > {atol:g}")
    _model_card(run, out_dir, path, repeat, fold, C, S, max_err)
    return path


def _model_card(run, out_dir: Path, onnx_path: Path, repeat: int, fold: int, C: int, S: int, max_err) -> None:
    cfg = run.config
    s = run.summary or {}
    ci = s.get("auc_ci") or [float("nan"), float("nan")]
    done = run.done.get((repeat, fold)) or read_json(run.fold_dir(repeat, fold) / DONE)
    text = f"""# Model card: {onnx_path.name}

## What it is
A benign-vs-malignant classifier for mammogram regions of interest, trained by
mammodecomp {run.info.get('version')} with the `{cfg.recipe}` recipe (model `{cfg.model.name}`).
Outer fold {fold} of repeat {repeat}; decision threshold (chosen on the inner validation part): {done['threshold']:.4f}.

## Input
`components`: float32 tensor (N, {C}, {S}, {S}), channels {', '.join(run.info['channels'])}.
Made by: ROI crop mode `{cfg.data.crop_mode}` resized to {S} x {S} px, grey values in [0, 1];
decomposition `{cfg.decomposition.method}` with K = {cfg.decomposition.k}, parameters {dict(cfg.decomposition.params)},
variant `{cfg.decomposition.variant}`. The fold's per-channel normalisation is inside the graph.
Output `logit`: one value per ROI; probability = sigmoid(logit).

## Data
{run.info.get('n_rois')} ROIs from {run.info.get('n_patients')} patients, classes {run.info.get('class_counts')},
source `{cfg.data.source}`, task `{cfg.data.task}`.

## Evaluation (out-of-fold, {cfg.cv.scheme} {cfg.cv.n_folds}-fold x {cfg.cv.n_repeats})
Pooled out-of-fold AUC {s.get('auc', float('nan')):.3f} (95% patient-bootstrap CI {ci[0]:.3f}-{ci[1]:.3f}).
This model is one fold's; the run's ensemble is what `mammodecomp predict` uses.
ONNX vs PyTorch max abs difference on random inputs: {max_err if max_err is not None else 'not checked'}.

## Intended use and limits
Research only. Not a medical device; not validated for clinical decisions. Performance
holds, at best, for data like the training data (same source, scanner, crop rule and
decomposition); a different ROI extraction or decomposition invalidates it.
"""
    with atomic_write(out_dir / "MODEL_CARD.md", "w") as f:
        f.write(text)
    write_json(out_dir / "export.json", {"onnx": onnx_path.name, "repeat": repeat, "fold": fold,
                                         "channels": run.info["channels"], "input_size": S,
                                         "max_abs_diff": max_err})
