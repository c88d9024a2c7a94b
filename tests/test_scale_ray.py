"""Ray on a local cluster: decomposition into the store and cross-validation
folds as tasks give the single-process results."""
import json

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from mammodecomp.config import resolve_config  # noqa: E402
from mammodecomp.data import prepare_inputs  # noqa: E402
from mammodecomp.roi import extract_rois  # noqa: E402
from mammodecomp.scale.ray_cv import RayFoldRunner  # noqa: E402
from mammodecomp.scale.ray_decompose import ray_decompose, ray_extract_rois, ray_prepare_store  # noqa: E402
from mammodecomp.store import DecompStore  # noqa: E402
from mammodecomp.train import cross_validate  # noqa: E402

pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_cfg(tiny_cfg):
    """conftest's tiny config, repeated twice (the Ray runner gets four folds)."""
    return lambda tmp_path, *extra: tiny_cfg(tmp_path, "cv.n_repeats=2", *extra)


@pytest.mark.parametrize("engine", ["data", "tasks"])
def test_ray_decompose_writes_the_single_process_entry(tmp_path, engine):
    x = np.random.default_rng(0).random((21, 24, 24)).astype(np.float32)   # batches 8, 8, 5
    ref_store = DecompStore(tmp_path / "ref")
    params = {"max_iter": 20}          # VMD: per-image info (iterations) travels back too
    ref = ref_store.get_or_compute(x, "vmd", 4, params, batch_size=8, progress=False)
    store = DecompStore(tmp_path / "ray")
    got = ray_decompose(x, "vmd", 4, params, store=store, batch_size=8, engine=engine, progress=False)
    assert store.last_computed is True
    key = store.key(x, "vmd", 4, params)
    assert key == ref_store.key(x, "vmd", 4, params) and store.path(key).is_file()
    assert got.dtype == ref.dtype and np.array_equal(np.asarray(got), np.asarray(ref))
    meta_ref = json.loads((tmp_path / "ref" / f"{key}.json").read_text())
    meta = json.loads((tmp_path / "ray" / f"{key}.json").read_text())
    for k in ("key", "version", "method", "k", "params", "shape", "dtype", "info"):
        assert meta[k] == meta_ref[k]
    assert "iterations" in meta["info"]
    assert not list((tmp_path / "ray").glob("*.tmp"))
    # the single-process path now finds the entry instead of computing it
    again = store.get_or_compute(x, "vmd", 4, params, progress=False)
    assert store.last_computed is False and np.array_equal(np.asarray(again), np.asarray(ref))


def test_ray_prepare_store_fills_what_cross_validation_reads(tiny_cfg, tmp_path):
    cfg = tiny_cfg(tmp_path)
    path = ray_prepare_store(cfg, tmp_path / "run", chunk_rows=5, progress=False)
    inp = prepare_inputs(cfg, tmp_path / "run", progress=False)
    assert inp.components_path == path
    rois, meta = extract_rois(inp.manifest, size=32, progress=False)
    r_rois, r_meta = ray_extract_rois(inp.manifest, size=32, chunk_rows=5, progress=False)
    np.testing.assert_array_equal(r_rois, rois)
    pd.testing.assert_frame_equal(r_meta.reset_index(drop=True), meta.reset_index(drop=True))
    fresh = DecompStore(tmp_path / "fresh").get_or_compute(rois, cfg.decomposition.method, cfg.decomposition.k,
                                                           progress=False)
    np.testing.assert_array_equal(np.load(path), np.asarray(fresh))


def test_folds_as_ray_tasks_equal_the_serial_run(tiny_cfg, tmp_path):
    serial = cross_validate(tiny_cfg(tmp_path), tmp_path / "serial", progress_bars=False)
    via_ray = cross_validate(tiny_cfg(tmp_path), tmp_path / "ray", progress_bars=False,
                             fold_runner=RayFoldRunner(num_cpus_per_fold=1))
    a = pd.read_csv(serial / "oof.csv")
    b = pd.read_csv(via_ray / "oof.csv")
    pd.testing.assert_frame_equal(a, b)
    assert sorted(set(a["repeat"])) == [0, 1]
    for fd in sorted((serial / "folds").iterdir()):
        other = via_ray / "folds" / fd.name
        assert sorted(p.name for p in fd.iterdir()) == sorted(p.name for p in other.iterdir())
        assert json.loads((fd / "done.json").read_text()) == json.loads((other / "done.json").read_text())
        ha = pd.read_csv(fd / "history.csv").drop(columns="seconds")
        hb = pd.read_csv(other / "history.csv").drop(columns="seconds")
        pd.testing.assert_frame_equal(ha, hb)
    sa = json.loads((serial / "summary.json").read_text())
    sb = json.loads((via_ray / "summary.json").read_text())
    assert sa["auc"] == sb["auc"] and sa["auc_ci"] == sb["auc_ci"]


def test_scale_cli_decomposes_into_the_store(tmp_path):
    from mammodecomp.cli import main
    sets = ["data.synth.n_patients=8", "data.synth.size=64", "data.roi_size=32",
            f"decomposition.store={tmp_path}/store"]
    opts = [a for s in sets for a in ("--set", s)]
    main(["-q", "scale", "decompose", *opts, "--engine", "tasks", "--out", str(tmp_path / "run")])
    written = {p.name for p in (tmp_path / "store").glob("*.npy")}
    assert len(written) == 1
    cfg = resolve_config(recipe="small", overrides=sets)
    assert prepare_inputs(cfg, tmp_path / "run", progress=False).components_path.name in written
