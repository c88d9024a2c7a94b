"""Every example in README.md runs, as written (paths under runs/ moved to a temp folder)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("readme")]


def _block(heading: str, lang: str) -> str:
    sec = README.split(heading, 1)[1]
    return re.search(rf"```{lang}\n(.*?)```", sec, re.S).group(1)


def _run_lines(block: str, tmp: Path) -> list[str]:
    outs = []
    env = dict(os.environ, MAMMODECOMP_QUIET="1")
    for line in [ln.strip() for ln in block.splitlines() if ln.strip().startswith("mammodecomp ")]:
        args = line.replace("runs/", f"{tmp}/runs/").split()[1:]
        r = subprocess.run([sys.executable, "-m", "mammodecomp", *args], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{line}\n{r.stderr[-2000:]}"
        outs.append(r.stdout)
    return outs


def test_worked_example_on_mini_mias(tmp_path, mias_root):
    outs = _run_lines(_block("## Worked example on mini-MIAS", "bash"), tmp_path)
    assert "322 films, 161 patients; 119 ROIs (119 located) = 68 benign + 51 malignant from 104 patients" in outs[0]
    run = tmp_path / "runs" / "mias" / "small"
    for f in ("oof.csv", "summary.json", "diagnosis.json", "report.html", "export/MODEL_CARD.md"):
        assert (run / f).is_file(), f
    # predict --fold 0 through the run's own preprocessing reproduces fold 0's out-of-fold probabilities
    import pandas as pd
    preds = pd.read_csv(tmp_path / "runs" / "mias" / "preds.csv", dtype={"roi_id": str}).set_index("roi_id")
    oof = pd.read_csv(run / "oof.csv", dtype={"roi_id": str})
    f0 = oof[oof["fold"] == 0].set_index("roi_id")
    assert len(f0) > 10
    assert (abs(preds.loc[f0.index, "prob"] - f0["prob"]) < 1e-5).all()
    # cv found the components that `decompose` cached: one store entry only
    assert len(list((tmp_path / "runs" / "mias" / "store").glob("*.npy"))) == 2  # components + rois


def test_study_example(tmp_path, mias_root):
    block = README.split("To compare recipes and input variants", 1)[1]
    _run_lines(re.search(r"```bash\n(.*?)```", block, re.S).group(1), tmp_path)
    assert (tmp_path / "runs" / "mias-study" / "report.html").is_file()


def test_python_api_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAMMODECOMP_QUIET", "1")
    code = _block("## Python API", "python")
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert (tmp_path / "runs" / "api" / "diagnosis.json").is_file()
    assert ns["findings"]["verdict"] is not None


def test_every_command_help_has_an_example():
    from typer.testing import CliRunner

    from mammodecomp.cli import _load_commands, app
    _load_commands()
    runner = CliRunner()
    cmds = ["demo", "synth", "decompose", "cv", "study", "diagnose", "report", "predict", "export", "bench",
            "data summary", "data build", "data fetch", "scale decompose", "scale cv"]
    for c in cmds:
        r = runner.invoke(app, [*c.split(), "--help"])
        assert r.exit_code == 0, c
        assert "Example" in r.output, f"`mammodecomp {c} --help` shows no example"


def test_bring_your_own_data_csv_example(tmp_path):
    """The README's CSV, with files of those names, builds a valid manifest."""
    import numpy as np
    from PIL import Image

    from test_io import write_dicom
    csv_text = _block("## Bring your own data", "csv")
    (tmp_path / "films").mkdir()
    (tmp_path / "rois").mkdir()
    write_dicom(tmp_path / "films" / "case001_L_CC.dcm", np.full((1100, 1100), 2000, np.uint16))
    Image.fromarray(np.full((64, 64), 120, np.uint8)).save(tmp_path / "rois" / "case002.png")
    (tmp_path / "my.csv").write_text(csv_text)
    line = [ln for ln in README.split("## Bring your own data", 1)[1].split("`")
            if ln.startswith("mammodecomp data build")][0]
    args = " ".join(line.split()).split()[1:]
    r = subprocess.run([sys.executable, "-m", "mammodecomp", *args], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, MAMMODECOMP_QUIET="1"))
    assert r.returncode == 0, r.stderr
    import pandas as pd
    df = pd.read_parquet(tmp_path / "manifest.parquet")
    assert df["label"].tolist() == [1, 0] and df["patient_id"].tolist() == ["case001", "case002"]
