"""diagnose(): findings, verdict rules and diagnosis.json on hand-built runs."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from mammodecomp.diagnose import DIAGNOSIS_FILE, diagnose
from mammodecomp.rundir import read_run as load_run_files
from mammodecomp.diagnose import split as sp
from mammodecomp.diagnose.attribution import attribution
from mammodecomp.diagnose.curves import fold_curve_stats
from mammodecomp.diagnose.metric import batch_vs_whole
from mammodecomp.diagnose.verdict import rank_causes
from diagnose_support import make_manifest, make_run, make_study

pytestmark = pytest.mark.xdist_group("diagnose")


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    """The question's recipe on a label-sorted manifest, diagnosed once."""
    root = tmp_path_factory.mktemp("seed")
    make_run(root / "run", recipe="seed", label_ordered=True)
    return root / "run", diagnose(root / "run", n_permutations=19, seed=0, max_model_rois=30)


def _f(d, fid):
    return next(f for f in d["findings"] if f["id"] == fid)


def test_seed_run_ranks_capacity_and_contiguous_folds_on_top(seed_run):
    path, d = seed_run
    top = [c["id"] for c in d["verdict"][:3]]
    assert "capacity" in top and "contiguous_folds" in top
    by = {c["id"]: c for c in d["verdict"]}
    assert by["capacity"]["severity"] == "high" and by["contiguous_folds"]["severity"] == "high"
    assert "learning_curves" in by["capacity"]["figures"]
    assert "fold_balance" in by["contiguous_folds"]["figures"]
    # the question's oscillation and last-epoch protocol are named too
    assert {"oscillation", "protocol"} <= set(by)
    assert "leakage" not in by


def test_seed_run_evidence_values(seed_run):
    _, d = seed_run
    cap = _f(d, "capacity.parameters")["values"]
    assert cap["params_per_train_roi"] > 1000 and cap["pretrained"] is False
    assert cap["flops"] > 0 and cap["largest_params"] <= cap["params"]
    full = cap["full_scale"]          # the question's VGG at 320x320x5
    assert round(full["params"] / 1e6, 1) == 241.2
    assert full["largest_layer"] == "fc1" and round(full["largest_params"] / 1e6, 1) == 209.7
    mo = _f(d, "split.manifest_order")["values"]
    assert mo["label_ordered"] and mo["run_used_contiguous"]
    assert [round(x["frac_test"], 2) for x in mo["contiguous_folds"]] == [0.0, 0.5, 1.0]
    osc = _f(d, "training.oscillation")["values"]
    assert osc["oscillating"] and osc["max_ratio"] == pytest.approx(4.6 / 1.8)
    assert any("BatchNorm" in c for c in osc["likely_causes"])
    perm = _f(d, "null.permutation")["values"]
    assert len(perm["null"]) == 19 and 0 < perm["p"] <= 1 and perm["folds"] == "grouped"
    # the chance finding carries the run's own patient-bootstrap CI (summary.json), not a new one
    summary = json.loads((seed_run[0] / "summary.json").read_text())
    ch = _f(d, "null.chance")["values"]
    assert [ch["ci_low"], ch["ci_high"]] == summary["auc_ci"]
    assert ch["auc"] == pytest.approx(summary["auc"], abs=1e-12)
    assert d["errors"] == []


def test_diagnosis_json_matches_return_and_is_strict_json(seed_run):
    path, d = seed_run
    text = (path / DIAGNOSIS_FILE).read_text()
    on_disk = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert on_disk == json.loads(json.dumps(d))
    for f in on_disk["findings"]:
        assert {"id", "family", "title", "severity", "measured", "values", "figure", "meaning", "fix"} <= set(f)
        assert f["severity"] in ("high", "medium", "low", "info", "na", "ok")
        assert f["severity"] in ("ok", "info", "na") or f["fix"], f["id"]


def test_fabricated_shared_patient_and_duplicate_are_listed_exactly(tmp_path):
    info = make_run(tmp_path / "run", recipe="small", share_patient=True, duplicate=True, seed=5)
    run = load_run_files(tmp_path / "run")
    shared = sp.shared_patients(run)
    assert shared.severity == "high"
    assert [p["patient_id"] for p in shared.values[sp.PATIENTS]] == [info["shared_patient"]]
    dup = sp.near_duplicates(run)
    assert dup.severity != "ok"
    assert [{p["roi_a"], p["roi_b"]} for p in dup.values[sp.PAIRS]] == [info["duplicate_pair"]]
    causes = rank_causes([shared, dup])
    assert causes[0]["id"] == "leakage" and causes[0]["severity"] == "high"


def test_clean_grouped_run_has_no_leakage(tmp_path):
    make_run(tmp_path / "run", recipe="small", seed=6)
    run = load_run_files(tmp_path / "run")
    checks = {f.id: f for f in sp.run_split_checks(run)}
    assert checks[sp.SHARED_PATIENTS].values[sp.N_SHARED] == 0
    assert checks[sp.NEAR_DUPLICATES].values[sp.N_PAIRS] == 0
    assert checks[sp.MANIFEST_ORDER].severity == "ok"
    assert not {c["id"] for c in rank_causes(list(checks.values()))} & {"leakage", "contiguous_folds"}


def test_near_duplicate_search_matches_brute_force():
    rng = np.random.default_rng(1)
    imgs = rng.random((40, 48, 48)).astype(np.float32)
    imgs[7] = imgs[3] * 0.8 + 0.1
    imgs[30] = imgs[12] + rng.normal(0, 0.01, (48, 48)).astype(np.float32)
    imgs[20] = 0.5                                    # constant: never a duplicate
    th = sp.thumbnails(imgs)
    pairs, corr = sp.near_duplicate_pairs(th, block=16)   # several blocks
    full = th @ th.T
    brute = {(i, j) for i in range(40) for j in range(i + 1, 40) if full[i, j] > sp.DUPLICATE_CORR}
    assert {tuple(p) for p in pairs.tolist()} == brute == {(3, 7), (12, 30)}
    assert np.all(corr > sp.DUPLICATE_CORR)


def test_curve_stats_on_the_question_swing():
    val = [0.9, 0.8, 0.7, 2.3, 3.3, 3.3, 3.3, 2.7, 1.87, 2.1, 4.4, 4.65, 2.6, 2.2]
    n = len(val)
    h = pd.DataFrame({"epoch": np.arange(1, n + 1), "train_loss": np.linspace(1, 0.1, n),
                      "val_loss": val, "train_auc": np.linspace(0.6, 0.98, n), "val_auc": 0.6})
    s = fold_curve_stats(h)
    assert s["best_epoch"] == 3
    assert s["osc_ratio"] == pytest.approx(4.65 / 1.87)
    assert s["final_gap"] == pytest.approx(0.38)
    flat = fold_curve_stats(h.assign(val_loss=0.5))
    assert flat["osc_ratio"] == 1.0 and flat["osc_rel_change"] == 0.0


def test_batch_averaged_f1_differs_on_ordered_folds(tmp_path):
    # grouped folds, rows inside each test fold sorted by label: ~40 benign rows first, so the
    # first batch of 32 has no positive and scores f1_m = 0
    make_run(tmp_path / "run", recipe="small", n_patients=120, label_ordered=True, signal=3.0, seed=7)
    f = batch_vs_whole(load_run_files(tmp_path / "run"))
    v = f.values
    assert v["batch_size"] == 32 and len(v["folds"]) == 3 and v["n_applicable"] == 3
    assert v["max_gap_f1"] > 0.1 and f.severity == "medium"
    assert all(x["f1_whole"] > 0.7 for x in v["folds"])


def test_batch_f1_on_single_class_or_one_batch_folds_is_not_applicable(seed_run):
    # contiguous folds of a label-sorted manifest: folds 0 and 2 hold one class, fold 1 fits in one batch
    _, d = seed_run
    f = _f(d, "metric.batchwise")
    assert f["severity"] == "na" and f["measured"].startswith("not applicable: ")
    assert [x["reason"] for x in f["values"]["folds"]] == ["one class only", "20 ROIs fit in one batch",
                                                           "one class only"]
    assert f["values"]["n_applicable"] == 0 and f["values"]["max_gap_f1"] is None
    assert "metrics" not in {c["id"] for c in d["verdict"]}


class _OnlyChannel0(nn.Module):
    """logit = mean of normalised channel 0: uses c0 only."""

    def forward_features(self, x):
        return x[:, :1] * 10.0

    def forward_head(self, f, pre_logits=False):
        return f.mean(dim=(1, 2, 3))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def test_occlusion_finds_the_only_used_channel(tmp_path):
    make_run(tmp_path / "run", recipe="small", seed=8)
    run = load_run_files(tmp_path / "run")
    findings = attribution(run, load_model=lambda *a: _OnlyChannel0().eval(), max_rois=40)
    assert [f.id for f in findings] == ["attribution.occlusion", "attribution.gradcam"]
    occ, cams = findings[0].values, findings[1].arrays
    assert occ["n"] == 40
    assert set(occ["drops"]) == {"c0", "c1", "c2"}
    assert occ["drops"]["c1"] == 0.0 and occ["drops"]["c2"] == 0.0
    # c0 set to each fold's training mean: the logit is constant within a fold, so
    # only between-fold differences are left of the AUC
    assert occ["drops"]["c0"] > 0.2 and occ["most_important"] == "c0"
    assert sorted(occ["unused"]) == ["c1", "c2"]
    assert cams["cams"].shape[1:] == (32, 32) and len(cams["rows"]) == len(cams["outcome"])
    assert set(cams["outcome"]) <= {"TP", "FP", "FN", "TN"}


def test_study_measures_the_fix_and_ablates_with_sibling_runs(tmp_path):
    study = make_study(tmp_path / "study")
    d = diagnose(study, n_permutations=0, max_model_rois=30)
    assert d["is_study"] and d["primary"] == "seed"
    by = {c["id"]: c for c in d["verdict"]}
    mf = by["capacity"]["measured_fix"]
    assert mf["to_recipe"] == "small" and mf["diff"] > 0 and mf["n"] == 60
    ab = _f(d, "ablation.channels")["values"]
    assert ab["source"] == "runs"
    pairs = {(c["a"], c["b"]) for c in ab["comparisons"]}
    assert ("components", "raw") in pairs and all(c["recipe"] == "small" for c in ab["comparisons"])
    assert (study / DIAGNOSIS_FILE).is_file()


def test_missing_run_files_name_the_command(tmp_path):
    from mammodecomp.errors import InputError
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="mammodecomp cv"):
        diagnose(tmp_path / "empty", n_permutations=0)


@pytest.mark.xdist_group("diagnose-real")
def test_real_seed_pipeline_run_is_diagnosed(tmp_path):
    """A run written by train.cross_validate (the seed recipe, label-sorted
    synthetic manifest): every step runs, contiguous folds and capacity lead the verdict."""
    from mammodecomp.config import resolve_config
    from mammodecomp.train import cross_validate
    cfg = resolve_config(recipe="seed", overrides=[
        "data.synth.n_patients=24", "data.synth.size=64", "data.roi_size=32", "data.synth.label_ordered=true",
        "train.epochs=2", "cv.n_folds=3", "cv.n_boot=20", "train.threads=1",
        f"decomposition.store={tmp_path}/store"])
    with warnings.catch_warnings():     # one-class folds: the trainer warns about its threshold
        warnings.simplefilter("ignore", UserWarning)
        run = cross_validate(cfg, tmp_path / "seed", progress_bars=False)
    d = diagnose(run, n_permutations=0, max_model_rois=20)
    assert d["errors"] == []
    assert {"contiguous_folds", "capacity"} <= {v["id"] for v in d["verdict"][:2]}
    cap = _f(d, "capacity.parameters")["values"]
    assert cap["model_origin"] == "fold checkpoint" and cap["params_per_train_roi"] > 1000
    assert "capacity" in {c["id"] for c in d["verdict"]}
    assert _f(d, "null.chance")["values"]["vs_chance"] in ("below", "includes")
    occ = _f(d, "attribution.occlusion")["values"]
    assert set(occ["drops"]) == set(d["headline"]["channels"]) and occ["n"] == 20


def test_checks_write_exactly_what_they_declare_and_rules_read_it(seed_run, tmp_path):
    """Every value in a finding is one its check declares; every value a rule reads is there."""
    from mammodecomp.diagnose.checks import written
    from mammodecomp.diagnose.verdict import rules
    study = make_study(tmp_path / "study")
    outs = [seed_run[1], diagnose(study, n_permutations=0, max_model_rois=10)]
    decl = written()
    seen = set()
    for d in outs:
        assert d["errors"] == []
        for f in d["findings"]:
            assert f["id"] in decl, f["id"]
            assert set(f["values"]) <= decl[f["id"]], (f["id"], set(f["values"]) - decl[f["id"]])
            seen.add(f["id"])
            if f["values"].get("skipped"):
                continue
            for r in rules():
                missing = set(r.reads.get(f["id"], ())) - set(f["values"])
                assert not missing, (r.name, f["id"], missing)
    assert seen >= {fid for r in rules() for fid in r.reads}


def test_probe_capacity_is_the_regression_on_pretrained_features(tmp_path):
    """The probe recipe trains a logistic regression on frozen pretrained features:
    its parameters are features + 1, and it is not 'trained from scratch'."""
    from mammodecomp.config import resolve_config
    from mammodecomp.diagnose import capacity as cap
    make_run(tmp_path / "run", recipe="small", seed=9)
    import dataclasses
    run = dataclasses.replace(load_run_files(tmp_path / "run"),
                              config=resolve_config(recipe="probe", overrides=["train.probe_stages=null"]))
    assert run.recipe == "probe"
    f = cap.capacity(run)
    v = f.values
    # tf_efficientnet_lite0's pooled features: 1280 per channel, three channels
    assert v[cap.PROBE_FEATURES] == 3 * 1280 and v[cap.PARAMS] == 3 * 1280 + 1
    assert v[cap.PRETRAINED] is True and f.severity == "info"
    assert v[cap.PARAMS_PER_TRAIN_ROI] == pytest.approx(v[cap.PARAMS] / v[cap.N_TRAIN])
    assert "trained from scratch" not in f.measured


@pytest.mark.parametrize("role", ["val", "train"])
def test_shared_patient_is_found_through_either_fitting_role(role):
    """A patient tested in a fold whose other ROI is in that fold's inner validation (or
    training) part: both roles steer the model, so both leak."""
    from types import SimpleNamespace
    man = pd.DataFrame({"roi_id": [f"r{i}" for i in range(8)],
                        "patient_id": ["a", "a", "b", "c", "d", "e", "f", "g"], "label": [0, 0, 1, 0, 1, 0, 1, 1]})
    plan = pd.DataFrame({"repeat": 0, "fold": np.repeat([0, 1], 8), "roi_id": [f"r{i}" for i in range(8)] * 2,
                         "role": ["test", role, "train", "val", "test", "train", "train", "val",
                                  "train", "train", "test", "train", "train", "test", "val", "train"]})
    f = sp.shared_patients(SimpleNamespace(manifest=man, plan=plan))
    assert f.severity == "high"
    assert f.values[sp.N_SHARED] == 1
    assert f.values[sp.PATIENTS] == [{"patient_id": "a", "folds": ["r0f0"]}]
    assert f.measured.startswith("1 patient(s) have ROIs in both the training and the test part of a fold: a")
    clean = plan.assign(role=plan["role"].where(~((plan["fold"] == 0) & (plan["roi_id"] == "r1")), "test"))
    assert sp.shared_patients(SimpleNamespace(manifest=man, plan=clean)).values[sp.N_SHARED] == 0


@pytest.mark.xdist_group("diagnose-real")
def test_diagnose_finds_the_inputs_of_a_run_made_with_a_relative_store(tmp_path, monkeypatch):
    from mammodecomp.cli import main
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAMMODECOMP_QUIET", "1")
    main(["-q", "cv", "--recipe", "small", "--set", "data.synth.n_patients=16", "--set", "data.synth.size=64",
          "--set", "data.roi_size=32", "--set", "train.epochs=1", "--set", "cv.n_folds=2", "--set", "cv.n_boot=20",
          "--set", "train.threads=1", "--set", "decomposition.store=runs/x/store", "--out", "runs/x/small"])
    main(["diagnose", "runs/x/small", "--permutations", "5", "--model-rois", "8"])
    d = json.loads((tmp_path / "runs" / "x" / "small" / DIAGNOSIS_FILE).read_text())
    assert len(_f(d, "null.permutation")["values"]["null"]) == 5
    assert "n_pairs" in _f(d, "split.near_duplicates")["values"]
