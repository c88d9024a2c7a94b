"""End-to-end cross-validation on a tiny synthetic set: determinism, resume,
leak-free folds, prediction parity and ONNX export."""
import numpy as np
import pandas as pd
import pytest
import torch

from mammodecomp.errors import InputError
from mammodecomp.rundir import read_run as load_run
from mammodecomp.train import cross_validate

pytestmark = pytest.mark.xdist_group("train")


@pytest.fixture(scope="session")
def tiny_cfg(tiny_cfg):
    """conftest's tiny config, with this file's 3 epochs and 50 bootstrap draws."""
    return lambda tmp_path, *extra, recipe="small": tiny_cfg(tmp_path, "train.epochs=3", "cv.n_boot=50", *extra,
                                                              recipe=recipe)


@pytest.fixture(scope="module")
def tiny_run(tiny_cfg, tmp_path_factory):
    d = tmp_path_factory.mktemp("cv")
    return cross_validate(tiny_cfg(d), d / "run", progress_bars=False), d


def test_run_directory_is_complete_and_leak_free(tiny_run):
    run_dir, _ = tiny_run
    run = load_run(run_dir)
    assert run.oof is not None and len(run.oof) == len(run.manifest)
    assert set(run.oof["roi_id"]) == set(run.manifest["roi_id"])
    pid = run.manifest.set_index("roi_id")["patient_id"]
    for (r, f), sub in run.plan.groupby(["repeat", "fold"]):
        test_p = set(pid[sub.loc[sub.role == "test", "roi_id"]])
        fit_p = set(pid[sub.loc[sub.role != "test", "roi_id"]])
        assert not test_p & fit_p
    for h in run.histories.values():
        assert {"train_auc", "val_auc", "train_loss", "val_loss"} <= set(h.columns)
    s = run.summary
    from sklearn.metrics import roc_auc_score

    from test_metrics import documented_bootstrap_ci
    oof = run.oof
    assert s["auc"] == pytest.approx(roc_auc_score(oof["label"], oof["prob"]), abs=1e-12)
    # the headline CI resamples patients (n_boot and seed from the config)
    assert s["auc_ci"] == pytest.approx(documented_bootstrap_ci(oof["label"], oof["prob"], oof["patient_id"],
                                                                50, 0), abs=1e-12)


def test_same_config_same_predictions(tiny_cfg, tiny_run, tmp_path):
    run_dir, d = tiny_run
    again = cross_validate(tiny_cfg(d), tmp_path / "again", progress_bars=False)
    a = pd.read_csv(run_dir / "oof.csv")
    b = pd.read_csv(again / "oof.csv")
    np.testing.assert_array_equal(a["logit"].to_numpy(), b["logit"].to_numpy())


def crash_then_resume(cfg, out, monkeypatch):
    """Kill a run in fold 2 after its first epoch (state saved), then resume it to the end."""
    import mammodecomp.fit as T
    real = T._save_state
    calls = {"n": 0}

    def crashing(*a, **k):
        real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 4:          # fold 2, after its first epoch
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(T, "_save_state", crashing)
    with pytest.raises(KeyboardInterrupt):
        cross_validate(cfg, out, progress_bars=False)
    assert not (out / "oof.csv").exists()
    monkeypatch.setattr(T, "_save_state", real)
    return cross_validate(cfg, out, progress_bars=False)


def test_resume_after_crash_gives_identical_results(tiny_cfg, tiny_run, tmp_path, monkeypatch):
    run_dir, d = tiny_run
    crash_then_resume(tiny_cfg(d), tmp_path / "crash", monkeypatch)
    a = pd.read_csv(run_dir / "oof.csv")
    b = pd.read_csv(tmp_path / "crash" / "oof.csv")
    np.testing.assert_array_equal(a["logit"].to_numpy(), b["logit"].to_numpy())


def test_resume_refuses_a_different_config(tiny_cfg, tiny_run):
    run_dir, d = tiny_run
    with pytest.raises(InputError, match="different config"):
        cross_validate(tiny_cfg(d, "train.lr=0.5"), run_dir, progress_bars=False)


def test_predict_fold_reproduces_out_of_fold_probabilities(tiny_run):
    from mammodecomp.predict import predict
    run_dir, _ = tiny_run
    run = load_run(run_dir)
    oof = run.oof
    for f in sorted(oof["fold"].unique()):
        ids = oof.loc[oof["fold"] == f, "roi_id"]
        man = run.manifest.set_index("roi_id").loc[ids].reset_index()
        got = predict(run_dir, man, fold=int(f))
        want = oof.set_index("roi_id").loc[got["roi_id"], "prob"].to_numpy()
        np.testing.assert_allclose(got["prob"].to_numpy(), want, atol=1e-5)


def test_onnx_export_matches_torch(tiny_run, tmp_path):
    """The exported file, run by onnxruntime on the run's own inputs, gives the fold's
    out-of-fold logits (more in tests/test_export.py)."""
    import onnxruntime as ort

    from mammodecomp.export import export_onnx
    run_dir, _ = tiny_run
    path = export_onnx(run_dir, tmp_path / "exp")
    run = load_run(run_dir)
    test = run.oof[run.oof["fold"] == 0]
    x = run.inputs()[run.manifest.index[run.manifest["roi_id"].isin(test["roi_id"])]]
    order = run.manifest["roi_id"][run.manifest["roi_id"].isin(test["roi_id"])]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"components": np.ascontiguousarray(x, dtype=np.float32)})[0].reshape(-1)
    want = test.set_index("roi_id").loc[order, "logit"].to_numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert "Research only" in (tmp_path / "exp" / "MODEL_CARD.md").read_text()


def test_seed_recipe_uses_contiguous_folds_validated_on_test(tiny_cfg, tmp_path):
    cfg = tiny_cfg(tmp_path, "model.kwargs={width: 0.0625}", "train.epochs=2", recipe="seed")
    run = load_run(cross_validate(cfg, tmp_path / "seed", progress_bars=False))
    assert run.summary["validated_on_test"] is True
    assert run.summary["cv_scheme"] == "contiguous"


def test_permuted_labels_keep_patients_and_counts(tiny_cfg, tmp_path):
    from mammodecomp.data import build_manifest_for
    cfg = tiny_cfg(tmp_path, "data.permute_labels=true", "data.permute_seed=3")
    plain = build_manifest_for(tiny_cfg(tmp_path), tmp_path / "data")
    perm = build_manifest_for(cfg, tmp_path / "data")
    assert (plain["roi_id"] == perm["roi_id"]).all()
    assert plain["label"].sum() == perm["label"].sum()
    assert (plain["label"] != perm["label"]).any()
    assert (perm.groupby("patient_id")["label"].nunique() == 1).all()


def test_finetune_and_probe_recipes_run_offline(tiny_cfg, tmp_path):
    """The pretrained recipes on EfficientNet-Lite0's offline weights, tiny."""
    ft = tiny_cfg(tmp_path, "train.epochs=1", "data.roi_size=32", recipe="finetune")
    run = load_run(cross_validate(ft, tmp_path / "ft", progress_bars=False))
    assert run.summary["model"] == "timm:tf_efficientnet_lite0" and len(run.oof) == len(run.manifest)
    pr = tiny_cfg(tmp_path, "data.roi_size=32", recipe="probe")
    run = load_run(cross_validate(pr, tmp_path / "probe", progress_bars=False))
    assert len(run.oof) == len(run.manifest) and 0 <= run.summary["auc"] <= 1
    # features are cached in the store: a second run reuses them
    assert list((tmp_path / "store").glob("probe-*.npy"))
    # a finished run resumed needs no features at all
    import mammodecomp.probe as T

    def no_features(*a, **k):
        raise AssertionError("features computed for a finished run")
    real, T.probe_features = T.probe_features, no_features
    try:
        assert load_run(cross_validate(pr, tmp_path / "probe", progress_bars=False)).summary["auc"] == run.summary["auc"]
    finally:
        T.probe_features = real


def test_second_process_on_the_same_run_is_refused(tiny_cfg, tiny_run):
    from filelock import FileLock
    run_dir, d = tiny_run
    with FileLock(str(run_dir / ".lock")):
        with pytest.raises(InputError, match="another mammodecomp process is writing this run directory"):
            cross_validate(tiny_cfg(d), run_dir, progress_bars=False)


def test_stale_temp_files_of_a_killed_run_are_cleared(tiny_cfg, tiny_run):
    run_dir, d = tiny_run
    stale = run_dir / "folds" / "r0f0" / ".state.pt.abc123.tmp"
    stale.write_bytes(b"half")
    cross_validate(tiny_cfg(d), run_dir, progress_bars=False)
    assert not stale.exists()


@pytest.mark.parametrize("content", [None, b"not a checkpoint"])
def test_a_bad_weights_file_fails_before_any_work(tiny_cfg, tmp_path, content):
    """model.weights is read first: the one-line error comes before ROIs are cut or decomposed."""
    w = tmp_path / "lite0.pth"
    if content is not None:
        w.write_bytes(content)
    cfg = tiny_cfg(tmp_path, f"model.weights={w}", recipe="probe")
    with pytest.raises(InputError, match="weights file not found" if content is None else "cannot read weights"):
        cross_validate(cfg, tmp_path / "run", progress_bars=False)
    assert not (tmp_path / "run").exists() and not (tmp_path / "store").exists()


def test_weight_average_is_what_is_judged_and_it_resumes(tiny_cfg, tiny_run, tmp_path, monkeypatch):
    """train.ema: the averaged weights are evaluated, checkpointed and resumed; an average that
    forgets at once (decay ~ 0) is the plain model."""
    from mammodecomp.fit import load_weights
    run_dir, d = tiny_run
    plain = pd.read_csv(run_dir / "oof.csv")["logit"].to_numpy()
    forget = cross_validate(tiny_cfg(d, "train.ema=1e-12"), tmp_path / "forget", progress_bars=False)
    np.testing.assert_allclose(pd.read_csv(forget / "oof.csv")["logit"].to_numpy(), plain, atol=1e-5)
    cfg = tiny_cfg(d, "train.ema=0.9", "train.select=last")
    ema = cross_validate(cfg, tmp_path / "ema", progress_bars=False)
    got = pd.read_csv(ema / "oof.csv")["logit"].to_numpy()
    assert np.abs(got - plain).max() > 1e-3
    # the (last-epoch) checkpoint is the average, not the optimiser's weights kept in state.pt
    st = torch.load(ema / "folds" / "r0f0" / "state.pt", weights_only=True)
    ck = load_weights(ema / "folds" / "r0f0" / "model.safetensors")
    assert set(ck) == set(st["model"])
    for k, v in ck.items():
        torch.testing.assert_close(v, st["ema"]["module." + k], rtol=0, atol=0)
    assert any(not torch.equal(v, st["model"][k]) for k, v in ck.items())
    crash_then_resume(cfg, tmp_path / "crash", monkeypatch)
    np.testing.assert_array_equal(pd.read_csv(tmp_path / "crash" / "oof.csv")["logit"].to_numpy(), got)


def test_resume_refuses_a_run_trained_on_other_data(tiny_cfg, tmp_path):
    """Same config, changed data: finished folds were trained on the old rows or pixels."""
    from PIL import Image
    cfg = tiny_cfg(tmp_path, "train.epochs=1")
    run = cross_validate(cfg, tmp_path / "run", progress_bars=False)
    data = next((tmp_path / "data").glob("synthetic-*"))
    cross_validate(cfg, run, progress_bars=False)          # unchanged data: resumes
    png = sorted((data / "images").glob("*.png"))[0]
    img = np.asarray(Image.open(png)).copy()
    img[:8, :8] = 0
    Image.fromarray(img).save(png)
    with pytest.raises(InputError, match=r"run directory was trained on other ROIs \(rois-[0-9a-f]{16}\.npy; now "):
        cross_validate(cfg, run, progress_bars=False)
    m = pd.read_parquet(data / "manifest.parquet")
    m.loc[m["patient_id"] == m["patient_id"].iloc[0], "label"] ^= 1
    m.to_parquet(data / "manifest.parquet")
    with pytest.raises(InputError, match=r"run directory was trained on other manifest \("):
        cross_validate(cfg, run, progress_bars=False)
