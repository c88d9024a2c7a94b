"""No data set size crashes training: sizes and batch sizes swept through every
recipe's learner at tiny scale, including a last batch of one ROI (which
BatchNorm cannot train on: the seed network's BatchNorm1d raised
``Expected more than 1 value per channel when training``)."""
from __future__ import annotations

import numpy as np
import pytest

from mammodecomp.config import resolve_config
from mammodecomp.fit import batch_starts, fit_fold

pytestmark = pytest.mark.xdist_group("train")


@pytest.mark.parametrize("n,bs", [(n, bs) for bs in (1, 2, 3, 8, 32) for n in range(1, 40)])
def test_batches_cover_every_row_once_and_none_holds_one(n, bs):
    b = batch_starts(n, bs)
    rows = [i for s, e in b for i in range(s, e)]
    assert rows == list(range(n))
    if n >= 2 and bs >= 2:
        assert min(e - s for s, e in b) >= 2
    assert max(e - s for s, e in b) <= max(bs, 1) + 1


@pytest.mark.parametrize("world", [2, 3, 4])
def test_data_parallel_batches_give_every_rank_two_rois(world):
    for n in range(2 * world, 60):
        for s, e in batch_starts(n, 8 * world, min_size=2 * world):
            shares = np.array_split(np.arange(e - s), world)
            assert min(len(x) for x in shares) >= 2, (n, s, e)


def _cfg(tmp_path, recipe, bs, *extra):
    ov = ["data.roi_size=32", "train.epochs=1", f"train.batch_size={bs}", "train.threads=1", *extra]
    if recipe == "seed":
        ov.append("model.kwargs={width: 0.0625}")
    if recipe == "finetune":
        ov.append("model.pretrained=false")
    return resolve_config(recipe=recipe, overrides=ov)


@pytest.mark.parametrize("recipe", ["seed", "small", "finetune"])
@pytest.mark.parametrize("n_train,bs", [(9, 8), (17, 8), (33, 32), (5, 2), (3, 2)])
def test_every_recipe_trains_any_size(tmp_path, recipe, n_train, bs):
    """Training parts that leave a remainder of one ROI (and others) train to the end."""
    rng = np.random.default_rng(n_train)
    n = n_train + 8
    x = rng.random((n, 3, 32, 32)).astype(np.float32)
    y = np.r_[np.zeros(n // 2), np.ones(n - n // 2)].astype(np.int64)
    rng.shuffle(y)
    idx = np.arange(n)
    res = fit_fold(_cfg(tmp_path, recipe, bs), x, y, idx[:n_train], idx[n_train:n_train + 4], idx[n_train + 4:],
                   tmp_path / "fold", seed=0)
    assert res.test_logits.shape == (4,) and np.isfinite(res.test_logits).all()
    assert len(res.history) == 1


def test_the_seed_recipe_on_81_rois_at_batch_8_cross_validates(tmp_path):
    """The case a user hit: 81 ROIs, batch 8, the seed's contiguous folds (65 training ROIs = 8 x 8 + 1)."""
    from mammodecomp.train import cross_validate
    import pandas as pd
    rng = np.random.default_rng(0)
    rows = []
    from PIL import Image
    (tmp_path / "img").mkdir()
    for i in range(81):
        p = tmp_path / "img" / f"r{i}.png"
        Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(p)
        rows.append({"roi_id": f"r{i}", "patient_id": f"p{i}", "label": int(i % 2), "image_path": str(p)})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    cfg = resolve_config(recipe="seed", overrides={
        "data.manifest": str(tmp_path / "m.csv"), "data.roi_size": 32, "train.epochs": 1, "train.batch_size": 8,
        "model.kwargs": {"width": 0.0625}, "decomposition.k": 3, "decomposition.store": str(tmp_path / "store"),
        "cv.n_boot": 20, "train.threads": 1})
    run = cross_validate(cfg, tmp_path / "run", progress_bars=False)
    oof = pd.read_csv(run / "oof.csv")
    assert len(oof) == 80     # 81 // 5 * 5: the contiguous folds leave the last row untested, as the seed did
