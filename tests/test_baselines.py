"""Cheap baselines: texture features, leakage-free OOF, shortcuts, permutation null."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from mammodecomp.baselines import (fit_predict_oof, permutation_test, permute_labels_by_patient,
                                   shortcut_aucs, texture_features)
from mammodecomp.cv import make_split_plan
from mammodecomp.errors import InputError


def manifest(n_patients=40, per_patient=2, seed=0):
    rng = np.random.default_rng(seed)
    lab = rng.permutation(np.arange(n_patients) % 2)
    rows = [{"roi_id": f"r{p}_{j}", "patient_id": f"p{p}", "label": int(lab[p])}
            for p in range(n_patients) for j in range(per_patient)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def data():
    df = manifest()
    plan = make_split_plan(df, n_folds=4, seed=0)
    return df, plan


# ---------------------------------------------------------------- texture features
def test_texture_features_values():
    rng = np.random.default_rng(0)
    imgs = rng.random((4, 32, 32))
    f = texture_features(imgs, size=16, levels=16)
    assert f.shape[0] == 4 and np.isfinite(f.to_numpy()).all()
    np.testing.assert_allclose(f["roi_mean"], imgs.reshape(4, -1).mean(1))
    np.testing.assert_allclose(f["roi_std"], imgs.reshape(4, -1).std(1))
    np.testing.assert_allclose(f["roi_skew"], stats.skew(imgs.reshape(4, -1), axis=1))
    np.testing.assert_allclose(f["roi_p95"], np.percentile(imgs.reshape(4, -1), 95, axis=1))
    # (N, H, W) and (N, 1, H, W) give the same numbers
    g = texture_features(imgs[:, None], size=16, levels=16, channel_names=["roi"])
    pd.testing.assert_frame_equal(f, g)
    # the LBP histogram is a distribution over the 10 uniform codes
    lbp = f[[f"roi_lbp_{i}" for i in range(10)]].to_numpy()
    np.testing.assert_allclose(lbp.sum(1), 1.0)


def test_texture_features_see_texture():
    yy, xx = np.mgrid[0:64, 0:64]
    smooth = (xx / 63.0)[None]
    checker = (((yy // 2) + (xx // 2)) % 2).astype(float)[None]
    f = texture_features(np.stack([smooth, checker]), size=64, levels=8)
    assert f["c0_glcm_contrast"][1] > 10 * f["c0_glcm_contrast"][0]
    assert f["c0_glcm_homogeneity"][0] > f["c0_glcm_homogeneity"][1]
    # a constant channel is finite, with zero spread features
    c = texture_features(np.full((2, 16, 16), 0.3), size=8)
    assert np.isfinite(c.to_numpy()).all() and (c["roi_skew"] == 0).all()
    # negative components are fine; the texture part ignores a gain/offset change
    rng = np.random.default_rng(1)
    comp = rng.normal(size=(2, 3, 32, 32))
    a = texture_features(comp, size=32)
    b = texture_features(3 * comp - 1, size=32)
    tex = [c for c in a.columns if "glcm" in c or "lbp" in c]
    np.testing.assert_allclose(a[tex], b[tex], atol=1e-12)
    with pytest.raises(InputError):
        texture_features(np.zeros((2, 2, 2, 2, 2)))


def test_texture_downsampling_is_block_mean():
    rng = np.random.default_rng(2)
    big = rng.random((2, 64, 64))
    small = big.reshape(2, 32, 2, 32, 2).mean(axis=(2, 4))
    a = texture_features(big, size=32)
    b = texture_features(small, size=32)
    tex = [c for c in a.columns if "glcm" in c or "lbp" in c]
    np.testing.assert_allclose(a[tex], b[tex], atol=1e-12)


# ---------------------------------------------------------------- OOF logistic regression
def test_oof_matches_manual_fold_fit(data):
    df, plan = data
    rng = np.random.default_rng(3)
    X = rng.normal(df.label.to_numpy()[:, None], 1.0, size=(len(df), 4))
    oof = fit_predict_oof(X, df, plan, C=1.0)
    assert list(oof.columns) == ["roi_id", "patient_id", "label", "repeat", "fold", "prob", "logit"]
    assert oof.roi_id.is_unique and set(oof.roi_id) == set(df.roi_id)
    idx = {r: i for i, r in enumerate(df.roi_id)}
    for f in range(4):
        part = plan[plan.fold == f]
        fit = np.array([idx[r] for r in part.roi_id[part.role != "test"]])
        te = np.sort([idx[r] for r in part.roi_id[part.role == "test"]])
        sc = StandardScaler().fit(X[fit])
        lr = LogisticRegression(C=1.0, max_iter=5000).fit(sc.transform(X[fit]), df.label.to_numpy()[fit])
        ref = lr.predict_proba(sc.transform(X[te]))[:, 1]
        got = oof[oof.fold == f].prob.to_numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9)
    assert skm.roc_auc_score(oof.label, oof.prob) > 0.75


def test_no_information_crosses_folds(data):
    df, plan = data
    rng = np.random.default_rng(4)
    X = rng.normal(df.label.to_numpy()[:, None], 1.0, size=(len(df), 3))
    base = fit_predict_oof(X, df, plan, C=1.0).set_index("roi_id")
    test0 = plan.roi_id[(plan.fold == 0) & (plan.role == "test")].to_numpy()
    in0 = df.roi_id.isin(test0).to_numpy()
    # 1) test labels never reach the fold's own predictions
    flipped = df.assign(label=np.where(in0, 1 - df.label, df.label))
    got = fit_predict_oof(X, flipped, plan, C=1.0).set_index("roi_id")
    np.testing.assert_allclose(got.loc[test0, "prob"], base.loc[test0, "prob"], rtol=0, atol=0)
    # 2) shifting the test fold's features moves nothing but those rows:
    #    the scaler is fitted on training rows only (a transductive scaler would
    #    re-centre the shifted rows and change every test prediction)
    X2 = X.copy()
    first = np.flatnonzero(in0)[0]
    X2[first] += 50.0
    got = fit_predict_oof(X2, df, plan, C=1.0).set_index("roi_id")
    others = [r for r in test0 if r != df.roi_id[first]]
    np.testing.assert_array_equal(got.loc[others, "prob"], base.loc[others, "prob"])
    # ... while the same shift on a training row of fold 0 does change fold 0
    train0 = plan.roi_id[(plan.fold == 0) & (plan.role == "train")].iloc[0]
    X3 = X.copy()
    X3[df.roi_id.tolist().index(train0)] += 50.0
    got = fit_predict_oof(X3, df, plan, C=1.0).set_index("roi_id")
    assert not np.allclose(got.loc[test0, "prob"], base.loc[test0, "prob"])


def test_inner_C_and_bad_inputs(data):
    df, plan = data
    rng = np.random.default_rng(5)
    X = rng.normal(df.label.to_numpy()[:, None], 1.0, size=(len(df), 3))
    X[::7, 1] = np.nan  # imputed, on training rows only
    oof = fit_predict_oof(X, df, plan)  # C="inner"
    assert np.isfinite(oof.prob).all() and skm.roc_auc_score(oof.label, oof.prob) > 0.7
    with pytest.raises(InputError, match="expected"):
        fit_predict_oof(X[:-1], df, plan)
    with pytest.raises(InputError):
        fit_predict_oof(X, df, plan, C=-1)
    with pytest.raises(InputError):
        fit_predict_oof(X, df, plan, model="svm")
    with pytest.raises(InputError, match="not in the manifest"):
        fit_predict_oof(X[:-2], df.iloc[:-2], plan)


# ---------------------------------------------------------------- shortcuts
def test_shortcut_aucs(data):
    df, plan = data
    rng = np.random.default_rng(6)
    y = df.label.to_numpy()
    df2 = df.assign(radius=20 + 8 * y + rng.normal(0, 2, len(df)), view=np.where(np.arange(len(df)) % 2, "CC", "MLO"),
                    source="mias")
    meta = pd.DataFrame({"roi_id": df.roi_id[::-1].to_numpy(), "scale": 1.0,
                         "mean_intensity": rng.random(len(df))})
    t = shortcut_aucs(meta, df2, plan, n_boot=200)
    assert t.feature.tolist()[0] == "radius"
    assert set(t.feature) == {"radius", "view", "mean_intensity"}   # constants skipped
    row = t.set_index("feature")
    assert row.loc["radius", "auc"] > 0.9 and row.loc["radius", "ci_lo"] > 0.8
    assert row.loc["view", "kind"] == "categorical"
    assert row.loc["mean_intensity", "auc"] < 0.75
    # meta is aligned by roi_id, not by position: same result as an ordered table
    t2 = shortcut_aucs(meta.iloc[::-1].reset_index(drop=True), df2, plan, n_boot=200)
    pd.testing.assert_frame_equal(t, t2)


# ---------------------------------------------------------------- permutation test
def test_patient_level_permutation_keeps_structure():
    df = manifest(30, 3, seed=1)
    df.loc[df.patient_id == "p0", "label"] = [0, 1, 1]   # a mixed patient keeps a mixed pattern
    lab = permute_labels_by_patient(df, np.random.default_rng(0))
    assert lab.sum() == df.label.sum()
    per = pd.Series(lab).groupby(df.patient_id.to_numpy()).agg(lambda s: tuple(s))
    orig = df.groupby("patient_id").label.agg(tuple)
    assert sorted(per.tolist()) == sorted(orig.tolist())
    assert (lab != df.label.to_numpy()).any()


def test_permutation_test_noise_vs_signal(data):
    df, plan = data
    rng = np.random.default_rng(7)
    noise = rng.normal(size=(len(df), 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        r0 = permutation_test(noise, df, plan, n_permutations=40, seed=1)
        signal = noise + 1.5 * df.label.to_numpy()[:, None]
        r1 = permutation_test(signal, df, plan, n_permutations=40, seed=1)
    assert r0["p_value"] > 0.05
    assert r1["p_value"] < 0.05 and r1["p_value"] == pytest.approx(1 / 41)
    assert r1["observed_auc"] > 0.8
    for r in (r0, r1):
        assert r["null_aucs"].shape == (40,)
        assert r["p_value"] == (1 + (r["null_aucs"] >= r["observed_auc"]).sum()) / 41
    assert abs(np.mean(r1["null_aucs"]) - 0.5) < 0.1


def test_permutation_fast_path_equals_full_rerun(data):
    """The null AUCs equal a full fit_predict_oof rerun on the same permuted labels."""
    df, plan = data
    rng = np.random.default_rng(8)
    X = rng.normal(df.label.to_numpy()[:, None] * 0.5, 1.0, size=(len(df), 2))
    r = permutation_test(X, df, plan, n_permutations=3, seed=5)
    perm_rng = np.random.default_rng(5)
    for i in range(3):
        d = df.assign(label=permute_labels_by_patient(df, perm_rng))
        o = fit_predict_oof(X, d, plan, C=1.0)
        assert r["null_aucs"][i] == pytest.approx(skm.roc_auc_score(o.label, o.prob), abs=1e-9)
    o = fit_predict_oof(X, df, plan, C=1.0)
    assert r["observed_auc"] == pytest.approx(skm.roc_auc_score(o.label, o.prob))


def test_texture_baseline_end_to_end():
    """Rough (malignant) vs smooth (benign) synthetic ROIs: the texture baseline separates them."""
    rng = np.random.default_rng(9)
    df = manifest(24, 1, seed=2)
    y = df.label.to_numpy()
    base = rng.normal(size=(24, 32, 32))
    from scipy.ndimage import gaussian_filter
    smooth = np.stack([gaussian_filter(b, 3) for b in base])
    rois = np.where(y[:, None, None] == 1, 0.5 * base + smooth, smooth)
    X = texture_features(rois, size=32, index=df.roi_id)
    assert list(X.index) == df.roi_id.tolist()
    oof = fit_predict_oof(X, df, make_split_plan(df, n_folds=3, seed=1), C=1.0)
    assert skm.roc_auc_score(oof.label, oof.prob) > 0.9
