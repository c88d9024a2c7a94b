"""`mammodecomp runs` and `mammodecomp runs compare`, through the CLI from another cwd."""
from __future__ import annotations

import json
import re

import pytest

from mammodecomp.cli import main
from mammodecomp.runs import compare_runs
from diagnose_support import make_manifest, make_run, make_study

pytestmark = pytest.mark.xdist_group("runs")


@pytest.fixture()
def runs_cwd(tmp_path, monkeypatch):
    """A cwd holding runs/study/{seed,small,raw} (one manifest) and runs/other (another manifest)."""
    make_study(tmp_path / "runs" / "study")
    df, rois = make_manifest(12, seed=9)
    df["roi_id"], df["patient_id"] = "q" + df["roi_id"], "q" + df["patient_id"]
    make_run(tmp_path / "runs" / "other", recipe="small", manifest=(df, rois), seed=5)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _summary(path):
    return json.loads(path.joinpath("summary.json").read_text())


def test_runs_lists_every_run_with_its_auc(runs_cwd, capsys):
    main(["runs", "runs"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["run", "recipe", "data"]
    rows = {ln.split()[0]: ln for ln in out[2:]}
    assert set(rows) == {"other", "study/raw", "study/seed", "study/small"}
    for name, recipe, variant in (("study/seed", "seed", "components"), ("study/raw", "small", "raw"),
                                  ("other", "small", "components")):
        s = _summary(runs_cwd / "runs" / name)
        assert re.search(rf"^{re.escape(name)}\s+{recipe}\s", rows[name])
        assert f"starlet K=3 {variant}" in rows[name]
        assert f"{s['auc']:.3f} [{s['auc_ci'][0]:.3f}, {s['auc_ci'][1]:.3f}]" in rows[name]
    assert "24 ROIs/12 patients" in rows["other"] and "60 ROIs/30 patients" in rows["study/seed"]
    main(["runs"])               # default folder: runs
    assert capsys.readouterr().out.splitlines() == out


def test_runs_compare_prints_and_writes_the_differences(runs_cwd, capsys):
    main(["runs", "compare", "runs/study/seed", "runs/study/small", "runs/other", "--n-boot", "200",
          "--out", "cmp.html"])
    out = capsys.readouterr().out
    # config differences: the recipes' own values, one column per run
    assert re.search(r"^model\.name\s+seed-vgg\s+small\s+small\s*$", out, flags=re.M)
    assert re.search(r"^cv\.scheme\s+contiguous\s+grouped\s+grouped\s*$", out, flags=re.M)
    assert "data.manifest_hash" not in out  # fabricated runs share the hash "x"
    a, b = _summary(runs_cwd / "runs/study/seed"), _summary(runs_cwd / "runs/study/small")
    want = re.escape(f"{b['auc']:.3f} ({b['auc'] - a['auc']:+.3f})")
    assert re.search(rf"^auc\s+{a['auc']:.3f}\s+{want}", out, flags=re.M)
    # paired on the study's 60 shared ROIs; the other manifest shares none
    assert f"runs/study/small vs runs/study/seed on 60 shared ROIs: AUC {b['auc']:.3f} vs {a['auc']:.3f}" in out
    assert "runs/other vs runs/study/seed: no paired test (0 shared ROIs" in out
    page = (runs_cwd / "cmp.html").read_text()
    assert "<th>model.name</th><td>seed-vgg</td><td>small</td><td>small</td>" in page
    assert "60 shared ROIs" in page and "<script" not in page and "http" not in page


def test_compare_runs_uses_compare_aucs_keys(runs_cwd):
    res = compare_runs(["runs/study/seed", "runs/study/small"], n_boot=100, seed=1)
    (p,) = res["paired"]
    assert {"auc1", "auc2", "diff", "ci", "p", "test"} <= set(p)
    assert p["n_shared"] == 60 and p["label_mismatch"] == 0
    assert p["diff_b_minus_a"] == pytest.approx(p["auc2"] - p["auc1"])
    assert p["ci_b_minus_a"][0] <= p["diff_b_minus_a"] <= p["ci_b_minus_a"][1]


@pytest.mark.parametrize("argv, what", [(["runs", "compare", "runs/study/seed"], "at least two"),
                                        (["runs", "compare", "runs/study/seed", "runs/nope"], "not found"),
                                        (["runs", "nope"], "not found"),
                                        (["runs", "a", "b"], "one folder")])
def test_runs_bad_input_is_one_line_error(runs_cwd, capsys, argv, what):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and what in err
    assert not (runs_cwd / "compare.html").exists()
