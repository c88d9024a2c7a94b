import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MAMMODECOMP_QUIET", "1")

MIAS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mini-mias"


@pytest.fixture(scope="session")
def mias_root() -> Path:
    if not (MIAS / "Info.txt").is_file():
        pytest.skip(f"mini-MIAS not found at {MIAS} (download it with `mammodecomp data fetch mias`)")
    return MIAS


#: the tiny synthetic cross-validation every training test starts from
TINY_OVERRIDES = ("data.synth.n_patients=16", "data.synth.size=64", "data.roi_size=32", "train.epochs=2",
                  "train.batch_size=8", "cv.n_folds=2", "cv.n_boot=20", "train.threads=1")


@pytest.fixture(scope="session")
def tiny_cfg():
    """Factory of the tiny config: ``tiny_cfg(tmp_path, *overrides, recipe="small")``.

    16 synthetic patients, 64 px images, 32 px ROIs, 2 epochs of batch 8, 2
    folds, 20 bootstrap draws, one thread, the store under *tmp_path*;
    *overrides* come last, so they win.
    """
    from mammodecomp.config import resolve_config

    def make(tmp_path, *extra: str, recipe: str = "small"):
        return resolve_config(recipe=recipe, overrides=[*TINY_OVERRIDES, f"decomposition.store={tmp_path}/store",
                                                        *extra])
    return make
