"""From a config to model inputs: manifest -> ROIs -> components (cached).

:func:`prepare_inputs` is the one path that training, diagnosis and
prediction share, so the ROI a model was trained on and the ROI it is asked
about are made by the same code.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config
from .errors import InputError
from .io import save_array
from .manifest import load_manifest, manifest_hash

META_COLUMNS = ["crop_side_px", "scale", "background_fraction", "border_fraction", "mean_intensity"]


@dataclass
class Inputs:
    """What a study trains on.

    ``x`` is (N, C, H, W) float32 where C depends on the variant (components,
    raw or components+raw); ``rois`` is (N, H, W); ``manifest`` has the ROI
    meta columns added; ``channels`` names the C channels.
    """

    manifest: pd.DataFrame
    rois: np.ndarray
    x: np.ndarray
    channels: list[str]
    components_path: Path
    rois_path: Path
    info: dict


def channel_names(method: str, k: int) -> list[str]:
    if method == "identity":
        return ["roi"]
    return [f"{method}{i + 1}" for i in range(k - 1)] + [f"{method}-residual"]


def default_store(out: Path) -> Path:
    return Path(out).resolve().parent / ".store"


def _synth_version(root: Path) -> int | None:
    from .io import read_json
    try:
        return int(read_json(root / "synth.json").get("synth_version"))
    except (OSError, ValueError, TypeError, AttributeError, InputError):
        return None


def build_manifest_for(cfg: Config, data_dir: Path) -> pd.DataFrame:
    """The manifest a config asks for (a file, a source, or synthetic data)."""
    d = cfg.data
    if d.manifest:
        df = load_manifest(d.manifest)
    elif d.source == "synthetic":
        from . import synth
        s = d.synth
        root = Path(d.root) if d.root else data_dir / (
            f"synthetic-n{s.n_patients}-s{s.seed}-d{s.difficulty:g}-ln{s.label_noise:g}"
            f"-p{s.prevalence:g}-{s.size}")
        cached = (root / "manifest.parquet").is_file()
        stale = cached and not d.root and _synth_version(root) != synth.SYNTH_VERSION   # an older generator's
        if not cached or stale:
            synth.write_synthetic(root, n_patients=s.n_patients, size=s.size, seed=s.seed, overwrite=stale,
                                  difficulty=s.difficulty, label_noise=s.label_noise, prevalence=s.prevalence)
        df = load_manifest(root / "manifest.parquet")
        if d.crop_mode == "context" and {"lesion_row", "lesion_col", "lesion_radius_px"} <= set(df.columns):
            # the generator knows where its lesion is: crop around it, as for a real data set.
            # The radius is the lesion's core radius R: a 64 px ROI then keeps the native pixels
            # (side max(2R, 64)), though spicules and wide benign clusters reach past it (a
            # cluster keeps 82% of its calcium on average). A circle of 2.5 R holds every lesion
            # whole but shrinks large ones up to 2x at 64 px: `small` fell from 0.859 to 0.788
            # OOF AUC on the 300-patient bench set, the probe at 128 px moved by < 0.006 (stop 12)
            df["center_row"] = df["lesion_row"].astype(float)
            df["center_col"] = df["lesion_col"].astype(float)
            df["radius"] = df["lesion_radius_px"].astype(float)
    else:
        from .sources import build_manifest
        if not d.root:
            raise InputError(f"data.root is required for source '{d.source}' (the data set folder)")
        df = build_manifest(d.source, d.root, task=d.task)
    if cfg.data.synth.label_ordered:
        df = df.sort_values("label", kind="stable").reset_index(drop=True)
    if cfg.data.permute_labels:
        from .baselines import permute_labels_by_patient
        df = df.copy()
        df["label"] = permute_labels_by_patient(df, np.random.default_rng(cfg.data.permute_seed))
        if "label_name" in df.columns:
            df["label_name"] = np.where(df["label"] == 1, "malignant (permuted)", "benign (permuted)")
    return df


def prepare_inputs(cfg: Config, out: str | Path, *, manifest: pd.DataFrame | None = None,
                   progress: bool = True) -> Inputs:
    """Manifest -> ROIs -> decomposition (through the store) -> model inputs."""
    from .decompose import decompose as _decompose  # noqa: F401  (registers methods)
    from .roi import extract_rois
    from .store import DecompStore

    out = Path(out)
    store_dir = Path(cfg.decomposition.store) if cfg.decomposition.store else default_store(out)
    df = manifest if manifest is not None else build_manifest_for(cfg, store_dir.parent / "data")
    rois, meta = extract_rois(df, size=cfg.data.roi_size, mode=cfg.data.crop_mode, fov_mm=cfg.data.fov_mm,
                              progress=progress)
    rois = np.asarray(rois, dtype=np.float32)
    meta = meta.set_index("roi_id") if "roi_id" in meta.columns else meta
    df = df.copy()
    for col in META_COLUMNS:
        if col in meta.columns:
            df[col] = meta.loc[df["roi_id"], col].to_numpy() if meta.index.name == "roi_id" else meta[col].to_numpy()
    dec = cfg.decomposition
    store = DecompStore(store_dir)
    comps = store.get_or_compute(rois, dec.method, dec.k, dict(dec.params), progress=progress)
    comp_path = store.path(store.key(rois, dec.method, dec.k, dict(dec.params)))
    h = hashlib.sha256(rois.tobytes()).hexdigest()[:16]
    rois_path = store_dir / f"rois-{h}.npy"
    if not rois_path.is_file():
        save_array(rois_path, rois.astype(np.float16))
    names = channel_names(dec.method, dec.k)
    if dec.variant == "raw":
        x, chans = rois[:, None].astype(np.float32), ["roi"]
    elif dec.variant == "components+raw":
        x = np.concatenate([np.asarray(comps, dtype=np.float32), rois[:, None]], 1)
        chans = names + ["roi"]
    else:
        x, chans = np.asarray(comps, dtype=np.float32), names
    info = {"manifest_hash": manifest_hash(df), "n_rois": int(len(df)),
            "n_patients": int(df["patient_id"].nunique()),
            "class_counts": {str(k): int(v) for k, v in df["label"].value_counts().sort_index().items()}}
    return Inputs(manifest=df, rois=rois, x=x, channels=chans, components_path=comp_path,
                  rois_path=rois_path, info=info)
