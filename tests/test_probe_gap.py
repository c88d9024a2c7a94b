"""The probe recipe's feature options (mid-level stages, dihedral averaging) and
its C selection by patient-grouped inner CV: fast, offline."""
import numpy as np
import pytest

from mammodecomp.config import TrainConfig, resolve_config
from mammodecomp.errors import InputError
from mammodecomp.probe import fit_probe_fold, probe_features


def _cfg(*extra):
    return resolve_config(recipe="probe", overrides=["data.roi_size=32", "train.threads=1", *extra])


@pytest.fixture(scope="module")
def rois():
    rng = np.random.default_rng(0)
    return rng.random((3, 2, 32, 32)).astype(np.float32)


def test_probe_recipe_defaults_and_config_defaults():
    t = resolve_config(recipe="probe").train
    assert t.probe_stages == [1, 2, 3] and t.probe_tta == "dihedral" and t.probe_select == "inner-cv"
    d = TrainConfig()
    assert d.probe_stages is None and d.probe_tta == "none" and d.probe_select == "val"
    with pytest.raises(InputError):
        resolve_config(recipe="probe", overrides=["train.probe_tta=rot4"])


def test_stage_features_have_mean_and_std_per_stage_and_channel(rois):
    f = probe_features(_cfg("train.probe_tta=none"), rois)
    # EfficientNet-Lite0 stages 1, 2, 3 have 24, 40 and 112 channels; mean + std; 2 input channels
    assert f.shape == (3, 2 * 2 * (24 + 40 + 112)) and np.isfinite(f).all()
    head = probe_features(_cfg("train.probe_tta=none", "train.probe_stages=null"), rois)
    assert head.shape == (3, 2 * 1280)


def test_dihedral_averaging_makes_features_flip_and_rotation_invariant(rois):
    flipped = np.ascontiguousarray(rois[..., ::-1])
    rotated = np.ascontiguousarray(np.rot90(rois, 1, axes=(2, 3)))
    f = probe_features(_cfg(), rois)
    np.testing.assert_allclose(probe_features(_cfg(), flipped), f, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(probe_features(_cfg(), rotated), f, rtol=1e-3, atol=1e-4)
    plain = _cfg("train.probe_tta=none")
    assert not np.allclose(probe_features(plain, flipped), probe_features(plain, rois), rtol=1e-3, atol=1e-4)


def test_features_are_cached_per_option(tmp_path, rois):
    a = probe_features(_cfg("train.probe_tta=none"), rois, tmp_path)
    b = probe_features(_cfg(), rois, tmp_path)
    assert len(list(tmp_path.glob("probe-*.npy"))) == 2 and not np.allclose(a, b)
    np.testing.assert_array_equal(probe_features(_cfg(), rois, tmp_path), b)


def test_bad_stage_index_is_refused(rois):
    with pytest.raises(InputError, match="probe_stages"):
        probe_features(_cfg("train.probe_stages=[1, 9]"), rois)


def _fold_data(seed=0, n_pat=60, dim=40, signal=0.0):
    """Two ROIs per patient with identical features (the views of one lesion)."""
    rng = np.random.default_rng(seed)
    yp = np.tile([0, 1], n_pat // 2)
    fp = rng.normal(size=(n_pat, dim))
    fp[:, 0] += signal * (2 * yp - 1)
    feats, y, groups = np.repeat(fp, 2, 0), np.repeat(yp, 2), np.repeat(np.arange(n_pat), 2)
    pid = np.arange(n_pat)
    test_p, val_p = pid[:12], pid[12:24]
    idx = {name: np.flatnonzero(np.isin(groups, p)) for name, p in
           (("test", test_p), ("val", val_p), ("train", pid[24:]))}
    return feats, y, groups, idx


def test_inner_cv_is_grouped_by_patient():
    # pure noise, each patient twice: an inner CV that split patients would "learn" the duplicates
    feats, y, groups, idx = _fold_data()
    cfg = _cfg()
    res = fit_probe_fold(cfg, feats, y, idx["train"], idx["val"], idx["test"], groups=groups)
    h = res.history.iloc[0]
    assert h["inner_folds"] == 5 and h["inner_cv_auc"] < 0.7
    leaky = fit_probe_fold(cfg, feats, y, idx["train"], idx["val"], idx["test"], groups=np.arange(len(y)))
    assert leaky.history.iloc[0]["inner_cv_auc"] > 0.75     # what the grouping prevents
    with pytest.raises(InputError, match="groups"):
        fit_probe_fold(cfg, feats, y, idx["train"], idx["val"], idx["test"])


def test_inner_cv_refits_on_train_and_val_and_never_reads_test_labels():
    feats, y, groups, idx = _fold_data(signal=1.5)
    cfg = _cfg()
    res = fit_probe_fold(cfg, feats, y, idx["train"], idx["val"], idx["test"], groups=groups)
    y2 = y.copy()
    y2[idx["test"]] = 1 - y2[idx["test"]]
    np.testing.assert_array_equal(
        fit_probe_fold(cfg, feats, y2, idx["train"], idx["val"], idx["test"], groups=groups).test_logits,
        res.test_logits)
    # the validation ROIs are part of the final fit: changing their labels changes the test scores
    y3 = y.copy()
    y3[idx["val"]] = 1 - y3[idx["val"]]
    assert not np.allclose(fit_probe_fold(cfg, feats, y3, idx["train"], idx["val"], idx["test"],
                                          groups=groups).test_logits, res.test_logits)
    # the old selection on the validation split fits on the training part only
    val = _cfg("train.probe_select=val")
    r_val = fit_probe_fold(val, feats, y, idx["train"], idx["val"], idx["test"], groups=groups)
    assert "inner_cv_auc" not in r_val.history.columns
    e = np.log10(res.history.iloc[0]["C"] / cfg.train.probe_C)   # C comes from the grid 10^(-5..0 by 0.5)
    assert -5 - 1e-9 <= e <= 1e-9 and abs(2 * e - round(2 * e)) < 1e-9
