"""Fold-ensemble prediction on new ROIs, through the run's own preprocessing.

The ROIs are made and decomposed by :func:`mammodecomp.data.prepare_inputs`
with the run's resolved config, the same function training used, so the
numbers a fold model gives here are the numbers it gave in cross-validation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .io import IMAGE_SUFFIXES
from .manifest import validate_manifest


def _manifest_for(inputs: list[str | Path]) -> pd.DataFrame:
    paths = [Path(p) for p in inputs]
    if len(paths) == 1 and paths[0].suffix.lower() in {".csv", ".parquet", ".pq"}:
        p = paths[0]
        df = pd.read_parquet(p) if p.suffix.lower() != ".csv" else pd.read_csv(p, dtype={"roi_id": str, "patient_id": str})
        if "label" not in df.columns:
            df["label"] = 0
        if "patient_id" not in df.columns:
            df["patient_id"] = df["roi_id"] if "roi_id" in df.columns else [f"p{i}" for i in range(len(df))]
        if "roi_id" not in df.columns:
            df["roi_id"] = [Path(x).stem for x in df["image_path"]]
        return validate_manifest(df, path=p, require_both_classes=False)
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(p)
    if not files:
        raise InputError("no images given (expected image files, a folder of images, or a manifest)")
    seen: dict[str, int] = {}
    ids = []
    for f in files:                       # unique ids: a repeated file name gets _2, _3, ...
        seen[f.stem] = seen.get(f.stem, 0) + 1
        ids.append(f.stem if seen[f.stem] == 1 else f"{f.stem}_{seen[f.stem]}")
    df = pd.DataFrame({"roi_id": ids, "patient_id": [f.stem for f in files], "label": 0,
                       "image_path": [str(f.resolve()) for f in files]})
    return validate_manifest(df, require_both_classes=False)


def predict(run_dir: str | Path, inputs, *, fold: int | None = None, repeat: int | None = None,
            device: str = "cpu", store: str | Path | None = None) -> pd.DataFrame:
    """Mean probability of the run's fold models (and their spread) per ROI.

    Parameters
    ----------
    run_dir : a finished run directory.
    inputs : image paths / a folder / a manifest path, or a manifest DataFrame.
    fold : use only this outer fold's model (of ``repeat``, default 0).
    repeat : use only this repeat's models (default: all repeats).
    store : the run's decomposition store folder, for a run moved without it
        (new ROIs are decomposed into it).

    Returns
    -------
    DataFrame with ``roi_id, prob, prob_sd, n_models`` and one ``prob_r{R}f{F}`` column per model.
    """
    import torch

    from .data import prepare_inputs
    from .fit import load_fold_model, predict_logits
    from .rundir import read_run
    run = read_run(run_dir, store=store, finished=False)
    if run.config.recipe == "probe":
        raise InputError("prediction from a probe run is not supported yet; use a network recipe", path=run_dir)
    df = inputs.copy() if isinstance(inputs, pd.DataFrame) else _manifest_for(
        [inputs] if isinstance(inputs, (str, Path)) else list(inputs))
    cfg = run.config.model_copy(deep=True)
    cfg.decomposition.store = str(run.store_dir)
    inp = prepare_inputs(cfg, run.path, manifest=df, progress=False)
    models = sorted(run.histories) or sorted({(int(r), int(f)) for r, f in zip(run.plan["repeat"], run.plan["fold"])})
    if repeat is not None or fold is not None:
        rr = 0 if repeat is None else repeat
        models = [(r, f) for r, f in models if r == rr and (fold is None or f == fold)]
    if not models:
        raise InputError(f"no fold model matches repeat={repeat} fold={fold}", path=run_dir)
    idx = np.arange(len(df))
    out = pd.DataFrame({"roi_id": inp.manifest["roi_id"].to_numpy()})
    probs = []
    for r, f in models:
        m = load_fold_model(run.path, r, f, device=device)
        z = predict_logits(m, inp.x, idx, batch_size=64, device=torch.device(device), amp=run.config.train.amp)
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
        out[f"prob_r{r}f{f}"] = p
        probs.append(p)
    P = np.stack(probs, 1)
    out.insert(1, "prob", P.mean(1))
    out.insert(2, "prob_sd", P.std(1))
    out.insert(3, "n_models", P.shape[1])
    return out


from ._callable import make_callable  # noqa: E402

make_callable(__name__)
