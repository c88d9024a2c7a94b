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
