"""The verdict's rules, table-driven: each rule fed findings with and without its own evidence.

No run directory is needed: findings are built directly, with every value
their check declares (None unless given), as the checks write them.
"""
from __future__ import annotations

import pytest

from mammodecomp.diagnose import Finding
from mammodecomp.diagnose import ablation as ab
from mammodecomp.diagnose import capacity as cap
from mammodecomp.diagnose import curves as cu
from mammodecomp.diagnose import features as fe
from mammodecomp.diagnose import metric as me
from mammodecomp.diagnose import split as sp
from mammodecomp.diagnose.checks import families, written
from mammodecomp.diagnose.verdict import rank_causes, rules

DECLARED = written()


def F(fid: str, severity: str = "ok", **values) -> Finding:
    """A finding as its check writes it: every declared value, None unless given."""
    base = {n: None for n in DECLARED[fid] - {"skipped", "reason"}}
    assert set(values) <= DECLARED[fid], set(values) - DECLARED[fid]
    return Finding(fid, fid.split(".")[0], fid, severity, "measured", values={**base, **values},
                   fix="fix" if severity in ("high", "medium", "low") else "")


def gap(train, val, n=3, stale=0.0, on_test=False, sev="ok"):
    return F(cu.GAP, sev, final_gap=train - val if n else 0.0, final_train_auc=train, final_val_auc=val,
             n_folds_with_gap=n, stale_epochs=stale, validated_on_test=on_test)


def params(ppr, pretrained=False, probe=None, sev="info"):
    return F(cap.PARAMETERS, sev, params_per_train_roi=ppr, pretrained=pretrained, probe_features=probe)


def chance(state, auc=0.7, lo=0.6, hi=0.8):
    return F(fe.CHANCE, "ok" if state == "above" else "high", auc=auc, ci_low=lo, ci_high=hi, vs_chance=state)


def perm(p, sev):
    return F(fe.PERMUTATION, sev, p=p, model=fe.NULL_MODEL, observed=0.5, n_permutations=100)


def contiguous(used=True, sev="high"):
    return F(sp.MANIFEST_ORDER, sev, run_used_contiguous=used, contiguous_max_deviation=0.5, label_ordered=True)


BASELINE_BEATS = F(fe.BASELINE, "high", best_input="raw", comparisons={"raw": {
    "baseline_auc": 0.8, "recipe_auc": 0.6, "diff": -0.2, "ci": [-0.3, -0.1], "p": 0.01, "n": 60}})

# rule, findings, expected (severity of the cause, or None: the rule must not fire)
TABLE = [
    ("leakage", [F(sp.SHARED_PATIENTS, "high", n_shared=2), F(sp.NEAR_DUPLICATES, n_pairs=0)], "high"),
    ("leakage", [F(sp.SHARED_PATIENTS, n_shared=0), F(sp.NEAR_DUPLICATES, "medium", n_pairs=1)], "medium"),
    ("leakage", [F(sp.SHARED_PATIENTS, n_shared=0), F(sp.NEAR_DUPLICATES, n_pairs=0)], None),
    ("contiguous_folds", [contiguous()], "high"),
    ("contiguous_folds", [contiguous(used=False, sev="low")], None),
    # capacity needs a generalisation gap
    ("capacity", [params(20000.0), gap(1.0, 0.6)], "high"),
    ("capacity", [params(20000.0), gap(0.95, 0.8)], "medium"),
    ("capacity", [params(20.0), gap(1.0, 0.6)], "medium"),
    ("capacity", [params(20000.0), gap(0.80, 0.90)], None),           # validation above training
    ("capacity", [params(20000.0), gap(0.85, 0.80)], None),           # a gap within GAP_MEDIUM
    ("capacity", [params(20.0), gap(0.95, 0.8)], None),               # moderate gap, small model
    # no validation part with both classes: train AUC against the pooled OOF AUC
    ("capacity", [params(20000.0), gap(1.0, None, n=0, sev="na"), chance("includes", auc=0.55)], "high"),
    ("capacity", [params(20000.0), gap(0.8, None, n=0, sev="na"), chance("above", auc=0.85)], None),
    ("capacity", [params(20000.0)], None),                            # no curves at all
    ("protocol", [gap(1.0, 0.6, stale=8.0)], "medium"),
    ("protocol", [gap(1.0, 0.6, on_test=True)], "medium"),
    ("protocol", [gap(0.7, 0.65, stale=8.0, on_test=True)], None),
    ("oscillation", [F(cu.OSCILLATION, "medium", max_ratio=2.5, likely_causes=["lr"])], "medium"),
    ("oscillation", [F(cu.OSCILLATION, max_ratio=1.1, likely_causes=[])], None),
    ("shortcut", [F(fe.SHORTCUT, "high", strongest="scale", strongest_auc=0.8)], "high"),
    ("shortcut", [F(fe.SHORTCUT, strongest="scale", strongest_auc=0.52)], None),
    # the null of the texture baseline speaks of the data only when the recipe is not above chance
    ("no_signal", [perm(0.4, "high"), chance("includes", lo=0.45)], "high"),
    ("no_signal", [perm(0.4, "high"), chance("below", hi=0.45)], "high"),
    ("no_signal", [perm(0.4, "info"), chance("above")], None),
    ("no_signal", [perm(0.4, "high"), chance("above")], None),
    ("no_signal", [perm(0.01, "ok"), chance("includes")], None),
    ("baseline", [BASELINE_BEATS], "high"),
    ("baseline", [BASELINE_BEATS, contiguous()], None),               # on broken folds every model fails
    ("baseline", [F(fe.BASELINE, best_input="raw", comparisons={})], None),
    ("decomposition", [F(ab.CHANNELS, "medium", source="runs", comparisons=[])], "medium"),
    ("decomposition", [F(ab.CHANNELS, "low", source="runs", comparisons=[])], None),
    ("fold_balance", [F(sp.CLASS_BALANCE, "high", max_deviation=0.3)], "medium"),
    ("fold_balance", [F(sp.CLASS_BALANCE, "high", max_deviation=0.3), contiguous()], None),
    ("fold_balance", [F(sp.CLASS_BALANCE, max_deviation=0.02)], None),
    ("metrics", [F(me.BATCHWISE, "medium", max_gap_f1=0.3)], "low"),
    ("metrics", [F(me.BATCHWISE, "na", max_gap_f1=None)], None),      # single-class / one-batch folds
    ("metrics", [F(me.BATCHWISE, max_gap_f1=0.01)], None),
]


@pytest.mark.parametrize("rule,findings,expected", TABLE,
                         ids=[f"{r}-{'fires' if e else 'silent'}-{i}" for i, (r, _, e) in enumerate(TABLE)])
def test_rule_fires_only_with_its_own_evidence(rule, findings, expected):
    got = {c["id"]: c for c in rank_causes(findings)}
    if expected is None:
        assert rule not in got
    else:
        assert got[rule]["severity"] == expected
        assert got[rule]["evidence"][0] in {f.id for f in findings}


def test_every_rule_is_in_the_table_both_ways():
    assert {r.name for r in rules()} == {r for r, _, e in TABLE if e} == {r for r, _, e in TABLE if not e}


def test_every_value_a_rule_reads_is_written_by_some_check():
    for r in rules():
        for fid, names in r.reads.items():
            assert fid in DECLARED, (r.name, fid)
            assert set(names) <= DECLARED[fid], (r.name, fid, set(names) - DECLARED[fid])


def test_a_rule_cannot_read_an_undeclared_value():
    from mammodecomp.diagnose.verdict import Evidence, Rule
    ev = Evidence({}, []).for_rule(Rule("x", 0, {cu.GAP: (cu.FINAL_GAP,)}, fn=None))
    assert ev.value(cu.GAP, cu.FINAL_GAP) is None        # declared; the finding is absent
    with pytest.raises(KeyError, match="without declaring"):
        ev.value(cu.GAP, cu.STALE)


def test_probe_is_pretrained_and_its_parameters_are_the_regression():
    c = {c["id"]: c for c in rank_causes([params(2561 / 200, pretrained=True, probe=2560), gap(1.0, 0.66)])}
    cause = c["capacity"]
    assert cause["title"] == "Over-fitting (large gap)" and cause["severity"] == "medium"
    assert "trained from scratch" not in cause["title"] and "no pretraining" not in cause["summary"]
    assert cause["summary"].startswith("12.8 parameters per training ROI (a logistic regression on 2,560 frozen")


def test_no_signal_names_the_model_it_is_about():
    c = {c["id"]: c for c in rank_causes([perm(0.4, "high"), chance("includes", lo=0.45, hi=0.7)])}
    s = c["no_signal"]["summary"]
    assert s.startswith("the texture-feature logistic regression is not distinguishable from shuffled labels")
    assert "the recipe's AUC CI (0.450 to 0.700) includes 0.5" in s


def test_report_sections_are_the_registered_families():
    from mammodecomp.report import render_html
    fams = families()
    assert [f for f, _ in fams] == ["split", "metric", "training", "capacity", "shortcut", "null", "baseline",
                                    "ablation", "attribution"]
    d = {"path": "/x/run", "primary": "run", "is_study": False, "created": "now",
         "headline": {"auc": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n_rois": 3},
         "verdict": [], "errors": [], "timings": {},
         "findings": [F(me.BATCHWISE, "na", max_gap_f1=None, reason="one class only").to_dict(),
                      F(sp.SHARED_PATIENTS, n_shared=0, patients=[]).to_dict()]}
    html = render_html(d, {})
    titles = dict(fams)
    assert html.index(titles["split"]) < html.index(titles["metric"])
    assert titles["training"] not in html          # a family without findings has no section
    assert '<span class="badge sev-na">n/a</span>' in html
