"""`mammodecomp evaluate`: held-out rows next to OOF, and the refusal of rows a fold saw."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn import metrics as skm
from diagnose_support import make_run

from mammodecomp.errors import InputError
from mammodecomp.evaluate import evaluate


def _png(path):
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A fabricated run on 30 patients (images on disk) and a manifest of
    40 other patients marked split=test plus the run's rows marked train."""
    d = tmp_path_factory.mktemp("ev")
    (d / "img").mkdir()
    run = make_run(d / "run", signal=1.5)["path"]
    man = pd.read_parquet(run / "manifest.parquet")
    man["image_path"] = [_png(d / "img" / f"{r}.png") for r in man["roi_id"]]
    man.to_parquet(run / "manifest.parquet")
    rng = np.random.default_rng(0)
    lab = np.repeat(rng.permutation(np.arange(40) % 2), 2)
    held = pd.DataFrame({"roi_id": [f"h{i // 2:03d}_{'CC' if i % 2 == 0 else 'MLO'}" for i in range(80)],
                         "patient_id": [f"h{i // 2:03d}" for i in range(80)], "label": lab})
    held["image_path"] = [_png(d / "img" / f"{r}.png") for r in held["roi_id"]]
    held["split"] = "test"
    both = pd.concat([man[["roi_id", "patient_id", "label", "image_path"]].assign(split="train"), held],
                     ignore_index=True)
    both.to_csv(d / "all.csv", index=False)
    return d, run, both


def fake_predict(run_dir, df, device):
    rng = np.random.default_rng(1)
    z = 1.5 * (2 * df["label"].to_numpy() - 1) + rng.normal(0, 1.5, len(df))
    return pd.DataFrame({"roi_id": df["roi_id"].to_numpy(), "prob": 1 / (1 + np.exp(-z)), "n_models": 3})


def test_evaluate_reports_heldout_next_to_oof_and_the_gap(setup):
    d, run, both = setup
    r = evaluate(run, d / "all.csv", n_boot=200, predict_fn=fake_predict)
    assert r["heldout"]["n_rois"] == 80 and r["heldout_selection"] == "split == test"
    pred = pd.read_csv(run / "evaluation" / "heldout_predictions.csv")
    assert r["heldout"]["auc"] == pytest.approx(skm.roc_auc_score(pred["label"], pred["prob"]))
    lo, hi = r["heldout"]["auc_ci"]
    assert lo <= r["heldout"]["auc"] <= hi
    s = json.loads((run / "summary.json").read_text())
    assert r["oof"]["auc"] == s["auc"] and r["gap"]["auc"] == pytest.approx(r["heldout"]["auc"] - s["auc"])
    assert "sens_at_90_spec" in r["heldout"]["operating_points"] and "slope" in r["heldout"]["calibration"]
    assert "sens_at_90_spec" in r["gap"] and "ensemble" in r["definition"]
    json.loads((run / "evaluation" / "evaluation.json").read_text(),
               parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


@pytest.mark.parametrize("leak,field", [("roi", "roi_id"), ("image", "image_path"), ("patient", "patient_id")])
def test_evaluate_refuses_rows_a_fold_saw(setup, leak, field, tmp_path):
    d, run, both = setup
    bad = both[both["split"] == "test"].reset_index(drop=True)
    i = 5
    src = both[both["split"] == "train"].iloc[0]
    if leak == "roi":
        bad.loc[i, "roi_id"] = src["roi_id"]
    elif leak == "image":
        bad.loc[i, "image_path"] = src["image_path"]
    else:
        bad.loc[i, "patient_id"] = src["patient_id"]
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError) as e:
        evaluate(run, tmp_path / "bad.csv", n_boot=50, predict_fn=fake_predict)
    msg = str(e.value)
    assert "\n" not in msg and f"row {i + 1}" in msg and f"field '{field}'" in msg and "bad.csv" in msg
    assert "folds" in msg


def test_evaluate_cli_one_line_error(setup, tmp_path, capsys):
    from mammodecomp.cli import main
    d, run, both = setup
    bad = both.copy()
    bad["split"] = "test"          # the run's own rows as "held out"
    bad.to_csv(tmp_path / "leak.csv", index=False)
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(run), "--manifest", str(tmp_path / "leak.csv")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count("\n") == 0 and err.startswith("error: ") and "roi_id" in err
    with pytest.raises(InputError, match="one class only"):
        evaluate(run, _one_class(both, tmp_path), predict_fn=fake_predict)


def _one_class(both, tmp_path):
    h = both[(both["split"] == "test") & (both["label"] == 1)]
    h.to_csv(tmp_path / "one.csv", index=False)
    return tmp_path / "one.csv"


def test_evaluate_cli_end_to_end_with_relative_paths(tmp_path, monkeypatch, capsys):
    """A real tiny run, then `mammodecomp evaluate` from another folder on a fresh
    synthetic set (other patients) given as a relative manifest path."""
    from mammodecomp.cli import main
    from mammodecomp.config import resolve_config
    from mammodecomp.synth import write_synthetic
    from mammodecomp.train import cross_validate
    cfg = resolve_config(recipe="small", overrides=[
        "data.synth.n_patients=16", "data.synth.size=64", "data.roi_size=32", "train.epochs=2",
        "train.batch_size=8", "cv.n_folds=2", "cv.n_boot=50", "train.threads=1",
        f"decomposition.store={tmp_path}/store"])
    cross_validate(cfg, tmp_path / "work" / "run", progress_bars=False)
    ho = write_synthetic(tmp_path / "work" / "ho", n_patients=12, size=64, seed=7)
    m = pd.read_parquet(ho / "manifest.parquet")
    m["image_path"] = [str((ho / p).resolve()) for p in m["image_path"]]
    for c in ("roi_id", "patient_id", "lesion_id"):
        m[c] = "ho-" + m[c].astype(str)
    m.to_csv(tmp_path / "work" / "heldout.csv", index=False)
    monkeypatch.chdir(tmp_path / "work")
    main(["-q", "evaluate", "run", "--manifest", "heldout.csv", "--n-boot", "50"])
    out = capsys.readouterr().out
    assert "held-out (24 ROIs, 12 patients, 2 fold models averaged): AUC" in out and "gap (held-out - OOF)" in out
    r = json.loads((tmp_path / "work" / "run" / "evaluation" / "evaluation.json").read_text())
    pred = pd.read_csv(tmp_path / "work" / "run" / "evaluation" / "heldout_predictions.csv")
    assert r["heldout"]["auc"] == pytest.approx(skm.roc_auc_score(pred["label"], pred["prob"]))
