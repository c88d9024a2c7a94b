"""Channel attribution: occlusion per component, and Grad-CAM examples.

Both use each fold's own model (``train.load_fold_model``) on that fold's
out-of-fold ROIs, so nothing is evaluated on data its model trained on.

* occlusion: a channel is replaced by its training-part mean (the value that
  becomes zero after the fold's normalisation); the drop in pooled AUC is that
  component's importance. A stratified subsample of at most
  :data:`MAX_ATTR_ROIS` OOF ROIs is used (said in the finding).
* Grad-CAM, hand-written on ``forward_features``/``forward_head``: the
  feature maps weighted by the spatially averaged gradient of the logit,
  ReLU, upsampled to the ROI. A few true/false positives/negatives are kept.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ._common import SKIPPED, Finding, fmt, safe_auc
from .checks import register_check

#: most OOF ROIs used for occlusion (stratified subsample)
MAX_ATTR_ROIS = 200
#: Grad-CAM examples per outcome (TP, FP, FN, TN)
CAM_PER_OUTCOME = 2
#: an AUC drop below this when a channel is occluded means it is not used
UNUSED_DROP = 0.01
#: inference batch
BATCH = 64

# finding ids and the names of the values they write
OCCLUSION = "attribution.occlusion"
AUC, DROPS, N, MOST_IMPORTANT, UNUSED, SUBSAMPLE = "auc", "drops", "n", "most_important", "unused", "subsample"
GRADCAM = "attribution.gradcam"
OUTCOMES, FEATURE_MAP, ROI_IDS = "outcomes", "feature_map", "roi_ids"
WRITES = {OCCLUSION: (AUC, DROPS, N, MOST_IMPORTANT, UNUSED, SUBSAMPLE), GRADCAM: (N, OUTCOMES, FEATURE_MAP, ROI_IDS)}
#: the arrays of the Grad-CAM finding (``Finding.arrays``, saved to diagnosis_cams.npz)
CAM_ARRAYS = ("rows", "cams", "outcome", "prob")


def _default_loader(run_dir, repeat, fold):
    from ..fit import load_fold_model
    return load_fold_model(run_dir, repeat, fold, device="cpu")


def _subsample(pooled, n: int, seed: int):
    if len(pooled) <= n:
        return pooled
    rng = np.random.default_rng(seed)
    parts = []
    for _, g in pooled.groupby("label"):
        k = max(1, int(round(n * len(g) / len(pooled))))
        parts.append(g.iloc[np.sort(rng.choice(len(g), size=min(k, len(g)), replace=False))])
    import pandas as pd
    return pd.concat(parts).sort_values("row")


@torch.no_grad()
def _logits(model, x: np.ndarray) -> np.ndarray:
    out = []
    for s in range(0, len(x), BATCH):
        out.append(model(torch.as_tensor(np.ascontiguousarray(x[s:s + BATCH]), dtype=torch.float32))
                   .reshape(-1).float())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def _fill_values(run, comps, r, f, model) -> np.ndarray:
    """Per-channel training mean of fold (r, f) in raw input units."""
    k = comps.shape[1]
    norm = run.norm(r, f)
    if norm is not None:
        mean, std = np.asarray(norm["mean"], float), np.asarray(norm["std"], float)
        if not (np.allclose(mean, 0) and np.allclose(std, 1)):
            return mean
    rows = run.train_rows(r, f)
    if len(rows) == 0:
        return np.zeros(k)
    rows = rows[np.linspace(0, len(rows) - 1, min(len(rows), 256)).astype(int)]
    return np.asarray(comps[np.sort(rows)], dtype=np.float64).mean(axis=(0, 2, 3))


def grad_cam(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps (N,H,W) in [0,1] and logits (N,) for inputs (N,K,H,W).

    Examples
    --------
    >>> import torch.nn as nn
    >>> class M(nn.Module):
    ...     def __init__(self):
    ...         super().__init__(); self.c = nn.Conv2d(2, 3, 3, padding=1); self.h = nn.Linear(3, 1)
    ...     def forward_features(self, x): return torch.relu(self.c(x))
    ...     def forward_head(self, f, pre_logits=False): return self.h(f.mean((2, 3))).reshape(-1)
    >>> cams, z = grad_cam(M().eval(), np.random.default_rng(0).random((2, 2, 8, 8), dtype=np.float32))
    >>> cams.shape, bool(cams.min() >= 0 and cams.max() <= 1)
    ((2, 8, 8), True)
    """
    # the input requires grad so the graph exists even for a model without parameters
    xt = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32).requires_grad_(True)
    with torch.enable_grad():
        feats = model.forward_features(xt)
        if feats.ndim != 4:
            raise ValueError(f"forward_features returned shape {tuple(feats.shape)}; Grad-CAM needs (N,C,h,w)")
        logits = model.forward_head(feats).reshape(-1)
        (g,) = torch.autograd.grad(logits.sum(), feats)
    w = g.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((w * feats).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=tuple(xt.shape[-2:]), mode="bilinear", align_corners=False)[:, 0].detach()
    mx = cam.flatten(1).max(dim=1).values.clamp_min(1e-12)[:, None, None]
    return (cam / mx).detach().numpy().astype(np.float32), logits.detach().numpy().astype(np.float64)


def attribution(run, *, max_rois: int = MAX_ATTR_ROIS, seed: int = 0, load_model=None) -> list[Finding]:
    """Occlusion finding and Grad-CAM finding (with the CAM arrays for the report).

    Parameters
    ----------
    run : :class:`mammodecomp.rundir.Run`.
    max_rois : subsample size for occlusion.
    load_model : ``(run_dir, repeat, fold) -> nn.Module`` taking raw
        components; ``train.load_fold_model`` by default.

    Returns
    -------
    The occlusion finding, then the Grad-CAM finding when maps were made; its
    ``arrays`` hold :data:`CAM_ARRAYS` (rows, cams, outcome, prob).
    """
    load_model = load_model or _default_loader
    comps = run.components()
    if comps is None or run.recipe == "probe":
        why = "no components array" if comps is None else "probe recipe has no network"
        return [Finding(OCCLUSION, "attribution", "Channel occlusion", "info",
                        f"not measured: {why}", values={SKIPPED: True})]
    channels = list(run.info.get("channels") or [f"c{i}" for i in range(comps.shape[1])])
    oof = run.oof[run.oof["repeat"] == run.oof["repeat"].min()].copy()
    oof["row"] = oof["roi_id"].astype(str).map(run.row_of)
    oof = oof.dropna(subset=["row"])
    oof["row"] = oof["row"].astype(int)
    sub = _subsample(oof, max_rois, seed)
    k = comps.shape[1]
    base, occl, ys = [], [[] for _ in range(k)], []
    cam_rows, cam_maps, cam_out, cam_prob = [], [], [], []
    fmap = None
    errors = []
    thr_col = "threshold" in oof.columns
    for (r, f), g in sub.groupby(["repeat", "fold"]):
        try:
            model = load_model(run.path, int(r), int(f))
        except Exception as e:  # noqa: BLE001 - a fold without a checkpoint is skipped, said below
            errors.append(f"r{r}f{f}: {type(e).__name__}: {e}")
            continue
        rows = g["row"].to_numpy()
        order = np.argsort(rows)
        rows, g = rows[order], g.iloc[order]
        x = np.asarray(comps[rows], dtype=np.float32)
        fill = _fill_values(run, comps, int(r), int(f), model)
        base.append(_logits(model, x))
        ys.append(g["label"].to_numpy().astype(int))
        for c in range(k):
            xo = x.copy()
            xo[:, c] = fill[c]
            occl[c].append(_logits(model, xo))
        # Grad-CAM candidates of this fold, by outcome
        prob = g["prob"].to_numpy()
        thr = g["threshold"].to_numpy() if thr_col else np.full(len(g), 0.5)
        pred = prob >= thr
        y = g["label"].to_numpy().astype(int)
        for name, m, sign in (("TP", pred & (y == 1), -1), ("FP", pred & (y == 0), -1),
                              ("FN", ~pred & (y == 1), 1), ("TN", ~pred & (y == 0), 1)):
            have = sum(1 for o in cam_out if o == name)
            idx = np.flatnonzero(m)
            if have >= CAM_PER_OUTCOME or len(idx) == 0:
                continue
            idx = idx[np.argsort(sign * prob[idx])][:CAM_PER_OUTCOME - have]
            try:
                cams, _ = grad_cam(model, x[idx])
                with torch.no_grad():
                    fmap = list(model.forward_features(torch.as_tensor(x[idx[:1]])).shape[-2:])
            except Exception as e:  # noqa: BLE001 - a model without 2-D feature maps
                errors.append(f"Grad-CAM r{r}f{f}: {e}")
                continue
            cam_rows += rows[idx].tolist()
            cam_maps.append(cams)
            cam_out += [name] * len(idx)
            cam_prob += prob[idx].tolist()
    if not base:
        return [Finding(OCCLUSION, "attribution", "Channel occlusion", "info",
                        "not measured: no fold model could be loaded (" + "; ".join(errors[:2]) + ")",
                        values={SKIPPED: True})]
    y = np.concatenate(ys)
    b = np.concatenate(base)
    auc0 = safe_auc(y, b)
    drops = {channels[c]: auc0 - safe_auc(y, np.concatenate(occl[c])) for c in range(k)}
    unused = [c for c, d in drops.items() if np.isfinite(d) and d < UNUSED_DROP]
    top = max(drops, key=lambda c: drops[c] if np.isfinite(drops[c]) else -1)
    sev = "low" if len(unused) >= max(1, k - 1) else "info"
    occ = Finding(
        OCCLUSION, "attribution", "Channel occlusion (per-component importance)", sev,
        f"AUC {fmt(auc0)} on {len(y)} OOF ROIs (subsample of at most {max_rois}, each with its fold's model); "
        "AUC drop when a channel is set to its training mean: "
        + ", ".join(f"{c} {fmt(d)}" for c, d in drops.items()),
        values={AUC: auc0, DROPS: drops, N: int(len(y)), MOST_IMPORTANT: top, UNUSED: unused,
                SUBSAMPLE: int(max_rois)},
        figure="occlusion",
        meaning=(f"The model leans on '{top}'; " + (f"{', '.join(unused)} barely matter."
                 if unused else "every component contributes.")),
        fix=("Drop or merge components that the model ignores; fewer channels means fewer parameters in "
             "the stem." if sev == "low" else ""),
        notes="; ".join(errors[:3]))
    findings = [occ]
    if cam_maps:
        order = np.argsort([("TP", "FP", "FN", "TN").index(o) for o in cam_out], kind="stable")
        cam_rows = [cam_rows[i] for i in order]
        cam_out = [cam_out[i] for i in order]
        cam_prob = [cam_prob[i] for i in order]
        cams_out = {"rows": np.asarray(cam_rows, dtype=np.int64),
                    "cams": np.concatenate(cam_maps)[order].astype(np.float16),
                    "outcome": np.asarray(cam_out), "prob": np.asarray(cam_prob, dtype=np.float32)}
        coarse = fmap is not None and max(fmap) <= 2
        findings.append(Finding(
            GRADCAM, "attribution", "Grad-CAM on true/false positives and negatives", "info",
            f"Grad-CAM of {len(cam_rows)} OOF ROIs ("
            + ", ".join(f"{o} {cam_out.count(o)}" for o in ("TP", "FP", "FN", "TN") if o in cam_out)
            + "), each with its fold's model",
            values={N: len(cam_rows), OUTCOMES: cam_out, FEATURE_MAP: fmap,
                    ROI_IDS: [str(run.manifest["roi_id"].iloc[i]) for i in cam_rows]},
            arrays=cams_out,
            figure="cams",
            meaning="Heat on the lesion supports a real signal; heat on borders, corners or background "
                    "points to a shortcut.",
            notes=(f"the last feature maps are {fmap[0]}x{fmap[1]}: these CAMs carry almost no spatial "
                   "information at this input size" if coarse else "")))
    return findings


@register_check("attribution", family="attribution", title="Channel attribution", order=90, writes=WRITES)
def check(ctx) -> list[Finding]:
    """Channel occlusion and Grad-CAM, each fold's model on its own test ROIs."""
    return attribution(ctx.run, max_rois=ctx.max_model_rois, seed=ctx.seed, load_model=ctx.load_model)
