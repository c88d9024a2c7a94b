"""Hand-built run and study directories for the diagnose/report tests.

A run directory is written file by file, as ``train.cross_validate`` would
(docs/architecture.md, "The run directory"): config.yaml from the real
config module, the real split plan (``cv.make_split_plan``), real fold
checkpoints (randomly initialised models of the configured architecture,
saved as safetensors with their norm.json) so ``train.load_fold_model``
loads them, fabricated learning curves shaped like the question's, and
out-of-fold probabilities that depend on the label with a chosen strength.
No training happens, so a run takes well under a second to write.

This module holds no tests and pytest does not collect it (its name does not
start with ``test_``); it is imported by ``test_diagnose.py`` and
``test_report.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.ndimage import gaussian_filter

SIZE = 32


def _rois(labels: np.ndarray, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    n, SIZE = len(labels), size  # noqa: N806
    yy, xx = np.mgrid[:SIZE, :SIZE]
    r2 = (yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2
    out = np.empty((n, SIZE, SIZE), np.float32)
    for i, lab in enumerate(labels):
        tex = gaussian_filter(rng.normal(0, 1, (SIZE, SIZE)), 1.5)
        rad = rng.uniform(4, 8) + 0.8 * lab
        blob = np.exp(-r2 / (2 * rad ** 2)) * rng.uniform(0.15, 0.35)
        img = rng.uniform(0.3, 0.45) + 0.08 * tex / (tex.std() + 1e-8) + blob \
            + (0.03 * lab) * tex * (r2 < rad ** 2)
        out[i] = np.clip(img, 0, 1)
    return out


def decompose3(rois: np.ndarray) -> np.ndarray:
    """Three additive bands (coarse, middle, fine) that sum to the ROI."""
    g1 = np.stack([gaussian_filter(r, 4) for r in rois])
    g2 = np.stack([gaussian_filter(r, 1) for r in rois])
    return np.stack([g1, g2 - g1, rois - g2], axis=1).astype(np.float32)


def make_manifest(n_patients: int = 30, seed: int = 0, label_ordered: bool = False, size: int = SIZE):
    """Manifest (2 views per patient) and its ROIs."""
    rng = np.random.default_rng(seed)
    plabel = (np.arange(n_patients) % 2).astype(int)
    rng.shuffle(plabel)
    rows = []
    for p in range(n_patients):
        for v in ("CC", "MLO"):
            rows.append({"roi_id": f"p{p:03d}_{v}", "patient_id": f"p{p:03d}", "label": int(plabel[p]),
                         "image_path": f"/data/p{p:03d}_{v}.png", "view": v, "source": "synthetic"})
    df = pd.DataFrame(rows)
    if label_ordered:
        df = df.sort_values(["label", "patient_id"], kind="mergesort").reset_index(drop=True)
    rois = _rois(df["label"].to_numpy(), rng, size)
    df["crop_side_px"] = 64.0 + rng.normal(0, 4, len(df))
    df["scale"] = size / df["crop_side_px"]
    df["background_fraction"] = rng.uniform(0, 0.1, len(df))
    df["border_fraction"] = rng.uniform(0, 0.05, len(df))
    df["mean_intensity"] = rois.mean(axis=(1, 2)).astype(float)
    return df, rois


def _history(kind: str, epochs: int, rng) -> pd.DataFrame:
    e = np.arange(1, epochs + 1)
    t = e / epochs
    if kind == "seed":   # the question's curves: train -> 1, val stuck at 0.6 and its loss swings 1.8..4.6
        tl = 0.7 * np.exp(-4 * t) + 0.02
        ta = 0.6 + 0.39 * (1 - np.exp(-5 * t))
        vl = np.where(e <= epochs // 2, 0.7 + 0.1 * t, np.where(e % 2 == 0, 4.6, 1.8))
        va = 0.6 + rng.normal(0, 0.02, epochs)
    else:                # healthy: both improve, small gap, smooth val loss
        tl = 0.69 - 0.25 * t
        ta = 0.6 + 0.22 * t
        vl = 0.69 - 0.18 * t + 0.01 * np.sin(e)
        va = 0.6 + 0.17 * t
    h = {"epoch": e, "lr": 1e-3, "train_loss": tl, "train_auc": ta}
    h.update({"val_loss": vl, "val_auc": va, "seconds": 0.1})
    return pd.DataFrame(h)


def make_run(out: Path, *, recipe: str = "seed", n_patients: int = 30, label_ordered: bool = False,
             scheme: str | None = None, variant: str = "components", signal: float = 1.0, seed: int = 0,
             epochs: int = 12, share_patient: bool = False, duplicate: bool = False,
             manifest=None, size: int = SIZE) -> dict:
    """Write a finished run directory at *out*; return what was fabricated.

    Parameters
    ----------
    signal : strength of the label in the fabricated OOF logits.
    share_patient : give one ROI tested in fold 1 the patient id of a patient
        tested in fold 0 (after the plan is made), so that patient is in two folds.
    duplicate : copy one ROI (rescaled) over an ROI tested in another fold.
    manifest : ``(df, rois)`` to reuse (sibling runs of a study).
    """
    from mammodecomp.config import dump_config, resolve_config
    from mammodecomp.cv import make_split_plan
    from mammodecomp.metrics import pooled_oof_summary
    from mammodecomp.fit import Normalized, _save_weights, build_model, fit_normalization

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 101)
    df, rois = manifest if manifest is not None else make_manifest(n_patients, seed, label_ordered, size)
    df, rois = df.copy(), rois.copy()
    ov = ["cv.n_folds=3", f"data.roi_size={rois.shape[-1]}", f"train.epochs={epochs}", "decomposition.k=3",
          f"decomposition.variant={variant}"]
    if scheme:
        ov.append(f"cv.scheme={scheme}")
    if recipe == "seed":
        ov.append("model.kwargs={width: 0.125}")
    cfg = resolve_config(recipe=recipe, overrides=ov)
    plan = make_split_plan(df, n_folds=3, scheme=cfg.cv.scheme, seed=0)
    test = plan[plan["role"] == "test"]
    fold_of = dict(zip(test["roi_id"], test["fold"]))
    fabricated: dict = {}
    if share_patient:
        a = df.index[df["roi_id"].map(fold_of) == 0][0]
        b = df.index[df["roi_id"].map(fold_of) == 1][0]
        fabricated["shared_patient"] = df.loc[a, "patient_id"]
        df.loc[b, "patient_id"] = df.loc[a, "patient_id"]
        df.loc[b, "label"] = df.loc[a, "label"]
    if duplicate:
        a = df.index[df["roi_id"].map(fold_of) == 0][1]
        b = df.index[df["roi_id"].map(fold_of) == 2][1]
        rois[b] = np.clip(rois[a] * 0.9 + 0.03, 0, 1)
        fabricated["duplicate_pair"] = {df.loc[a, "roi_id"], df.loc[b, "roi_id"]}
    comps = decompose3(rois)
    x = {"components": comps, "raw": rois[:, None], "components+raw": np.concatenate([comps, rois[:, None]], 1)}[variant]
    channels = {"components": ["c0", "c1", "c2"], "raw": ["roi"], "components+raw": ["c0", "c1", "c2", "roi"]}[variant]
    np.save(out / "components.npy", x.astype(np.float16))
    np.save(out / "rois.npy", rois.astype(np.float16))
    (out / "config.yaml").write_text(dump_config(cfg))
    df.to_parquet(out / "manifest.parquet")
    plan.to_csv(out / "splits.csv", index=False)
    y = df["label"].to_numpy()
    pos = {r: i for i, r in enumerate(df["roi_id"])}
    rows = []
    torch.manual_seed(seed)
    for f in sorted(plan["fold"].unique()):
        sub = plan[plan["fold"] == f]
        tr = np.array([pos[r] for r in sub.loc[sub["role"] == "train", "roi_id"]])
        te = np.array([pos[r] for r in sub.loc[sub["role"] == "test", "roi_id"]])
        va = np.array([pos[r] for r in sub.loc[sub["role"] == "val", "roi_id"]])
        fd = out / "folds" / f"r0f{f}"
        fd.mkdir(parents=True)
        mean, std = fit_normalization(x, tr, cfg.train.normalize)
        model = Normalized(build_model(cfg, x.shape[1]), mean, std)
        _save_weights(fd / "model.safetensors", model)
        (fd / "norm.json").write_text(json.dumps({"mean": mean, "std": std}))
        h = _history("seed" if recipe == "seed" else "small", epochs, rng)
        h.to_csv(fd / "history.csv", index=False)
        best = int(h.loc[h["val_loss"].idxmin(), "epoch"])
        (fd / "done.json").write_text(json.dumps({
            "best_epoch": epochs if cfg.train.select == "last" else best, "threshold": 0.5,
            "epochs_run": epochs, "validated_on_test": len(va) == 0, "n_train": int(len(tr)),
            "n_val": int(len(va)), "n_test": int(len(te)),
            "final_train_auc": float(h["train_auc"].iloc[-1]), "final_val_auc": float(h["val_auc"].iloc[-1])}))
        logit = signal * (2 * y[te] - 1) + rng.normal(0, 1.0, len(te))
        rows.append(pd.DataFrame({"roi_id": df["roi_id"].to_numpy()[te], "patient_id": df["patient_id"].to_numpy()[te],
                                  "label": y[te], "repeat": 0, "fold": int(f), "prob": 1 / (1 + np.exp(-logit)),
                                  "logit": logit, "threshold": 0.5}))
    oof = pd.concat(rows, ignore_index=True)
    oof.to_csv(out / "oof.csv", index=False)
    summary = pooled_oof_summary(oof, n_boot=100, seed=0)
    summary.update({"recipe": recipe, "cv_scheme": cfg.cv.scheme})
    (out / "summary.json").write_text(json.dumps(summary, default=float))
    (out / "run.json").write_text(json.dumps({
        "format": 1, "version": "test", "recipe": recipe, "manifest_hash": "x",
        "components_path": str(out / "components.npy"), "rois_path": str(out / "rois.npy"),
        "channels": channels, "n_rois": len(df)}))
    return {"path": out, "manifest": (df, rois), **fabricated}


def make_study(root: Path, *, label_ordered: bool = True) -> Path:
    """STUDY/{seed,small,raw} on one manifest, plus study.json (small and raw
    are the ablation arms of the small recipe)."""
    root = Path(root)
    man = make_manifest(30, 0, label_ordered)
    make_run(root / "seed", recipe="seed", manifest=man, signal=0.3, seed=1)
    make_run(root / "small", recipe="small", manifest=man, signal=2.0, seed=2)
    make_run(root / "raw", recipe="small", variant="raw", manifest=man, signal=1.2, seed=3)
    arms = {n: {"recipe": r, "overrides": [], "path": n} for n, r in
            (("small", "small"), ("seed", "seed"), ("raw", "small"))}
    (root / "study.json").write_text(json.dumps({"arms": arms}))
    return root
