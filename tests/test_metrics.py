"""Metrics against independent references (sklearn, direct O(n^2) DeLong, naive bootstrap)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm
from sklearn import metrics as skm

from mammodecomp.errors import InputError
from mammodecomp.metrics import (auc_score, batchwise_metrics, binary_metrics, bootstrap_auc_ci,
                                 choose_threshold, delong_cov, delong_test, pooled_oof_summary)


def scores(n, seed, sep=1.0, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    z = rng.normal(y * sep, 1.0)
    if ties:
        z = np.round(z, 1)
    return y, 1 / (1 + np.exp(-z))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 80), seed=st.integers(0, 10_000), ties=st.booleans())
def test_auc_matches_sklearn(n, seed, ties):
    y, p = scores(n, seed, ties=ties)
    assert auc_score(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)


def test_binary_metrics_match_sklearn():
    y, p = scores(200, 1, ties=True)
    t = 0.55
    m = binary_metrics(y, p, threshold=t)
    pred = (p >= t).astype(int)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert m["specificity"] == pytest.approx(skm.recall_score(1 - y, 1 - pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert m["loss"] == pytest.approx(skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))
    assert (m["n"], m["n_pos"]) == (200, int(y.sum()))
    # saturated probabilities: the loss is clipped, finite
    assert np.isfinite(binary_metrics([0, 1], [1.0, 0.0])["loss"])
    one = binary_metrics([1, 1], [0.2, 0.9])
    assert np.isnan(one["auc"]) and np.isnan(one["specificity"]) and one["sensitivity"] == 0.5


def test_bad_inputs_raise_one_line():
    for args in (([0, 1], [0.5]), ([0, 2], [0.1, 0.2]), ([0, 1], [0.1, np.nan]), ([], [])):
        with pytest.raises(InputError) as e:
            binary_metrics(*args)
        assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="logits"):
        binary_metrics([0, 1], [-2.0, 3.0])
    with pytest.raises(InputError):
        delong_test([0, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])


def test_choose_threshold():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.45, 0.4, 0.7, 0.9])
    t = choose_threshold(y, p)
    # brute force Youden over candidate thresholds
    best = max(np.unique(p), key=lambda c: ((p >= c) & (y == 1)).sum() / 3 + ((p < c) & (y == 0)).sum() / 3)
    assert t == pytest.approx(best)
    tf = choose_threshold(y, p, rule="f1")
    f1s = {c: skm.f1_score(y, (p >= c).astype(int)) for c in np.unique(p)}
    assert f1s[tf] == pytest.approx(max(f1s.values()))
    with pytest.warns(UserWarning):
        assert choose_threshold([1, 1], [0.3, 0.4]) == 0.5
    with pytest.raises(InputError):
        choose_threshold(y, p, rule="magic")


# ---------------------------------------------------------------- DeLong
def delong_reference(y, p1, p2):
    """DeLong, DeLong & Clarke-Pearson (1988), directly: O(m n) structural components."""
    y = np.asarray(y)
    out = []
    for p in (p1, p2):
        x, z = p[y == 1], p[y == 0]
        psi = (x[:, None] > z[None, :]).astype(float) + 0.5 * (x[:, None] == z[None, :])
        out.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    m, n = (y == 1).sum(), (y == 0).sum()
    v10 = np.stack([o[1] for o in out])
    v01 = np.stack([o[2] for o in out])
    s10 = (v10 - v10.mean(1, keepdims=True)) @ (v10 - v10.mean(1, keepdims=True)).T / (m - 1)
    s01 = (v01 - v01.mean(1, keepdims=True)) @ (v01 - v01.mean(1, keepdims=True)).T / (n - 1)
    return np.array([o[0] for o in out]), s10 / m + s01 / n


@settings(max_examples=25, deadline=None)
@given(n=st.integers(6, 120), seed=st.integers(0, 10_000), ties=st.booleans())
def test_delong_matches_direct_reference(n, seed, ties):
    y, p1 = scores(n, seed, ties=ties)
    y[:4] = [0, 0, 1, 1]
    _, p2 = scores(n, seed + 1, sep=0.3, ties=ties)
    aucs, cov = delong_cov(y, p1, p2)
    ra, rcov = delong_reference(y, p1, p2)
    np.testing.assert_allclose(aucs, ra, atol=1e-12)
    np.testing.assert_allclose(cov, rcov, atol=1e-10)
    assert aucs[0] == pytest.approx(skm.roc_auc_score(y, p1), abs=1e-12)
    r = delong_test(y, p1, p2)
    var = rcov[0, 0] + rcov[1, 1] - 2 * rcov[0, 1]
    assert r["se"] == pytest.approx(np.sqrt(max(var, 0)), abs=1e-10)
    if r["se"] > 0:
        z = (ra[0] - ra[1]) / np.sqrt(var)
        assert r["z"] == pytest.approx(z, rel=1e-9)
        assert r["p"] == pytest.approx(2 * norm.sf(abs(z)), rel=1e-9, abs=1e-300)
        lo, hi = r["ci"]
        assert lo < r["diff"] < hi


def test_delong_identical_and_different():
    y, p = scores(100, 3)
    r = delong_test(y, p, p)
    assert r["diff"] == 0 and r["p"] == 1.0
    # a monotone transform has the same ranks: no difference
    assert delong_test(y, p, np.log(p))["p"] == 1.0
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 150)
    good, bad = y + rng.normal(0, 0.5, 300), y + rng.normal(0, 4, 300)
    assert delong_test(y, good, bad)["p"] < 1e-3


# ---------------------------------------------------------------- bootstrap
def documented_bootstrap_ci(y, p, groups, n_boot, seed, alpha=0.05):
    """bootstrap_auc_ci's documented resampling, redone with np.repeat and sklearn's AUC:
    patients in np.unique order of their ids as strings, multinomial counts from
    default_rng(seed), one-class resamples dropped, percentile interval."""
    y, p = np.asarray(y), np.asarray(p, float)
    uniq, gidx = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    counts = np.random.default_rng(seed).multinomial(uniq.size, np.full(uniq.size, 1 / uniq.size), size=n_boot)
    aucs = []
    for c in counts:
        yy, pp = np.repeat(y, c[gidx]), np.repeat(p, c[gidx])
        if np.unique(yy).size == 2:
            aucs.append(skm.roc_auc_score(yy, pp))
    return list(np.quantile(aucs, [alpha / 2, 1 - alpha / 2]))


def test_bootstrap_matches_naive_resampling():
    """Reproduce the documented resampling with np.repeat and sklearn's AUC."""
    y, p = scores(60, 5, ties=True)
    groups = np.arange(60) // 3
    lo, hi, samples = bootstrap_auc_ci(y, p, groups, n_boot=50, seed=11, return_samples=True)
    uniq, gidx = np.unique(groups.astype(str), return_inverse=True)
    G = uniq.size
    counts = np.random.default_rng(11).multinomial(G, np.full(G, 1 / G), size=50)
    for b in range(50):
        rep = counts[b][gidx]
        yy, pp = np.repeat(y, rep), np.repeat(p, rep)
        ref = skm.roc_auc_score(yy, pp) if np.unique(yy).size == 2 else np.nan
        assert samples[b] == pytest.approx(ref, abs=1e-12, nan_ok=True)
    ok = samples[np.isfinite(samples)]
    assert lo == pytest.approx(np.quantile(ok, 0.025)) and hi == pytest.approx(np.quantile(ok, 0.975))


def test_bootstrap_ci_contains_estimate_and_shrinks():
    widths = []
    for n in (80, 320, 1280):
        y, p = scores(n, 7)
        lo, hi = bootstrap_auc_ci(y, p, np.arange(n), n_boot=1000, seed=0)
        assert lo < auc_score(y, p) < hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] > 2.5  # ~ sqrt(16) = 4 in theory


def test_bootstrap_unit_is_the_patient():
    y, p = scores(100, 8)
    one = bootstrap_auc_ci(y, p, np.arange(100), n_boot=500, seed=4)
    # every patient's ROI duplicated 4 times: the patient bootstrap is unchanged ...
    y4, p4, g4 = np.repeat(y, 4), np.repeat(p, 4), np.repeat(np.arange(100), 4)
    four = bootstrap_auc_ci(y4, p4, g4, n_boot=500, seed=4)
    assert four == pytest.approx(one, abs=1e-12)
    # ... while a ROI-level bootstrap of the duplicated data is falsely narrow
    naive = bootstrap_auc_ci(y4, p4, None, n_boot=500, seed=4)
    assert naive[1] - naive[0] < 0.7 * (one[1] - one[0])


# ---------------------------------------------------------------- Keras batch metrics
def test_batchwise_hand_example():
    eps = 1e-7
    y = [1, 1, 0, 0, 1, 0, 0, 0, 0, 0]
    p = [0.9, 0.2, 0.7, 0.1, 0.6, 0.4, 0.3, 0.8, 0.5, 0.1]   # 0.5 rounds to 0, as K.round does
    m = batchwise_metrics(y, p, batch_size=4)
    # batch 1: pred 1 0 1 0 -> TP 1, positives 2, predicted 2
    r1, p1 = 1 / (2 + eps), 1 / (2 + eps)
    # batch 2: y 1 0 0 0, pred 1 0 0 1 -> TP 1, positives 1, predicted 2
    r2, p2 = 1 / (1 + eps), 1 / (2 + eps)
    # batch 3 (short): y 0 0, pred 0 0 -> 0 / eps = 0 for all three
    r3 = p3 = 0.0
    f = [2 * a * b / (a + b + eps) if a + b > 0 else 0.0 for a, b in ((p1, r1), (p2, r2), (p3, r3))]
    assert m["n_batches"] == 3
    assert m["recall_m"] == pytest.approx((r1 + r2 + r3) / 3, abs=1e-12)
    assert m["precision_m"] == pytest.approx((p1 + p2 + p3) / 3, abs=1e-12)
    assert m["f1_m"] == pytest.approx(sum(f) / 3, abs=1e-12)
    # whole split: TP 2, positives 3, predicted 4
    R, P = 2 / (3 + eps), 2 / (4 + eps)
    assert m["f1"] == pytest.approx(2 * P * R / (P + R + eps), abs=1e-12)
    assert m["f1_m"] < m["f1"] - 0.1   # the batch mean is dragged down by the empty batch


def test_batchwise_equals_whole_with_one_batch():
    y, p = scores(50, 9)
    m = batchwise_metrics(y, p, batch_size=50)
    pred = (p > 0.5).astype(int)
    assert m["f1_m"] == m["f1"]
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred), abs=1e-5)
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred), abs=1e-5)


# ---------------------------------------------------------------- OOF summary
def test_pooled_oof_summary():
    rng = np.random.default_rng(2)
    rows = []
    for r in range(2):
        for i in range(60):
            y = i % 2
            rows.append({"roi_id": f"r{i}", "patient_id": f"p{i // 2}", "label": y, "repeat": r,
                         "fold": i % 3, "prob": float(1 / (1 + np.exp(-rng.normal(2 * y - 1, 1.5))))})
    oof = pd.DataFrame(rows)
    s = pooled_oof_summary(oof, n_boot=300, seed=1)
    ra = [skm.roc_auc_score(g.label, g.prob) for _, g in oof.groupby("repeat")]
    assert s["repeat_aucs"] == pytest.approx(ra)
    # the headline: each repeat pooled over its folds, then the mean over repeats (stats.headline_auc)
    assert s["auc"] == pytest.approx(np.mean(ra)) and s["auc_sd_repeats"] == pytest.approx(np.std(ra, ddof=1))
    assert s["auc_ci"][0] < s["auc"] < s["auc_ci"][1] and "mean over 2 repeats" in s["auc_definition"]
    ens = oof.groupby("roi_id").agg(label=("label", "first"), prob=("prob", "mean"))
    assert s["ensemble_auc"] == pytest.approx(skm.roc_auc_score(ens.label, ens.prob))
    assert {"operating_points", "calibration"} <= set(s) and "subgroups" not in s
    fa = [skm.roc_auc_score(g.label, g.prob) for _, g in oof.groupby(["repeat", "fold"])]
    assert s["fold_auc_mean"] == pytest.approx(np.mean(fa))
    assert s["fold_auc_sd"] == pytest.approx(np.std(fa, ddof=1))
    assert (s["n_rows"], s["n_rois"], s["n_patients"], s["n_repeats"], s["n_folds"]) == (120, 60, 30, 2, 3)
    import json
    json.dumps({k: s[k] for k in ("operating_points", "calibration")}, allow_nan=False)
    json.dumps(s)
    with pytest.raises(InputError, match="twice"):
        pooled_oof_summary(pd.concat([oof, oof.iloc[:1]]))
    with pytest.raises(InputError, match="prob"):
        pooled_oof_summary(oof.drop(columns="prob"))


def test_lesion_level_pools_the_views_of_a_lesion():
    """Two views per lesion: the lesion score is the mean logit; the AUC is over lesions."""
    from mammodecomp.metrics import lesion_level, pooled_oof_summary
    rng = np.random.default_rng(0)
    n = 40
    lab = np.repeat(rng.permutation(np.r_[np.ones(n // 2), np.zeros(n // 2)]).astype(int), 2)
    logit = rng.normal(size=2 * n) + lab
    oof = pd.DataFrame({"roi_id": [f"r{i}" for i in range(2 * n)], "patient_id": np.repeat([f"p{i}" for i in range(n)], 2),
                        "lesion_id": np.repeat([f"l{i:02d}" for i in range(n)], 2), "label": lab, "repeat": 0,
                        "fold": np.repeat(np.arange(n) % 5, 2), "logit": logit, "prob": 1 / (1 + np.exp(-logit))})
    les = lesion_level(oof)
    assert len(les) == n
    np.testing.assert_allclose(les["score"], logit.reshape(n, 2).mean(1))
    from sklearn.metrics import roc_auc_score
    s = pooled_oof_summary(oof, n_boot=100)
    assert s["lesion"]["auc"] == pytest.approx(roc_auc_score(lab[::2], logit.reshape(n, 2).mean(1)))
    assert s["lesion"]["n_lesions"] == n and s["lesion"]["max_rois_per_lesion"] == 2
    assert s["lesion"]["auc_ci"] == pytest.approx(
        documented_bootstrap_ci(lab[::2], logit.reshape(n, 2).mean(1), [f"p{i}" for i in range(n)], 100, 0),
        abs=1e-12)
    # one ROI per lesion, or no lesion column: nothing to pool
    assert "lesion" not in pooled_oof_summary(oof.drop(columns="lesion_id"), n_boot=20)
    assert lesion_level(oof.assign(lesion_id=oof["roi_id"])) is None


def test_manifest_lesion_must_be_one_patient_and_one_label():
    from mammodecomp.manifest import validate_manifest
    df = pd.DataFrame({"roi_id": ["a", "b", "c", "d"], "patient_id": ["p", "p", "q", "q"],
                       "lesion_id": ["x", "x", "y", "y"], "label": [1, 1, 0, 0],
                       "image_path": ["a.png", "b.png", "c.png", "d.png"]})
    assert validate_manifest(df, check_files=False)["lesion_id"].tolist() == ["x", "x", "y", "y"]
    with pytest.raises(InputError, match=r"row 2, field 'lesion_id': lesion 'x' has ROIs of two labels"):
        validate_manifest(df.assign(label=[1, 0, 0, 0]), check_files=False)
    with pytest.raises(InputError, match=r"row 3, field 'lesion_id': lesion 'x' has ROIs of two patients "
                                         r"\(patient_id 'p' in row 1, 'q' here\)"):
        validate_manifest(df.assign(lesion_id=["x", "x", "x", "y"]), check_files=False)
    with pytest.raises(InputError, match=r"row 4, field 'lesion_id': value is missing"):
        validate_manifest(df.assign(lesion_id=["x", "x", "y", None]), check_files=False)


def naive_patient_bootstrap(y, p, groups, n_boot, seed, alpha=0.05):
    """An independent patient bootstrap: draw patients with replacement (own RNG), stack
    their ROIs, AUC by its definition (all positive-negative pairs, ties one half);
    percentile interval."""
    y, p, groups = np.asarray(y), np.asarray(p, float), np.asarray(groups).astype(str)
    pats = np.unique(groups)
    rows = {g: np.flatnonzero(groups == g) for g in pats}
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(n_boot):
        idx = np.concatenate([rows[g] for g in rng.choice(pats, size=pats.size, replace=True)])
        pos, neg = p[idx][y[idx] == 1], p[idx][y[idx] == 0]
        if pos.size and neg.size:
            d = pos[:, None] - neg[None, :]
            aucs.append(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)
    return np.quantile(aucs, [alpha / 2, 1 - alpha / 2])


def test_headline_ci_resamples_patients_not_rois():
    """Six views per patient with nearly the same score: the ROI bootstrap is far too narrow,
    and the pooled summary's CI must be the patient-level one."""
    rng = np.random.default_rng(3)
    n_pat, views = 40, 6
    lab = np.repeat(rng.permutation(np.tile([0, 1], n_pat // 2)), views)
    patient_score = np.repeat(rng.normal(0, 1, n_pat), views) + 0.8 * lab
    prob = 1 / (1 + np.exp(-(patient_score + rng.normal(0, 0.05, n_pat * views))))
    oof = pd.DataFrame({"roi_id": [f"r{i}" for i in range(n_pat * views)],
                        "patient_id": np.repeat([f"p{i}" for i in range(n_pat)], views),
                        "label": lab, "repeat": 0, "fold": np.repeat(np.arange(n_pat) % 5, views), "prob": prob})
    s = pooled_oof_summary(oof, n_boot=2000, seed=0)
    ref_lo, ref_hi = naive_patient_bootstrap(lab, prob, oof["patient_id"], n_boot=2000, seed=12345)
    roi_lo, roi_hi = bootstrap_auc_ci(lab, prob, None, n_boot=2000, seed=0)
    # the case tells the two apart: the ROI-level interval is less than half as wide
    assert roi_hi - roi_lo < 0.5 * (ref_hi - ref_lo)
    # the headline CI agrees with the independent patient bootstrap (Monte Carlo error ~0.01)
    assert s["auc_ci"][0] == pytest.approx(ref_lo, abs=0.02)
    assert s["auc_ci"][1] == pytest.approx(ref_hi, abs=0.02)
    assert (s["n_patients"], s["n_rois"]) == (n_pat, n_pat * views)


# ---------------------------------------------------------------- added for the mutation run (bench/mutation.py)
def test_f1_threshold_when_the_best_point_has_precision_plus_recall_of_one():
    """2 positives in 20, the top score a negative: the F1-best threshold is the first positive's
    score (P = R = 0.5, F1 0.5), not the lowest one (P 0.1, R 1, F1 0.18)."""
    y = np.array([0, 1] + [0] * 17 + [1])
    p = np.linspace(0.95, 0.05, 20)
    t = choose_threshold(y, p, rule="f1")
    assert t == pytest.approx(p[1])
    assert skm.f1_score(y, (p >= t).astype(int)) == pytest.approx(0.5)


def test_lesion_level_without_logits_takes_the_clipped_log_odds_of_saturated_probabilities():
    from scipy.special import logit

    from mammodecomp.metrics import lesion_level
    oof = pd.DataFrame({"roi_id": list("abcd"), "patient_id": list("ppqq"), "lesion_id": list("xxyy"),
                        "label": [1, 1, 0, 0], "repeat": 0, "fold": 0, "prob": [1.0, 0.9, 0.0, 0.2]})
    les = lesion_level(oof)
    np.testing.assert_allclose(les["score"], [(logit(1 - 1e-12) + logit(0.9)) / 2, (logit(1e-12) + logit(0.2)) / 2])


def test_duplicate_roi_error_names_the_first_duplicate_and_its_repeat():
    oof = pd.DataFrame({"roi_id": ["a", "b", "a", "b"], "patient_id": ["p", "q", "p", "q"], "label": [0, 1, 0, 1],
                        "repeat": [0, 0, 1, 1], "fold": [0, 1, 0, 1], "prob": [0.2, 0.7, 0.3, 0.6]})
    dup = pd.concat([oof, oof.iloc[[0]], oof.iloc[[3]]], ignore_index=True)
    with pytest.raises(InputError) as e:
        pooled_oof_summary(dup, n_boot=10)
    assert str(e.value) == "roi 'a' appears twice in repeat 0; each ROI is tested once per repeat"


def test_threshold_of_a_useless_ranking_stays_in_the_unit_interval():
    """Inverted scores: no threshold beats 'call nothing positive' (sklearn's +inf); the
    documented range is [0, 1], so that is 1.0."""
    assert choose_threshold([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 1.0


def test_auc_of_one_class_is_nan_without_a_warning():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(auc_score([1, 1, 1], [0.2, 0.9, 0.5]))
        assert np.isnan(auc_score([0, 0], [0.2, 0.9]))


def test_lesion_table_is_sorted_and_its_auc_ignores_row_order():
    from mammodecomp.metrics import lesion_level
    rng = np.random.default_rng(5)
    n = 30
    lab = np.repeat(np.tile([0, 1], n // 2), 2)
    logit = rng.normal(size=2 * n) + lab
    oof = pd.DataFrame({"roi_id": [f"r{i}" for i in range(2 * n)], "patient_id": np.repeat([f"p{i}" for i in range(n)], 2),
                        "lesion_id": np.repeat([f"l{i:02d}" for i in range(n)], 2), "label": lab, "repeat": 0,
                        "fold": 0, "logit": logit, "prob": 1 / (1 + np.exp(-logit))})
    shuffled = oof.sample(frac=1.0, random_state=1).reset_index(drop=True)
    les = lesion_level(shuffled)
    assert les["lesion_id"].tolist() == [f"l{i:02d}" for i in range(n)]
    pd.testing.assert_frame_equal(les, lesion_level(oof))
    a, b = pooled_oof_summary(oof, n_boot=200)["lesion"], pooled_oof_summary(shuffled, n_boot=200)["lesion"]
    assert a["auc"] == b["auc"] and a["auc_ci"] == pytest.approx(b["auc_ci"], abs=1e-12)
