"""MLflow tracking (the optional `track` extra): `cv --track`, then `runs track` after report and export.

Everything is checked against the run directory's own files, read back from the SQLite store.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from mammodecomp.cli import main

mlflow = pytest.importorskip("mlflow", reason="the track extra (mlflow) is not installed: pip install -e '.[track]'")

pytestmark = pytest.mark.xdist_group("track")

CV = ["cv", "--recipe", "small", "--set", "data.synth.n_patients=16", "--set", "data.roi_size=32",
      "--set", "data.synth.size=64", "--set", "train.epochs=2", "--set", "cv.n_folds=2", "--set", "cv.n_boot=20",
      "--out", "runs/tiny"]


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k not in ("params", "kwargs"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = "None" if v is None else str(v)
    return out


def test_cv_track_logs_config_curves_summary_and_artefacts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(CV + ["--track"])
    out = capsys.readouterr().out
    run_dir = tmp_path / "runs" / "tiny"
    ref = json.loads((run_dir / "mlflow.json").read_text())
    assert f"logged to MLflow as run {ref['run_id']}" in out
    assert ref["tracking_uri"] == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(tracking_uri=ref["tracking_uri"])
    r = client.get_run(ref["run_id"])
    assert r.info.status == "FINISHED" and r.info.run_name == "tiny"
    # the resolved config, every key, as parameters
    cfg = _flat(yaml.safe_load((run_dir / "config.yaml").read_text()))
    assert {k: r.data.params[k] for k in cfg} == cfg
    assert r.data.params["train.epochs"] == "2" and r.data.params["recipe"] == "small"
    # per-epoch curves of each fold, step = epoch
    for fold in (0, 1):
        h = pd.read_csv(run_dir / "folds" / f"r0f{fold}" / "history.csv")
        got = client.get_metric_history(ref["run_id"], f"r0f{fold}/val_loss")
        assert [(m.step, round(m.value, 6)) for m in sorted(got, key=lambda m: m.step)] == \
            [(int(e), round(float(v), 6)) for e, v in zip(h["epoch"], h["val_loss"])]
    # the summary with its CI
    s = json.loads((run_dir / "summary.json").read_text())
    assert r.data.metrics["auc"] == pytest.approx(s["auc"])
    assert [r.data.metrics["auc_ci_low"], r.data.metrics["auc_ci_high"]] == pytest.approx(s["auc_ci"])
    arts = {a.path for a in client.list_artifacts(ref["run_id"])}
    assert {"config.yaml", "summary.json", "oof.csv", "run.json"} <= arts
    # the artefact store sits beside the database, nothing in the cwd
    assert (tmp_path / "runs" / "mlartifacts").is_dir() and not (tmp_path / "mlruns").exists()

    # later: report and model card, added to the same MLflow run, curves not logged twice
    main(["diagnose", "runs/tiny", "--permutations", "0", "--model-rois", "8"])
    main(["report", "runs/tiny"])
    main(["export", "runs/tiny", "--format", "onnx"])
    capsys.readouterr()
    main(["runs", "track", "runs/tiny"])
    assert f"logged to MLflow as run {ref['run_id']}" in capsys.readouterr().out
    arts = {a.path for a in client.list_artifacts(ref["run_id"])}
    assert {"report.html", "diagnosis.json", "export"} <= arts
    dst = tmp_path / "dl"
    dst.mkdir()
    card = client.download_artifacts(ref["run_id"], "export/MODEL_CARD.md", str(dst))
    assert open(card).read() == (run_dir / "export" / "MODEL_CARD.md").read_text()
    assert len(client.get_metric_history(ref["run_id"], "r0f0/val_loss")) == len(h)
    assert len(client.search_runs([r.info.experiment_id])) == 1


def test_track_without_a_run_is_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["runs", "track", "runs/none"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()
