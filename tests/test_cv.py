"""Properties of the split plan (mammodecomp.cv)."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mammodecomp.cv import check_plan, describe_plan, fold_sets, make_split_plan
from mammodecomp.errors import InputError


def seed_kfold_indices(data, k):
    """Transcribed verbatim from the seed question (reference/seed-question.txt)."""
    fold_size = len(data) // k
    indices = np.arange(len(data))
    folds = []
    for i in range(k):
        val_indices = indices[i * fold_size: (i+1) * fold_size]
        train_indices = np.concatenate([indices[:i * fold_size], indices[(i+1) * fold_size:]])
        folds.append((train_indices, val_indices))
    return folds


def make_df(n_patients, rois_per_patient, pos_share=0.4, seed=0, mixed=False):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        lab = int(rng.random() < pos_share)
        for j in range(rois_per_patient if np.isscalar(rois_per_patient) else rois_per_patient[p]):
            lab_j = int(rng.random() < 0.5) if mixed else lab
            rows.append({"roi_id": f"r{p}_{j}", "patient_id": f"p{p}", "label": lab_j})
    return pd.DataFrame(rows)


def quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*a, **k)


def test_grouped_plan_properties():
    df = make_df(60, 2, seed=1)
    plan = make_split_plan(df, n_folds=5, n_repeats=2, seed=3)
    assert list(plan.columns) == ["repeat", "fold", "roi_id", "role", "used_for_selection"]
    assert len(plan) == 2 * 5 * len(df)
    check_plan(plan, df)
    pid = dict(zip(df.roi_id, df.patient_id))
    for (r, f), part in plan.groupby(["repeat", "fold"]):
        assert part.roi_id.is_unique and set(part.roi_id) == set(df.roi_id)
        p = {role: {pid[i] for i in part.roi_id[part.role == role]} for role in ("train", "val", "test")}
        assert not (p["train"] & p["test"]) and not (p["val"] & p["test"]) and not (p["train"] & p["val"])
        assert (part.used_for_selection == (part.role == "val")).all()
        # inner validation is about inner_fraction of the outer training part
        n_val, n_fit = (part.role == "val").sum(), (part.role != "test").sum()
        assert 0.1 < n_val / n_fit < 0.3
    d = describe_plan(plan, df)
    assert len(d) == 10 and (d.shared_patients == 0).all()
    assert (d.n_train + d.n_val + d.n_test == len(df)).all()
    for r, prep in plan.groupby("repeat"):
        tested = prep.roi_id[prep.role == "test"]
        assert tested.is_unique and set(tested) == set(df.roi_id)
    # repeats differ
    t0 = plan[(plan.repeat == 0) & (plan.role == "test")].set_index("roi_id").fold
    t1 = plan[(plan.repeat == 1) & (plan.role == "test")].set_index("roi_id").fold
    assert (t0.sort_index() != t1.sort_index()).any()


def test_deterministic_by_seed():
    df = make_df(40, 2, seed=2)
    a = make_split_plan(df, n_folds=4, seed=7)
    b = make_split_plan(df, n_folds=4, seed=7)
    c = make_split_plan(df, n_folds=4, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_stratification_roughly_held():
    df = make_df(200, 1, pos_share=0.3, seed=4)
    plan = make_split_plan(df, n_folds=5, seed=0)
    prev = df.label.mean()
    lab = dict(zip(df.roi_id, df.label))
    for f, part in plan[plan.role == "test"].groupby("fold"):
        n_pos = sum(lab[i] for i in part.roi_id)
        assert abs(n_pos - prev * len(part)) <= 2
        assert abs(len(part) - 40) <= 2


def test_contiguous_equals_seed_code():
    df = make_df(24, 2, seed=5)   # 48 rows: 48 % 5 = 3 never tested; fold size 9 splits patients
    assert len(df) == 48
    plan = make_split_plan(df, n_folds=5, scheme="contiguous")
    ref = seed_kfold_indices(np.zeros((len(df), 3)), 5)
    ids = df.roi_id.to_numpy()
    for f, (tr, va) in enumerate(ref):
        s = fold_sets(plan, 0, f)
        assert s["test"].tolist() == ids[va].tolist()
        assert s["train"].tolist() == ids[tr].tolist()
        assert s["val"].tolist() == ids[va].tolist()  # the seed validates on its test fold
    tested = set(plan.roi_id[plan.role == "test"])
    assert set(ids) - tested == set(ids[-3:])
    assert (plan.role != "val").all()
    check_plan(plan, df, scheme="contiguous")
    check_plan(plan, df)   # inferred from the plan: it selects on its test fold
    check_plan(plan.drop(columns="used_for_selection"), df)   # no 'val' rows: seed-like too
    # the seed's split shares patients between train and test; the grouped check says so
    with pytest.raises(InputError, match="patient"):
        check_plan(plan, df, scheme="grouped")
    assert describe_plan(plan, df)["shared_patients"].sum() > 0
    with pytest.raises(InputError, match="n_repeats"):
        make_split_plan(df, n_folds=5, n_repeats=2, scheme="contiguous")


def test_bad_inputs():
    df = make_df(4, 1, seed=0).assign(label=[0, 1, 0, 1])
    with pytest.raises(InputError, match="4 patients for n_folds=5"):
        make_split_plan(df, n_folds=5)
    df = make_df(30, 1).assign(label=[1, 1] + [0] * 28)
    with pytest.raises(InputError, match="class 1 has 2 patients"):
        make_split_plan(df, n_folds=3)
    df = make_df(30, 1).assign(label=[1] * 5 + [0] * 25)
    with pytest.warns(UserWarning, match="class 1 has only 5 patients"):
        make_split_plan(df, n_folds=3, inner_fraction=0.5)
    for kw in ({"scheme": "random"}, {"n_folds": 1}, {"inner_fraction": 0.0}, {"inner_fraction": 0.7}):
        with pytest.raises(InputError):
            make_split_plan(make_df(30, 1), **kw)
    with pytest.raises(InputError, match="label"):
        make_split_plan(make_df(30, 1).drop(columns="label"))
    with pytest.raises(InputError, match="duplicate"):
        make_split_plan(make_df(30, 1).assign(roi_id="x"))
    with pytest.raises(InputError) as e:
        make_split_plan(make_df(30, 1).assign(patient_id=None))
    assert "\n" not in str(e.value) and "patient_id" in str(e.value)


def test_check_plan_catches_breaches():
    df = make_df(30, 2, seed=6)
    plan = quiet(make_split_plan, df, n_folds=3, seed=0)
    check_plan(plan, df)
    # a test roi moved to another fold's test too: overlap
    bad = plan.copy()
    rid = bad.roi_id[(bad.fold == 0) & (bad.role == "test")].iloc[0]
    bad.loc[(bad.fold == 1) & (bad.roi_id == rid), "role"] = "test"
    with pytest.raises(InputError, match="also tested|patient"):
        check_plan(bad, df)
    # a roi never tested
    bad = plan.copy()
    bad.loc[(bad.fold == 0) & (bad.roi_id == rid), "role"] = "train"
    with pytest.raises(InputError):
        check_plan(bad, df)
    # a missing row
    with pytest.raises(InputError, match="has no row"):
        check_plan(plan.iloc[1:], df)
    # test rows used for selection
    bad = plan.copy()
    bad.loc[bad.role == "test", "used_for_selection"] = True
    with pytest.raises(InputError, match="selection"):
        check_plan(bad, df, scheme="grouped")
    # a grouped plan that lost its val rows is caught when the scheme is given
    bad = plan.assign(role=plan.role.replace("val", "train")).drop(columns="used_for_selection")
    with pytest.raises(InputError, match="no val rows"):
        check_plan(bad, df, scheme="grouped")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_patients=st.integers(4, 40), k=st.integers(2, 5), max_rois=st.integers(1, 3),
       pos=st.floats(0.1, 0.9), seed=st.integers(0, 10_000), mixed=st.booleans(),
       inner=st.sampled_from([0.2, 0.25, 0.5]))
def test_grouped_plan_hypothesis(n_patients, k, max_rois, pos, seed, mixed, inner):
    rng = np.random.default_rng(seed)
    df = make_df(n_patients, rng.integers(1, max_rois + 1, n_patients), pos_share=pos, seed=seed, mixed=mixed)
    per_class = df.groupby("label").patient_id.nunique().reindex([0, 1], fill_value=0)
    try:
        plan = quiet(make_split_plan, df, n_folds=k, n_repeats=2, seed=seed, inner_fraction=inner)
    except InputError as e:
        msg = str(e)
        assert "\n" not in msg
        # only the documented impossibilities
        assert (df.patient_id.nunique() < k or per_class.min() < k or "inner" in msg or "empty" in msg), msg
        return
    assert per_class.min() >= k
    check_plan(plan, df)
    again = quiet(make_split_plan, df, n_folds=k, n_repeats=2, seed=seed, inner_fraction=inner)
    pd.testing.assert_frame_equal(plan, again)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 60), k=st.integers(2, 8))
def test_contiguous_hypothesis(n, k):
    df = pd.DataFrame({"roi_id": [f"r{i}" for i in range(n)]})
    if n < k:
        with pytest.raises(InputError):
            make_split_plan(df, n_folds=k, scheme="contiguous")
        return
    plan = make_split_plan(df, n_folds=k, scheme="contiguous")
    check_plan(plan, df, scheme="contiguous")
    for f, (tr, va) in enumerate(seed_kfold_indices(np.arange(n), k)):
        s = fold_sets(plan, 0, f)
        assert s["test"].tolist() == [f"r{i}" for i in va]
        assert s["train"].tolist() == [f"r{i}" for i in tr]
    assert (plan.role == "test").sum() == k * (n // k)


# ---------------------------------------------------------------- added for the mutation run (bench/mutation.py)
def _msg(fn, *a, **k):
    with pytest.raises(InputError) as e:
        quiet(fn, *a, **k)
    return str(e.value)


def test_input_errors_name_the_first_bad_row_exactly():
    df = make_df(10, 1, seed=0)
    assert _msg(make_split_plan, df.iloc[:0]) == "manifest has no rows; nothing to split"
    assert _msg(make_split_plan, df.iloc[:0], scheme="contiguous") == "manifest has no rows; nothing to split"
    missing = df.assign(patient_id=df["patient_id"].where(df.index != 2, None))
    assert _msg(make_split_plan, missing) == "row 3, field 'patient_id': value is missing"
    dup = df.assign(roi_id=["a", "b", "a", "b", *[f"x{i}" for i in range(6)]])
    assert _msg(make_split_plan, dup) == "field 'roi_id': duplicate roi_id 'a'; roi_id must be unique"
    plan = make_split_plan(make_df(20, 1, seed=1), n_folds=2)
    bad = plan.assign(role=plan["role"].where(plan.index != 3, "holdout").where(plan.index != 5, "other"))
    assert _msg(check_plan, bad, make_df(20, 1, seed=1)) == \
        "field 'role': role 'holdout' is not one of ['train', 'val', 'test']"
    assert _msg(fold_sets, plan, 0, 7) == "the plan has no repeat 0 fold 7"


def test_an_inner_training_part_of_one_roi_is_legal():
    """6 patients (two with 2 ROIs), 2 folds, inner_fraction 0.5: the first inner split leaves
    one ROI to train on in each fold. Degenerate, but not impossible: the plan is made."""
    n = [2, 2, 1, 1, 1, 1]
    df = pd.DataFrame([{"roi_id": f"r{p}_{j}", "patient_id": f"p{p}", "label": p % 2}
                       for p in range(6) for j in range(n[p])])
    plan = quiet(make_split_plan, df, n_folds=2, inner_fraction=0.5, seed=0)
    check_plan(plan, df)
    assert plan.groupby(["fold", "role"]).size().to_dict() == {
        (0, "test"): 4, (0, "train"): 1, (0, "val"): 3, (1, "test"): 4, (1, "train"): 1, (1, "val"): 3}


def test_one_class_inner_validation_is_warned_about():
    """4 patients of 2 ROIs, 2 folds, inner_fraction 0.5: each outer training part has one
    patient per class, so the inner validation patient is of one class."""
    df = pd.DataFrame({"roi_id": list("abcdefgh"), "patient_id": list("ppqqrrss"), "label": [0, 0, 1, 1] * 2})
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        plan = make_split_plan(df, n_folds=2, inner_fraction=0.5)
    check_plan(plan, df)
    msgs = [str(x.message) for x in w]
    assert "repeat 0 fold 0: the inner validation set has one class only; validation AUC is undefined there" in msgs
    assert "repeat 0 fold 1: the inner validation set has one class only; validation AUC is undefined there" in msgs


def test_outer_training_part_with_exactly_as_many_patients_as_inner_splits():
    """10 patients of 3 ROIs in 2 folds: 5 training patients per fold for inner_fraction 0.2's
    5 inner splits, one validation patient each."""
    df = make_df(10, 3, seed=3).assign(label=np.repeat([0, 1] * 5, 3))
    plan = quiet(make_split_plan, df, n_folds=2, inner_fraction=0.2)
    check_plan(plan, df)
    pid = dict(zip(df.roi_id, df.patient_id))
    fit = plan[plan.role != "test"]
    assert (fit.groupby("fold").roi_id.apply(lambda r: len({pid[i] for i in r})) == 5).all()
    assert (plan[plan.role == "val"].groupby("fold").roi_id.apply(lambda r: len({pid[i] for i in r})) == 1).all()
