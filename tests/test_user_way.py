"""The project run the way its users run it: the console command, from a
working directory of their own, with the relative paths README.md types.

These are the promises a user sees first (issue 13): a report in which every
evidence family whose inputs exist is measured, a run directory that still
diagnoses after it is moved, strict JSON in every file a run writes, and one
line with exit status 2 for a mistyped option on any command.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("train")

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def mdc(cwd: Path, *args: str, timeout: int = 900, bars: bool = False) -> subprocess.CompletedProcess:
    """``mammodecomp ARGS`` as a user types it, in ``cwd`` (progress bars only with ``bars``:
    the suite's conftest hides them)."""
    env = {k: v for k, v in ENV.items() if not (bars and k == "MAMMODECOMP_QUIET")}
    return subprocess.run([sys.executable, "-m", "mammodecomp", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _strict(path: Path):
    def refuse(c):
        raise ValueError(f"{path}: non-standard JSON constant {c}")
    return json.loads(path.read_text(), parse_constant=refuse)


def assert_all_measured(study: Path) -> dict:
    """Every evidence family of diagnosis.json measured; the report says 'not measured' nowhere."""
    d = _strict(study / "diagnosis.json")
    skipped = [f"{f['id']}: {f.get('summary')}" for f in d["findings"] if (f.get("values") or {}).get("skipped")]
    assert not skipped, f"families not measured: {skipped}"
    assert not d["errors"], d["errors"]
    families = {f["family"] for f in d["findings"]}
    for fam in ("split", "metric", "training", "capacity", "shortcut", "null", "baseline", "ablation",
                "attribution"):
        assert fam in families, f"family {fam} missing from {sorted(families)}"
    ids = {f["id"] for f in d["findings"]}
    for needed in ("split.near_duplicates", "null.permutation", "baseline.texture", "ablation.channels",
                   "attribution.occlusion"):
        assert needed in ids, f"{needed} not in the diagnosis ({sorted(ids)})"
    html = (study / "report.html").read_text()
    assert "not measured" not in html
    return d


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`mammodecomp demo` at reduced size, typed with a relative --out."""
    home = tmp_path_factory.mktemp("user")
    r = mdc(home, "-q", "demo", "--out", "runs/demo", "--patients", "30", "--roi-size", "32",
            "--epochs-small", "3", "--epochs-seed", "3", "--permutations", "20")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "open the report: runs/demo/report.html" in r.stdout
    return home


def test_demo_with_relative_paths_measures_every_family(demo):
    d = assert_all_measured(demo / "runs" / "demo")
    assert d["headline"]["auc"] is not None
    # the runs record their inputs relative to themselves, never as the working directory saw them
    for arm in ("small", "seed"):
        info = _strict(demo / "runs" / "demo" / arm / "run.json")
        assert info["components_path"].startswith("../.store/"), info["components_path"]


def test_every_json_a_run_writes_is_strict(demo):
    files = list((demo / "runs" / "demo").rglob("*.json"))
    assert len(files) >= 10
    for p in files:
        _strict(p)


def test_a_moved_study_still_diagnoses_and_reports(demo, tmp_path):
    moved = tmp_path / "elsewhere" / "old-demo"
    moved.parent.mkdir()
    shutil.copytree(demo / "runs" / "demo", moved)
    (moved / "diagnosis.json").unlink()
    r = mdc(tmp_path, "-q", "report", "elsewhere/old-demo", "--permutations", "20")
    assert r.returncode == 0, r.stderr
    assert_all_measured(moved)


def test_a_run_moved_without_its_store_names_the_missing_file(demo, tmp_path):
    alone = tmp_path / "small"
    shutil.copytree(demo / "runs" / "demo" / "small", alone)
    r = mdc(tmp_path, "-q", "diagnose", "small", "--permutations", "0")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: small/run.json: components_path '../.store/")
    assert "--store DIR" in lines[0]
    # given the store, it diagnoses; and predict finds the store the same way
    r = mdc(tmp_path, "-q", "diagnose", "small", "--permutations", "10", "--store",
            str(demo / "runs" / "demo" / ".store"))
    assert r.returncode == 0, r.stderr


def _commands():
    from mammodecomp.cli import _load_commands, app
    import typer.main
    _load_commands()
    root = typer.main.get_command(app)
    out = []

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, c in subs.items():
                walk(c, [*path, name])
        else:
            out.append(path)
    walk(root, [])
    return out


def test_every_command_is_listed():
    cmds = {" ".join(c) for c in _commands()}
    assert {"cv", "study", "decompose", "diagnose", "report", "predict", "export", "demo", "data build",
            "data summary", "data fetch", "scale cv"} <= cmds


@pytest.mark.parametrize("cmd", _commands(), ids=lambda c: " ".join(c))
def test_a_mistyped_option_is_one_line_and_exit_2(cmd, capsys):
    from mammodecomp.cli import main
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--bogus-option"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    if cmd == ["bench"]:     # passes its options through to a script: the unknown script is the error
        assert err[0].startswith("error: unknown benchmark '--bogus-option'")
    else:
        assert err[0].startswith("error: No such option: --bogus-option") and "--help'" in err[0]


def test_cli_as_typed_global_flags_after_the_subcommand_and_version(tmp_path):
    r = mdc(tmp_path, "cv", "--recipee", "small")
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: No such option: --recipee (did you mean --recipe?); "
                                "see 'mammodecomp cv --help'")
    r = mdc(tmp_path, "cv", "-q", "--set", "train.epoch=3")      # -q after the subcommand
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: config field 'train.epoch': unknown key")
    r = mdc(tmp_path, "--version")
    assert r.returncode == 0 and r.stdout.strip().startswith("mammodecomp ")


def test_an_error_after_a_progress_bar_starts_its_own_line(tmp_path):
    """A log (stderr not a terminal) shows the bar, then the error on a line of its own."""
    r = mdc(tmp_path, "cv", "--set", "data.synth.n_patients=8", "--set", "cv.n_folds=2",
            "--set", "data.roi_size=32", "--set", "data.synth.size=64", bars=True)
    assert r.returncode == 2
    errs = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(errs) == 1 and errs[0].startswith("error: "), r.stderr
    assert "ROIs" in r.stderr      # the bar was drawn
    assert not list((tmp_path / "runs").glob("cv/*")), "a failed run left files"


def test_plain_decompose_fills_the_entry_plain_cv_reads(tmp_path):
    small = ["--set", "data.synth.n_patients=16", "--set", "data.synth.size=64"]
    r = mdc(tmp_path, "-q", "decompose", *small)
    assert r.returncode == 0 and r.stdout.startswith("computed starlet k=5"), r.stderr
    entry = r.stdout.split("-> ")[1].split(" ")[0]
    r = mdc(tmp_path, "-q", "cv", *small, "--set", "train.epochs=1", "--set", "cv.n_folds=2", "--set",
            "cv.n_boot=20")
    assert r.returncode == 0, r.stderr
    info = _strict(tmp_path / "runs" / "cv" / "run.json")
    assert (tmp_path / "runs" / "cv" / info["components_path"]).resolve() == Path(entry).resolve()
