"""The ``mammodecomp decompose`` command, end to end on two tiny PNG ROIs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mammodecomp.cli import main


@pytest.fixture()
def manifest(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(2):
        p = tmp_path / f"roi{i}.png"
        Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8)).save(p)
        rows.append({"roi_id": f"r{i}", "patient_id": f"p{i}", "label": i, "image_path": str(p)})
    m = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(m, index=False)
    return m


def test_decompose_command_computes_then_reuses(manifest, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MAMMODECOMP_QUIET", "1")
    out = tmp_path / "store"
    argv = ["decompose", "--manifest", str(manifest), "--method", "starlet", "-k", "3", "--out", str(out),
            "--size", "32", "--batch-size", "1"]
    main(argv)
    first = capsys.readouterr().out
    assert first.startswith("computed starlet k=3: 2 ROIs")
    (npy,) = out.glob("*.npy")
    arr = np.load(npy)
    assert arr.shape == (2, 3, 32, 32) and arr.dtype == np.float16
    rois = pd.read_csv(next(out.glob("*.rois.csv")))
    assert rois["roi_id"].astype(str).tolist() == ["r0", "r1"]
    main(argv)
    assert capsys.readouterr().out.startswith("reused starlet k=3")


def test_decompose_command_errors(manifest, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["decompose", "--manifest", str(manifest), "--method", "nope", "--out", str(tmp_path / "s")])
    assert e.value.code == 2
    assert "error: unknown decomposition method 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["decompose", "--manifest", str(manifest), "--method", "vmd", "--param", "alpha",
              "--out", str(tmp_path / "s")])
    assert e.value.code == 2
    assert "NAME=VALUE" in capsys.readouterr().err
