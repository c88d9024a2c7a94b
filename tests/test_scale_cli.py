"""`mammodecomp scale cv`: a bad runner is refused; `--runner prepare` writes the
run directory, trains nothing and names one torchrun command per fold."""
import pytest

from mammodecomp.cli import main

SETS = ["data.synth.n_patients=16", "data.synth.size=64", "data.roi_size=32", "cv.n_folds=2"]


def _opts(tmp_path):
    return [a for s in SETS + [f"decomposition.store={tmp_path}/store"] for a in ("--set", s)]


def test_bad_runner_is_an_input_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["-q", "scale", "cv", *_opts(tmp_path), "--runner", "bogus", "--out", str(tmp_path / "run")])
    assert e.value.code == 2 and "--runner must be" in capsys.readouterr().err


def test_prepare_writes_the_run_directory_and_lists_torchrun_commands(tmp_path, capsys):
    run = tmp_path / "run"
    main(["-q", "scale", "cv", *_opts(tmp_path), "--runner", "prepare", "--nproc-per-node", "4", "--out", str(run)])
    out = capsys.readouterr().out
    assert {"config.yaml", "splits.csv", "run.json", "manifest.parquet"} <= {p.name for p in run.iterdir()}
    assert not (run / "folds").exists() and not (run / "oof.csv").exists()
    cmds = [line.strip() for line in out.splitlines() if line.strip().startswith("torchrun")]
    assert len(cmds) == 2 and all("--nproc_per_node 4" in c and "-m mammodecomp.scale.ddp" in c for c in cmds)
    assert cmds[1].endswith(f"{run} --repeat 0 --fold 1")
