"""Tests of the synthetic ROI generator (mammodecomp.synth) and `mammodecomp synth`."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mammodecomp import synth
from mammodecomp.errors import InputError
from mammodecomp.io import read_image
from mammodecomp.manifest import load_manifest, validate_manifest

LATENT = ["latent_evidence", "oracle_prob", "lesion_radius_px", "contrast", "true_label"]


@pytest.fixture(scope="module")
def small():
    """150 patients, 2 views, 96 px: the set most tests share."""
    return synth.generate(n_patients=150, size=96, seed=11)


def _spectral_slope(imgs: np.ndarray, lo: float, hi: float) -> float:
    """Fitted -slope of the radially averaged log power spectrum in [lo, hi] cycles/px."""
    n, H, W = imgs.shape
    x = imgs - imgs.mean(axis=(1, 2), keepdims=True)
    win = np.hanning(H)[:, None] * np.hanning(W)[None, :]
    P = (np.abs(np.fft.fft2(x * win)) ** 2).mean(0).ravel()
    f = np.hypot(np.fft.fftfreq(H)[:, None], np.fft.fftfreq(W)[None, :]).ravel()
    edges = np.logspace(np.log10(lo), np.log10(hi), 13)
    k = np.digitize(f, edges)
    fm = [f[k == i].mean() for i in range(1, len(edges)) if (k == i).any()]
    pm = [P[k == i].mean() for i in range(1, len(edges)) if (k == i).any()]
    return float(-np.polyfit(np.log(fm), np.log(pm), 1)[0])


# --------------------------------------------------------------------------- contract
def test_generate_shapes_and_manifest_contract(small):
    x, m = small
    assert x.shape == (300, 96, 96) and x.dtype == np.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert len(m) == 300
    for col in ["roi_id", "patient_id", "label", "label_name", "image_path", "source", "view",
                "laterality", "lesion_type", *LATENT]:
        assert col in m.columns, col
    validate_manifest(m, check_files=False)
    assert (m["source"] == "synthetic").all()
    assert set(m["view"]) == {"CC", "MLO"}
    assert set(m["lesion_type"]) == {"mass", "calcification"}
    assert set(m["laterality"]) <= {"L", "R"}
    assert (m["label_name"] == np.where(m["label"] == 1, "malignant", "benign")).all()
    assert (m["image_path"] == "images/" + m["roi_id"] + ".png").all()
    # no coordinate columns: the image is the ROI
    assert not {"center_row", "center_col", "radius"} & set(m.columns)
    assert m["oracle_prob"].between(0, 1).all()


def test_views_share_the_lesion_but_not_the_background(small):
    x, m = small
    per = m.groupby("patient_id")
    assert (per.size() == 2).all()
    for col in ["label", "true_label", "latent_evidence", "oracle_prob", "lesion_radius_px", "contrast",
                "lesion_type", "laterality", "malignancy_score", "n_calcs", "n_spicules", "irregularity"]:
        assert (per[col].nunique() == 1).all(), col
    cc = x[m["view"].to_numpy() == "CC"]
    mlo = x[m["view"].to_numpy() == "MLO"]
    assert not np.array_equal(cc, mlo)
    corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(cc[:20], mlo[:20])]
    assert np.median(corr) < 0.5
    # small deformation: the lesion moves a little between views
    moved = per["lesion_row"].agg(lambda s: s.max() - s.min())
    assert (moved > 0).mean() > 0.9 and moved.max() < 0.2 * 96


def test_lesion_is_brighter_than_its_surroundings(small):
    x, m = small
    yy, xx = np.mgrid[:96, :96]
    diffs = []
    for img, (_, r) in zip(x, m.iterrows()):
        d = np.hypot(yy - r["lesion_row"], xx - r["lesion_col"])
        R = r["lesion_radius_px"]
        inner = img[d < 0.5 * R].mean()
        ring = img[(d > 1.6 * R) & (d < 2.4 * R)].mean()
        diffs.append(inner - ring)
    assert np.median(diffs) > 0.03


def test_shape_features_follow_the_evidence(small):
    _, m = small
    mass = m[m["lesion_type"] == "mass"]
    calc = m[m["lesion_type"] == "calcification"]
    # benign-looking: round and sharp; malignant-looking: irregular, blurred, spiculated
    assert synth.auc(mass["true_label"], mass["irregularity"]) > 0.7
    assert synth.auc(mass["true_label"], mass["margin_px"] / mass["lesion_radius_px"]) > 0.7
    assert mass.loc[mass["malignancy_score"] < 0.2, "n_spicules"].max() <= 1
    # calcifications: more (and smaller) for malignant
    assert synth.auc(calc["true_label"], calc["n_calcs"]) > 0.7
    assert np.corrcoef(calc["malignancy_score"], calc["n_calcs"])[0, 1] > 0.95


# --------------------------------------------------------------------------- no shortcut
def test_radius_contrast_and_mean_intensity_carry_no_label(small):
    x, m = small
    for col in ["lesion_radius_px", "contrast", "density"]:
        assert 0.4 <= synth.auc(m["label"], m[col]) <= 0.6, col
    assert 0.4 <= synth.auc(m["label"], x.mean(axis=(1, 2))) <= 0.6
    lt = (m["lesion_type"] == "mass").astype(int)
    assert 0.4 <= synth.auc(m["label"], lt) <= 0.6


def test_integrated_lesion_brightness_depends_on_radius_and_contrast_only():
    # the class must show in the shape, never in how much "lesion" there is
    size, seed = 160, 13
    m = synth.sample_manifest(40, size=size, seed=seed, views=("CC",))
    sc = size / 320
    sums, expect = [], []
    for _, row in m.iterrows():
        layer, info, _, _ = synth._lesion(row, size, seed)
        assert layer.min() >= 0.0
        sums.append(float(layer.sum()))
        if row["lesion_type"] == "mass":
            expect.append(row["contrast"] * np.pi * row["lesion_radius_px"] ** 2 * 0.85)
        else:
            expect.append(row["contrast"] * 2.6 * 300.0 * sc * sc)
    np.testing.assert_allclose(sums, expect, rtol=1e-3)


def test_lesion_radius_and_contrast_distributions_match_across_classes():
    from scipy.stats import ks_2samp
    m = synth.sample_manifest(1500, seed=2).drop_duplicates("patient_id")
    for col in ["lesion_radius_px", "contrast", "density", "aspect", "mass_style"]:
        a = m.loc[m["true_label"] == 1, col]
        b = m.loc[m["true_label"] == 0, col]
        assert ks_2samp(a, b).pvalue > 0.001, col


# --------------------------------------------------------------------------- background
def test_background_power_spectrum_slope_is_mammographic():
    b = synth.backgrounds(12, size=256, seed=0)
    assert b.shape == (12, 256, 256) and 0.0 <= b.min() and b.max() <= 1.0
    # 0.01-0.1 cycles/px (about 0.1-1 cycles/mm at 0.1 mm/px): where anatomical noise is measured
    beta = _spectral_slope(b, 0.01, 0.1)
    assert 2.5 <= beta <= 3.5, beta


def test_background_density_moves_the_mean():
    fatty = synth.backgrounds(4, size=64, seed=1, density=0.0)
    dense = synth.backgrounds(4, size=64, seed=1, density=1.0)
    assert dense.mean() > fatty.mean() + 0.2


# --------------------------------------------------------------------------- truth
@pytest.mark.parametrize("difficulty,lo,hi", [(0.0, 0.97, 1.0), (0.5, 0.82, 0.91), (1.0, 0.64, 0.76)])
def test_oracle_auc_follows_difficulty(difficulty, lo, hi):
    m = synth.sample_manifest(1500, seed=3, difficulty=difficulty)
    assert lo <= synth.oracle_auc(m) <= hi
    assert lo <= synth.expected_oracle_auc(difficulty) <= hi


def test_oracle_prob_is_calibrated_with_label_noise_and_prevalence():
    m = synth.sample_manifest(4000, seed=4, label_noise=0.1, prevalence=0.3, views=("CC",))
    assert m["true_label"].sum() == 1200                   # exact prevalence
    flip = (m["label"] != m["true_label"]).mean()
    assert 0.08 <= flip <= 0.12
    # reliability: mean oracle_prob matches the observed rate in each decile
    bins = pd.qcut(m["oracle_prob"], 10, labels=False)
    g = m.groupby(bins).agg(p=("oracle_prob", "mean"), y=("label", "mean"))
    assert (g["p"] - g["y"]).abs().max() < 0.07
    clean = synth.sample_manifest(4000, seed=4, prevalence=0.3, views=("CC",))
    assert synth.oracle_auc(m) < synth.oracle_auc(clean) - 0.03
    # label noise bounds the posterior away from 0 and 1
    assert m["oracle_prob"].between(0.1, 0.9).all()


def test_patients_are_stable_when_the_set_grows():
    a = synth.sample_manifest(10, seed=5)
    b = synth.sample_manifest(20, seed=5)
    # patient i's lesion does not depend on n_patients (only the label permutation does)
    cols = ["lesion_radius_px", "contrast", "lesion_type", "density"]
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].iloc[:20].reset_index(drop=True))


# --------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_other_seed_other_images():
    x1, m1 = synth.generate(3, size=80, seed=21)
    x2, m2 = synth.generate(3, size=80, seed=21, workers=1)
    x3, _ = synth.generate(3, size=80, seed=22)
    assert x1.tobytes() == x2.tobytes()
    pd.testing.assert_frame_equal(m1, m2)
    assert not np.array_equal(x1, x3)
    # batching does not change the pixels
    m4 = synth.sample_manifest(3, size=80, seed=21)
    x4 = synth.render(m4, 80, 21, batch_size=1)
    assert x4.tobytes() == x1.tobytes()


def test_sizes_scale_with_roi_size():
    a = synth.sample_manifest(20, size=160, seed=6)
    b = synth.sample_manifest(20, size=320, seed=6)
    np.testing.assert_allclose(2 * a["lesion_radius_px"], b["lesion_radius_px"])


# --------------------------------------------------------------------------- knobs
@pytest.mark.parametrize("kw,field", [
    (dict(n_patients=1), "n_patients"), (dict(size=10), "size"), (dict(difficulty=1.5), "difficulty"),
    (dict(label_noise=0.5), "label_noise"), (dict(prevalence=1.0), "prevalence"),
    (dict(views=("CC", "CC")), "views"), (dict(views=()), "views"),
])
def test_bad_knobs_raise_input_error(kw, field):
    with pytest.raises(InputError, match=field):
        synth.sample_manifest(**{"n_patients": 4, **kw})


def test_single_view_and_prevalence():
    m = synth.sample_manifest(10, seed=0, views=("CC",), prevalence=0.2)
    assert len(m) == 10 and m["true_label"].sum() == 2


def test_auc_needs_both_classes():
    with pytest.raises(InputError, match="both classes"):
        synth.auc([1, 1], [0.2, 0.3])


# --------------------------------------------------------------------------- files
def test_write_synthetic_round_trip_and_identical_bytes(tmp_path):
    kw = dict(n_patients=3, size=64, seed=9, difficulty=0.3)
    d1 = synth.write_synthetic(tmp_path / "a", **kw)
    d2 = synth.write_synthetic(tmp_path / "b", **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]    # no temp folders left
    files1 = sorted(p.relative_to(d1) for p in d1.rglob("*") if p.is_file())
    files2 = sorted(p.relative_to(d2) for p in d2.rglob("*") if p.is_file())
    assert files1 == files2 and len(files1) == 6 + 2
    for rel in files1:
        assert (d1 / rel).read_bytes() == (d2 / rel).read_bytes(), rel
    m = load_manifest(d1 / "manifest.parquet")                  # validates, files exist
    x, m0 = synth.generate(**kw)
    for img, p in zip(x, m["image_path"]):
        y, meta = read_image(p, return_meta=True)
        assert y.shape == (64, 64)
        assert np.abs(y - img).max() <= 1.0 / 65535 + 1e-7
    from PIL import Image
    with Image.open(m["image_path"].iloc[0]) as im:
        assert im.mode.startswith("I;16") or im.mode == "I"
    info = json.loads((d1 / "synth.json").read_text())
    assert info["oracle_auc"] == pytest.approx(synth.oracle_auc(m0))
    assert info["params"]["seed"] == 9 and info["n_rois"] == 6
    assert list(m["latent_evidence"]) == list(m0["latent_evidence"])


def test_write_synthetic_refuses_non_empty_folder_unless_overwrite(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="overwrite"):
        synth.write_synthetic(out, n_patients=2, size=64)
    assert (out / "keep.txt").exists()
    synth.write_synthetic(out, n_patients=2, size=64, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "synth.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        synth.write_synthetic(tmp_path / "f", n_patients=2, size=64)


# --------------------------------------------------------------------------- CLI
def test_cli_synth_prints_oracle_auc(tmp_path, capsys, monkeypatch):
    from mammodecomp.cli import main
    monkeypatch.delenv("MAMMODECOMP_QUIET", raising=False)   # --quiet sets it; restored afterwards
    out = tmp_path / "s"
    main(["--quiet", "synth", "--out", str(out), "--patients", "3", "--size", "64", "--seed", "1",
          "--difficulty", "0.2", "--label-noise", "0.1", "--prevalence", "0.4"])
    text = capsys.readouterr().out
    info = json.loads((out / "synth.json").read_text())
    assert f"oracle AUC: {info['oracle_auc']:.4f}" in text
    assert info["params"] == {"n_patients": 3, "size": 64, "seed": 1, "difficulty": 0.2,
                              "label_noise": 0.1, "prevalence": 0.4, "views": ["CC", "MLO"]}
    with pytest.raises(SystemExit) as e:
        main(["synth", "--out", str(out), "--patients", "3", "--size", "64"])
    assert e.value.code == 2
    assert "not empty" in capsys.readouterr().err


def test_a_cached_set_from_an_older_generator_is_rewritten(tmp_path):
    """build_manifest_for regenerates its own cached synthetic set when synth_version differs."""
    from mammodecomp.config import resolve_config
    from mammodecomp.data import build_manifest_for
    cfg = resolve_config(recipe="small", overrides=["data.synth.n_patients=4", "data.synth.size=64"])
    df = build_manifest_for(cfg, tmp_path)
    assert (df.groupby("lesion_id")["roi_id"].count() == 2).all()
    root = next(tmp_path.glob("synthetic-*"))
    info = json.loads((root / "synth.json").read_text())
    info["synth_version"] = 1
    (root / "synth.json").write_text(json.dumps(info))
    load_manifest(root / "manifest.parquet").drop(columns="lesion_id").to_parquet(root / "manifest.parquet")
    again = build_manifest_for(cfg, tmp_path)
    assert json.loads((root / "synth.json").read_text())["synth_version"] == synth.SYNTH_VERSION
    pd.testing.assert_series_equal(again["lesion_id"], df["lesion_id"])
