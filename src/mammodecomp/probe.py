"""The ``probe`` recipe's learner: frozen pretrained features + L2 logistic regression per fold."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .config import Config
from .device import resolve_device
from .errors import InputError
from .fit import FoldResult, _sigmoid, _split_metrics
from .progress import progress


def probe_features(cfg: Config, x: np.ndarray, cache_dir: Path | None = None, batch_size: int = 32) -> np.ndarray:
    """Frozen pretrained features, one block per channel, computed once and cached.

    Each channel of each ROI is min-max scaled to [0, 1] *within that ROI*
    (no statistic crosses ROIs, so nothing leaks between folds) and passed
    through the 1-channel sum-preserving version of the pretrained backbone;
    the features of the K channels are concatenated. ``train.probe_stages``
    None: the backbone's pooled head features; a list of stage indices: the
    spatial mean and standard deviation of each of those stages' outputs
    (timm ``forward_intermediates``; the backbone stops after the last one).
    ``train.probe_tta="dihedral"`` averages the features of the 8 flips and
    90-degree rotations of each ROI (a per-ROI operation, no label involved).
    """
    import hashlib
    from .models import create_model
    m, t = cfg.model, cfg.train
    stages = None if t.probe_stages is None else [int(i) for i in t.probe_stages]
    tag = f"{m.name}|{m.weights}|{m.kwargs}"
    if stages is not None or t.probe_tta != "none":   # the default keeps the key of older caches
        tag += f"|stages={stages}|tta={t.probe_tta}"
    key = hashlib.sha256(x.tobytes() + tag.encode()).hexdigest()[:20]
    path = (cache_dir / f"probe-{key}.npy") if cache_dir else None
    if path is not None and path.is_file():
        return np.load(path)
    device = resolve_device(t.device)
    torch.manual_seed(0)
    model = create_model(m.name, in_chans=1, pretrained=m.pretrained, weights=m.weights,
                         stem_init="sum-preserving", input_size=cfg.data.roi_size, **dict(m.kwargs)).to(device).eval()
    backbone = getattr(model, "backbone", None)
    if stages is not None:
        if not hasattr(backbone, "forward_intermediates"):
            raise InputError(f"train.probe_stages needs a timm backbone with forward_intermediates; "
                             f"model '{m.name}' has none (set train.probe_stages=null)")
        n_st = len(getattr(backbone, "feature_info", []) or []) or None
        if not stages or min(stages) < 0 or (n_st is not None and max(stages) >= n_st):
            raise InputError(f"train.probe_stages={stages}: stage indices must lie in 0..{(n_st or 1) - 1}")

    def embed(v: torch.Tensor) -> torch.Tensor:
        if stages is None:
            return model.forward_head(model.forward_features(v), pre_logits=True)
        hs = backbone.forward_intermediates(v, indices=stages, stop_early=True, intermediates_only=True)
        return torch.cat([h.mean(dim=(2, 3)) for h in hs] + [h.std(dim=(2, 3), correction=0) for h in hs], 1)

    n_views = 8 if t.probe_tta == "dihedral" else 1
    N, C = x.shape[:2]
    feats = []
    with torch.no_grad():
        for s in progress(range(0, N, batch_size), desc="probe features"):
            xb = torch.from_numpy(np.ascontiguousarray(x[s:s + batch_size], dtype=np.float32))
            lo = xb.amin(dim=(2, 3), keepdim=True)
            hi = xb.amax(dim=(2, 3), keepdim=True)
            xb = (xb - lo) / (hi - lo).clamp_min(1e-6)
            B = xb.shape[0]
            flat = xb.reshape(B * C, 1, *xb.shape[2:]).to(device)
            f = 0
            for k in range(n_views):
                v = torch.rot90(flat, k % 4, dims=(2, 3))
                f = f + embed(torch.flip(v, dims=(3,)) if k >= 4 else v).float()
            f = f / n_views
            feats.append(f.reshape(B, C * f.shape[-1]).cpu().numpy())
    out = np.concatenate(feats).astype(np.float32)
    if path is not None:
        from .io import save_array
        save_array(path, out)
    return out


def fit_probe_fold(cfg: Config, feats: np.ndarray, y: np.ndarray, train_idx, val_idx, test_idx,
                   groups: np.ndarray | None = None) -> FoldResult:
    """Standardise, fit L2 logistic regression with C chosen inside the fold, predict.

    ``train.probe_select="val"``: C from the grid ``probe_C x (1e-3, 1e-2,
    1e-1, 1)`` by AUC on the inner validation split; the model is fit on the
    training part. ``"inner-cv"``: C from ``probe_C x 10^(-5, -4.5, ..., 0)``
    by the pooled AUC of a 5-fold CV over training + inner validation, grouped
    by ``groups`` (the patient ids; required) and stratified; the model is then
    refit on training + inner validation, and the threshold and the reported
    validation metrics come from the inner CV's out-of-fold scores. The test
    part is used only to predict.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler
    from .metrics import choose_threshold
    train_idx, val_idx, test_idx = (np.asarray(i, dtype=np.int64) for i in (train_idx, val_idx, test_idx))

    def fit(C, idx):
        sc = StandardScaler().fit(feats[idx])
        clf = LogisticRegression(C=C, max_iter=5000, class_weight="balanced").fit(sc.transform(feats[idx]), y[idx])
        return lambda i: clf.decision_function(sc.transform(feats[i]))

    row = {"epoch": 0, "lr": 0.0}
    inner = None
    if cfg.train.probe_select == "inner-cv":
        if groups is None:
            raise InputError("train.probe_select=inner-cv needs the patient ids (groups) of the ROIs")
        from sklearn.model_selection import StratifiedGroupKFold
        fit_idx = np.concatenate([train_idx, val_idx]) if not np.array_equal(val_idx, test_idx) else train_idx
        g = np.asarray(groups)[fit_idx]
        per_class = min(len(np.unique(g[y[fit_idx] == c])) for c in (0, 1))
        n_inner = min(5, per_class)
        if n_inner >= 2:
            grid = [cfg.train.probe_C * 10.0 ** e for e in np.arange(-5.0, 0.25, 0.5)]
            oof = np.zeros((len(grid), len(fit_idx)))
            for a, b in StratifiedGroupKFold(n_inner, shuffle=True, random_state=0).split(fit_idx, y[fit_idx], g):
                for j, C in enumerate(grid):
                    oof[j, b] = fit(C, fit_idx[a])(fit_idx[b])
            scores = [roc_auc_score(y[fit_idx], o) for o in oof]
            j = int(np.argmax(scores))
            inner = (grid[j], fit_idx, oof[j])
            row.update({"C": grid[j], "inner_cv_auc": float(scores[j]), "inner_folds": n_inner})
    if inner is not None:
        C_best, fit_idx, oof_best = inner
        predict = fit(C_best, fit_idx)
        pos = {int(r): k for k, r in enumerate(fit_idx)}
        if all(int(i) in pos for i in val_idx):   # out-of-fold scores of the validation ROIs
            z_val = oof_best[[pos[int(i)] for i in val_idx]]
        else:                                     # validated on the test fold (the seed protocol)
            z_val = predict(val_idx)
        thr_y, thr_z = y[fit_idx], oof_best
    else:   # the inner validation split (also the fallback when too few patients for an inner CV)
        grid = [cfg.train.probe_C * f for f in (1e-3, 1e-2, 1e-1, 1.0)]
        if len(np.unique(y[val_idx])) == 2:
            scores = [roc_auc_score(y[val_idx], fit(C, train_idx)(val_idx)) for C in grid]
            C_best = grid[int(np.argmax(scores))]
        else:
            C_best = grid[1]
        row["C"] = C_best
        predict = fit(C_best, train_idx)
        z_val = predict(val_idx)
        thr_y, thr_z = y[val_idx], z_val
    row.update(_split_metrics(y[train_idx], predict(train_idx), "train"))
    row.update(_split_metrics(y[val_idx], z_val, "val"))
    thr = float(choose_threshold(thr_y, _sigmoid(thr_z)))
    return FoldResult(test_logits=predict(test_idx), threshold=thr, best_epoch=0, history=pd.DataFrame([row]))

