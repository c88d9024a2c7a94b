"""Clustered comparisons, operating points, calibration, subgroups (mammodecomp.stats).

Numbers are held to independent references (scikit-learn, DeLong, brute force)
and the tests' error rates and coverages to simulations with a known truth:
two views per patient whose errors share a patient effect, the case where
counting ROIs as independent goes wrong.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from scipy.stats import norm
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression

from mammodecomp import stats as S
from mammodecomp.errors import InputError
from mammodecomp.metrics import bootstrap_auc_ci, delong_cov, delong_test


def _scores(n, seed, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    z = rng.normal(y * 1.0, 1.0)
    if ties:
        z = np.round(z, 1)
    return y, z


def two_view_null(rng, P=100, mu=1.5, su=0.5, sv=1.0, se=0.5):
    """P patients x 2 views, one label per patient; two arms with the same
    distribution (equal true AUC), each with a patient effect shared by the
    patient's views (sv) and one shared by both arms (su)."""
    lab = rng.integers(0, 2, P)
    lab[:2] = [0, 1]
    y = np.repeat(lab, 2)
    g = np.repeat(np.arange(P), 2)
    u = np.repeat(rng.normal(0, su, P), 2)
    s1 = mu * y + u + np.repeat(rng.normal(0, sv, P), 2) + rng.normal(0, se, 2 * P)
    s2 = mu * y + u + np.repeat(rng.normal(0, sv, P), 2) + rng.normal(0, se, 2 * P)
    return y, s1, s2, g


# ---------------------------------------------------------------- references
@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_operating_points_equal_sklearn(seed, ties):
    y, z = _scores(300, seed, ties)
    p = expit(z)
    fpr, tpr, thr = skm.roc_curve(y, p)
    assert S.sens_at_spec(y, p)[0] == tpr[fpr <= 0.1 + 1e-12].max()
    assert S.spec_at_sens(y, p)[0] == (1 - fpr[tpr >= 0.9 - 1e-12]).max()
    # brute force over every threshold
    best = max(np.mean(p[y == 1] >= t) for t in np.unique(p) if np.mean(p[y == 0] < t) >= 0.9)
    assert S.sens_at_spec(y, p)[0] == pytest.approx(best, abs=1e-12)
    for m in (0.1, 0.2, 0.5):
        assert S.partial_auc(y, p, max_fpr=m)[0] == pytest.approx(skm.roc_auc_score(y, p, max_fpr=m), abs=1e-12)
    assert S.brier(y, p)[0] == pytest.approx(skm.brier_score_loss(y, p), abs=1e-14)


def test_weighted_statistics_equal_duplicated_rows():
    """Weight c on a row == the row repeated c times (what the bootstrap relies on)."""
    y, z = _scores(120, 3, ties=True)
    p = expit(z)
    w = np.random.default_rng(0).integers(0, 4, y.size)
    w[:2] = 1
    yy, pp = np.repeat(y, w), np.repeat(p, w)
    W = w[None].astype(float)
    assert S.sens_at_spec(y, p, W)[0] == pytest.approx(S.sens_at_spec(yy, pp)[0])
    assert S.spec_at_sens(y, p, W)[0] == pytest.approx(S.spec_at_sens(yy, pp)[0])
    assert S.partial_auc(y, p, W)[0] == pytest.approx(skm.roc_auc_score(yy, pp, max_fpr=0.2))
    assert S.ece(y, p, W)[0] == pytest.approx(S.ece(yy, pp)[0])
    c1, c2 = S.calibration_fit(y, z, W), S.calibration_fit(yy, np.repeat(z, w))
    assert c1["slope"][0] == pytest.approx(c2["slope"][0], rel=1e-8)


def test_calibration_equals_sklearn_and_brute_force():
    y, z = _scores(400, 4)
    z = 0.7 * z - 0.2
    p = expit(z)
    c = S.calibration_fit(y, z)
    lr = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(z[:, None], y)
    assert c["slope"][0] == pytest.approx(lr.coef_[0, 0], rel=1e-6)
    # calibration in the large: the intercept with the logit as offset, by a grid + 1-D minimiser
    from scipy.optimize import minimize_scalar
    nll = lambda a: -np.sum(y * np.log(expit(a + z)) + (1 - y) * np.log(1 - expit(a + z)))  # noqa: E731
    assert c["intercept"][0] == pytest.approx(minimize_scalar(nll, bounds=(-5, 5), method="bounded",
                                                              options={"xatol": 1e-10}).x, abs=1e-6)
    # ECE from scikit-learn's calibration curve and the same bins' counts
    pt, pp = calibration_curve(y, p, n_bins=10, strategy="uniform")
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, 11)[1:-1], p), minlength=10)
    assert S.ece(y, p)[0] == pytest.approx(np.sum(counts[counts > 0] / y.size * np.abs(pt - pp)), abs=1e-12)
    # separable classes: no finite slope, reported as NaN not a huge number
    assert np.isnan(S.calibration_fit([0, 0, 1, 1], [-1.0, -0.5, 0.5, 1.0])["slope"][0])


def test_obuchowski_is_delong_with_one_roi_per_patient():
    y, z = _scores(150, 5, ties=True)
    z2 = z + np.random.default_rng(1).normal(0, 1, z.size)
    a, c = S.obuchowski_cov(y, np.stack([z, z2]), np.arange(y.size))
    a0, c0 = delong_cov(y, z, z2)
    np.testing.assert_allclose(a, a0)
    np.testing.assert_allclose(c, c0, rtol=1e-10)
    r = S.compare_aucs(y, z, z2)
    d = delong_test(y, z, z2)
    assert r["test"] == "delong" and r["p"] == pytest.approx(d["p"]) and r["diff"] == pytest.approx(d["diff"])
    assert set(r) >= {"auc1", "auc2", "diff", "ci", "p", "test"}
    assert S.compare_aucs(y, z, z2, groups=np.arange(y.size))["test"] == "delong"


def test_obuchowski_variance_matches_the_patient_bootstrap():
    """On one large clustered data set the analytical variance of the difference
    is the patient bootstrap's (within Monte-Carlo error), and DeLong's is smaller."""
    y, s1, s2, g = two_view_null(np.random.default_rng(7), P=400)
    o = S.compare_aucs(y, s1, s2, g)
    b = S.compare_aucs(y, s1, s2, g, method="bootstrap", n_boot=2000, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = S.compare_aucs(y, s1, s2, g, method="delong")
    assert (o["test"], b["test"], d["test"]) == ("obuchowski", "patient-bootstrap", "delong")
    assert o["se"] == pytest.approx(b["se"], rel=0.1)
    assert d["se"] < 0.85 * o["se"]
    assert o["diff"] == d["diff"] == pytest.approx(b["diff"], abs=1e-12)


def test_compare_aucs_bad_input():
    with pytest.raises(InputError, match="groups has 3"):
        S.compare_aucs([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], groups=[1, 2, 3])
    with pytest.raises(InputError, match="method"):
        S.compare_aucs([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], method="x")
    with pytest.raises(InputError, match="2 patients with each class"):
        S.compare_aucs([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], [0.2, 0.1, 0.3, 0.4], groups=[1, 1, 2, 2])


# ---------------------------------------------------------------- null rejection rates
N_NULL = 500


def test_clustered_comparison_holds_its_level_under_the_null():
    rng = np.random.default_rng(0)
    rej = {"obuchowski": 0, "delong": 0}
    for _ in range(N_NULL):
        y, s1, s2, g = two_view_null(rng)
        rej["obuchowski"] += S.compare_aucs(y, s1, s2, g)["p"] < 0.05
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rej["delong"] += S.compare_aucs(y, s1, s2, g, method="delong")["p"] < 0.05
    rate = {k: v / N_NULL for k, v in rej.items()}
    msg = (f"rejection at alpha 0.05 over {N_NULL} null studies (100 patients x 2 views): "
           f"Obuchowski {rate['obuchowski']:.3f}, ROI-level DeLong {rate['delong']:.3f}")
    print(msg)
    assert 0.03 <= rate["obuchowski"] <= 0.07, msg
    assert rate["delong"] > 0.07, msg        # the reason for the clustered test


def test_patient_bootstrap_comparison_holds_its_level_under_the_null():
    rng = np.random.default_rng(1)
    rej = dl = 0
    for k in range(N_NULL):
        y, s1, s2, g = two_view_null(rng)
        rej += S.compare_aucs(y, s1, s2, g, method="bootstrap", n_boot=100, seed=k)["p"] < 0.05
        dl += delong_test(y, s1, s2)["p"] < 0.05
    msg = (f"rejection at alpha 0.05 over {N_NULL} null studies: paired patient bootstrap (100 draws) "
           f"{rej / N_NULL:.3f}, ROI-level DeLong {dl / N_NULL:.3f}")
    print(msg)
    assert 0.03 <= rej / N_NULL <= 0.07, msg


def _nb_null_study(rng, P=60, reps=5, k=5):
    """Two least-squares scorers, each on two features of equal strength, under
    repeated patient-grouped k-fold CV: the per-fold AUC differences and sizes.
    All repeats x folds at once: one weighted normal equation per fold, AUCs by
    counting pairs."""
    lab = rng.integers(0, 2, P)
    lab[:2] = [0, 1]
    y = np.repeat(lab, 2).astype(float)
    X = y[:, None] + np.repeat(rng.normal(0, 1.0, (P, 4)), 2, axis=0) + rng.normal(0, 0.7, (2 * P, 4))
    fold = np.concatenate([np.repeat(rng.permutation(P) % k, 2)[None] for _ in range(reps)])   # (reps, n)
    te = (fold[:, None, :] == np.arange(k)[None, :, None]).reshape(reps * k, -1)              # (F, n)
    tr = ~te
    aucs = []
    for cols in ((0, 1), (2, 3)):
        A = np.c_[np.ones(y.size), X[:, cols]]
        M = np.einsum("fn,ni,nj->fij", tr, A, A)
        coef = np.linalg.solve(M, np.einsum("fn,ni,n->fi", tr, A, y)[..., None])[..., 0]
        s = coef @ A.T                                                                          # (F, n)
        gt = (s[:, :, None] > s[:, None, :]) + 0.5 * (s[:, :, None] == s[:, None, :])
        pair = te[:, :, None] & te[:, None, :] & (y[:, None] == 1)[None] & (y[None, :] == 0)[None]
        with np.errstate(invalid="ignore"):
            aucs.append((gt * pair).sum((1, 2)) / pair.sum((1, 2)))
    d = aucs[0] - aucs[1]
    nt = te.sum(1).mean()
    return d[np.isfinite(d)], y.size - nt, nt


def test_nadeau_bengio_holds_its_level_under_the_null():
    rng = np.random.default_rng(2)
    rej = naive = 0
    for _ in range(N_NULL):
        d, ntr, nte = _nb_null_study(rng)
        rej += S.corrected_resampled_ttest(d, ntr, nte)["p"] < 0.05
        naive += S.corrected_resampled_ttest(d, 1e12, 1e-12)["p"] < 0.05   # uncorrected t over folds
    msg = (f"rejection at alpha 0.05 over {N_NULL} null 5x5-CV studies: corrected resampled t "
           f"{rej / N_NULL:.3f}, uncorrected t over the 25 folds {naive / N_NULL:.3f}")
    print(msg)
    assert 0.03 <= rej / N_NULL <= 0.07, msg


def test_corrected_ttest_formula():
    d = np.array([0.02, 0.01, 0.03, 0.0, 0.02, -0.01])
    r = S.corrected_resampled_ttest(d, 90, 10)
    se = np.sqrt((1 / 6 + 10 / 90) * d.var(ddof=1))
    from scipy.stats import t
    assert r["se"] == pytest.approx(se) and r["p"] == pytest.approx(2 * t.sf(d.mean() / se, 5))
    with pytest.raises(InputError, match="2 folds"):
        S.corrected_resampled_ttest([0.1], 10, 2)


# ---------------------------------------------------------------- CI coverage with a known truth
N_COV = 500


def _cov_study(rng, P=150, mu=1.2, su=0.8, se=0.6):
    lab = rng.integers(0, 2, P)
    lab[:2] = [0, 1]
    y = np.repeat(lab, 2).astype(float)
    g = np.repeat(np.arange(P), 2)
    s = mu * y + np.repeat(rng.normal(0, su, P), 2) + rng.normal(0, se, 2 * P)
    return y, s, g


def _coverage(stat, truth, study, n_boot, seed):
    rng = np.random.default_rng(seed)
    hit = 0
    for k in range(N_COV):
        y, s, g = study(rng)
        lo, hi = S.patient_bootstrap(stat, y, s, g, n_boot=n_boot, seed=k)["ci"]
        hit += lo <= truth <= hi
    return hit / N_COV


def test_auc_ci_covers_the_truth():
    sd = np.hypot(0.8, 0.6)
    truth = norm.cdf(1.2 / (sd * np.sqrt(2)))
    cov = _coverage(S._auc_stat, truth, _cov_study, 200, 10)
    print(f"patient-bootstrap 95% CI of the AUC: coverage {cov:.3f} over {N_COV} studies (truth {truth:.3f})")
    assert 0.93 <= cov <= 0.97, cov


def test_sensitivity_at_specificity_ci_covers_the_truth():
    sd = np.hypot(0.8, 0.6)
    truth = norm.cdf(1.2 / sd - norm.ppf(0.9))
    cov = _coverage(lambda y, p, W: S.sens_at_spec(y, p, W), truth, _cov_study, 200, 11)
    print(f"patient-bootstrap 95% CI of sensitivity at 90% specificity: coverage {cov:.3f} (truth {truth:.3f})")
    assert 0.93 <= cov <= 0.97, cov


def _cal_study(rng, P=150, a=0.3, b=0.8, rho=0.7):
    """Logits with a patient effect; outcomes with P(y=1|z) = expit(a + b z) exactly
    for every ROI, the two views' outcomes correlated (Gaussian copula)."""
    g = np.repeat(np.arange(P), 2)
    z = np.repeat(rng.normal(0, 1.2, P), 2) + rng.normal(0, 0.5, 2 * P)
    e = np.repeat(rng.normal(0, 1, P), 2) * np.sqrt(rho) + rng.normal(0, 1, 2 * P) * np.sqrt(1 - rho)
    y = (norm.cdf(e) < expit(a + b * z)).astype(float)
    return y, z, g


def test_calibration_slope_ci_covers_the_truth():
    cov = _coverage(S.calibration_slope, 0.8, _cal_study, 200, 12)
    print(f"patient-bootstrap 95% CI of the calibration slope: coverage {cov:.3f} over {N_COV} studies")
    assert 0.93 <= cov <= 0.97, cov


# ---------------------------------------------------------------- run-level summaries
def _oof(rng, P=80, repeats=2):
    rows = []
    lab = rng.integers(0, 2, P)
    eff = rng.normal(0, 1, P)
    for r in range(repeats):
        for i in range(P):
            for v, view in enumerate(("CC", "MLO")):
                z = 1.5 * lab[i] - 0.75 + eff[i] + rng.normal(0, 0.7)
                rows.append({"roi_id": f"p{i}-{view}", "patient_id": f"p{i}", "label": int(lab[i]), "repeat": r,
                             "fold": i % 5, "logit": z, "prob": float(expit(z))})
    return pd.DataFrame(rows)


def test_headline_is_the_repeat_mean_and_one_repeat_matches_bootstrap_auc_ci():
    oof = _oof(np.random.default_rng(3))
    h = S.headline_auc(oof, n_boot=300, seed=4)
    ra = [skm.roc_auc_score(g.label, g.prob) for _, g in oof.groupby("repeat")]
    assert h["auc"] == pytest.approx(np.mean(ra)) and h["repeat_aucs"] == pytest.approx(ra)
    assert h["auc_sd_repeats"] == pytest.approx(np.std(ra, ddof=1))
    ens = oof.groupby("roi_id").agg(label=("label", "first"), prob=("prob", "mean"))
    assert h["ensemble_auc"] == pytest.approx(skm.roc_auc_score(ens.label, ens.prob))
    assert "ensemble" in h["ensemble_definition"] and "mean over 2 repeats" in h["definition"]
    one = oof[oof["repeat"] == 0]
    h1 = S.headline_auc(one, n_boot=300, seed=4)
    assert h1["auc_ci"] == list(bootstrap_auc_ci(one.label, one.prob, one.patient_id, n_boot=300, seed=4))
    assert "ensemble_auc" not in h1 and h1["auc_sd_repeats"] is None


def test_operating_points_calibration_and_subgroups_are_json_ready():
    import json
    rng = np.random.default_rng(5)
    oof = _oof(rng)
    op = S.operating_points(oof, n_boot=100)
    one = oof[oof["repeat"] == 0]
    fpr, tpr, _ = skm.roc_curve(one.label, one.prob)
    assert op["sens_at_90_spec"]["per_repeat"][0] == tpr[fpr <= 0.1 + 1e-12].max()
    assert op["pauc_fpr_0.2"]["per_repeat"][0] == pytest.approx(skm.roc_auc_score(one.label, one.prob, max_fpr=0.2))
    for k in ("sens_at_90_spec", "spec_at_90_sens", "pauc_fpr_0.2", "brier"):
        lo, hi = op[k]["ci"]
        assert lo <= op[k]["estimate"] <= hi
    cal = S.calibration(oof, n_boot=100)
    assert len(cal["curve"]["prob_true"]) == len(cal["curve"]["count"]) and sum(cal["curve"]["count"]) == len(oof)
    man = pd.DataFrame({"roi_id": oof["roi_id"].unique()})
    man["view"] = man["roi_id"].str.split("-").str[1]
    man["laterality"] = np.where(np.arange(len(man)) < 12, "L", "R")   # L: 12 ROIs, too few of a class
    man["source"] = "one"                                               # one level: not a subgroup
    man["density"] = np.linspace(0, 1, len(man))                        # a measure, not a grouping
    sub = S.subgroups(oof, man, n_boot=100)
    assert set(sub) == {"view", "laterality", "density"}
    assert sub["density"]["levels"] == [] and "not categorical" in sub["density"]["skipped"]
    left = next(r for r in sub["laterality"]["levels"] if r["level"] == "L")
    assert left["too_small"] and left["auc"] is None and left["n"] == 12
    cc = next(r for r in sub["view"]["levels"] if r["level"] == "CC")
    ccrows = oof[oof.roi_id.str.endswith("CC")]
    ref = [skm.roc_auc_score(g.label, g.prob) for _, g in ccrows.groupby("repeat")]
    assert cc["auc"] == pytest.approx(np.mean(ref))
    json.dumps([op, cal, sub], allow_nan=False)
