"""Slow tests on the real mini-MIAS copy (../shared/data/mini-mias).

Run ``python tests/test_mias_real.py`` to redraw docs/figures/mias_crops.png.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mammodecomp.io import read_image
from mammodecomp.roi import extract_rois
from mammodecomp.sources import build_manifest, summarize
from mammodecomp.sources.mias import breast_mask

MIAS = Path(__file__).resolve().parents[2] / "shared" / "data" / "mini-mias"
if not MIAS.is_dir():
    MIAS = Path("/work/shared/data/mini-mias")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (MIAS / "Info.txt").is_file(), reason=f"mini-MIAS not found at {MIAS}")]


def test_counts_benign_malignant():
    df = build_manifest("mias", MIAS)
    s = summarize(df)
    assert s["dataset"]["films"] == 322 and s["dataset"]["patients"] == 161
    assert s["rois"] == s["located_rois"] == 119
    assert s["classes"] == {"benign": 68, "malignant": 51}
    assert s["patients"] == 104 and s["films"] == 111
    assert s["dropped"] == {"normal films": 207, "abnormal rows without coordinates": 4}
    # README facts: mdb144 holds one benign and one malignant ROI; mdb226 three ROIs
    assert sorted(df.loc[df.film_id == "mdb144", "label"]) == [0, 1]
    assert (df.film_id == "mdb226").sum() == 3
    assert df["radius"].min() == 3 and df["radius"].max() == 197
    # origin bottom-left: mdb001 535 425 -> row 1024 - 425
    r = df.set_index("roi_id").loc["mdb001_1"]
    assert (r.center_row, r.center_col, r.patient_id, r.laterality) == (599, 535, "mias_p001", "R")


def test_film_tasks_match_readme():
    s = summarize(build_manifest("mias", MIAS, task="film-benign-malignant"))
    assert s["classes"] == {"benign": 63, "malignant": 52}
    s = summarize(build_manifest("mias", MIAS, task="film-normal-abnormal"))
    assert s["classes"] == {"abnormal": 115, "normal": 207} and s["patients"] == 161


def test_laterality_matches_film_orientation():
    # the chest wall (bright side) is on the right edge for odd (R) films, the left for even (L)
    df = build_manifest("mias", MIAS, task="film-normal-abnormal")
    agree = 0
    for path, lat in zip(df.image_path, df.laterality):
        img = read_image(path)
        bright_right = img[:, 512:].mean() > img[:, :512].mean()
        agree += bright_right == (lat == "R")
    assert agree >= 0.98 * len(df)


def test_lesion_crops_are_tissue_and_centred():
    df = build_manifest("mias", MIAS)
    rois, meta = extract_rois(df, size=64, mode="context", progress=False)
    assert rois.shape == (119, 64, 64) and rois.dtype == np.float32
    assert 0.0 <= rois.min() and rois.max() <= 1.0
    assert (meta.roi_id == df.roi_id).all()
    # the lesion centre lies in the breast: the centre of the ROI is tissue for (nearly) all
    centre = rois[:, 24:40, 24:40].mean(axis=(1, 2))
    assert (centre > 0.1).mean() > 0.95
    assert np.median(meta.background_fraction) < 0.05
    # 8-bit source: the values stay on the k/255 grid where no resizing happens (64 px crops)
    small = (meta.crop_side_px == 64).to_numpy()
    assert small.any()
    assert np.allclose(rois[small] * 255, np.round(rois[small] * 255), atol=1e-3)
    _, fixed = extract_rois(df.head(5), size=64, mode="fixed", fov_mm=64, progress=False)
    assert (fixed.crop_side_px == 320).all() and np.allclose(fixed.roi_spacing_mm, 1.0)


def test_normal_patches_inside_breast_and_sized_like_lesions():
    df = build_manifest("mias", MIAS, task="normal-abnormal", seed=3)
    again = build_manifest("mias", MIAS, task="normal-abnormal", seed=3)
    assert df.equals(again)
    s = summarize(df)
    assert s["classes"] == {"abnormal": 119, "normal": 207}
    lesions, normals = df[df.label == 1], df[df.label == 0]
    assert set(normals.radius) <= set(lesions.radius)
    # the same size distribution: medians within 25 % of each other
    assert abs(normals.radius.median() - lesions.radius.median()) < 0.25 * lesions.radius.median()
    rois, meta = extract_rois(normals.head(40), size=64, progress=False)
    assert (meta.border_fraction == 0).all()
    assert meta.background_fraction.max() < 0.02
    for _, r in normals.head(40).iterrows():
        m = breast_mask(read_image(r.image_path), factor=4)
        assert m[int(r.center_row) // 4, int(r.center_col) // 4]


def make_crops_figure(out: Path, n: int = 6) -> Path:
    """Films with their lesion circle, and the context and fixed (64 mm) crops of a few ROIs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    df = build_manifest("mias", MIAS)
    order = df.sort_values("radius")
    pick = order.iloc[np.linspace(0, len(order) - 1, n).round().astype(int)]
    ctx, mctx = extract_rois(pick, size=128, mode="context", progress=False)
    fix, mfix = extract_rois(pick, size=128, mode="fixed", fov_mm=64, pad="constant", progress=False)
    fig, axes = plt.subplots(3, n, figsize=(2.2 * n, 7.2))
    for j, (_, r) in enumerate(pick.iterrows()):
        film = read_image(r.image_path)
        ax = axes[0, j]
        ax.imshow(film, cmap="gray", vmin=0, vmax=1)
        ax.add_patch(Circle((r.center_col, r.center_row), r.radius, fill=False, color="r", lw=1))
        ax.set_title(f"{r.roi_id} {r.label_name[0].upper()} r={r.radius:g}", fontsize=8)
        for row, img, meta in ((1, ctx[j], mctx.iloc[j]), (2, fix[j], mfix.iloc[j])):
            ax = axes[row, j]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.add_patch(Circle((63.5, 63.5), r.radius * meta.scale, fill=False, color="r", lw=1))
            ax.set_title(f"side {meta.crop_side_px}px bg {meta.background_fraction:.2f} "
                         f"pad {meta.border_fraction:.2f}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("film")
    axes[1, 0].set_ylabel("context (2 r, >= 64 px)")
    axes[2, 0].set_ylabel("fixed 64 mm (320 px)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def test_crops_figure(tmp_path):
    out = make_crops_figure(tmp_path / "crops.png", n=3)
    assert out.stat().st_size > 10_000


if __name__ == "__main__":
    print(make_crops_figure(Path(__file__).resolve().parents[1] / "docs" / "figures" / "mias_crops.png"))
