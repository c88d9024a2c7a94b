"""Every example in README.md runs, as written, from a fresh working directory.

The shell blocks run line by line, unchanged, in a temporary folder whose parent
holds ``shared`` (a link to the project's ``../shared``), so the README's relative
paths (``runs/...``, ``../shared/data/mini-mias``) resolve as they do for a user in
a clone beside ``shared/``. What the commands write is then checked for content.
"""
import html
import json
import os
import re
import shlex
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


@pytest.fixture
def cwd(tmp_path):
    """A working directory beside a ``shared`` that is the project's ../shared."""
    (tmp_path / "shared").symlink_to(ROOT.parent / "shared", target_is_directory=True)
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


def _run_lines(block: str, cwd: Path) -> list[str]:
    outs = []
    env = dict(os.environ, MAMMODECOMP_QUIET="1")
    for line in [ln.strip() for ln in block.splitlines() if ln.strip().startswith("mammodecomp ")]:
        r = subprocess.run([sys.executable, "-m", "mammodecomp", *shlex.split(line)[1:]], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{line}\n{r.stderr[-2000:]}"
        outs.append(r.stdout)
    return outs


def _check_diagnosis_and_report(d: dict, report: Path, summary: dict) -> None:
    """What a user reads: the verdict's causes with their evidence, the headline numbers,
    and the same in report.html."""
    by_id = {f["id"]: f for f in d["findings"]}
    assert d["errors"] == []
    # every evidence family whose inputs exist is measured (the inputs are the run's own arrays)
    skipped = [i for i, f in by_id.items() if (f.get("values") or {}).get("skipped")]
    assert not skipped, skipped
    for needed in ("split.near_duplicates", "null.permutation", "baseline.texture", "attribution.occlusion"):
        assert needed in by_id, needed
    assert "not measured" not in report.read_text()
    # the headline is the run's summary
    h = d["headline"]
    assert h["auc"] == pytest.approx(summary["auc"], abs=1e-9)
    assert [h["ci_low"], h["ci_high"]] == pytest.approx(summary["auc_ci"], abs=1e-12)
    # grouped folds: no patient on both sides, no contiguous-folds cause, nothing called leakage
    assert by_id["split.shared_patients"]["values"]["n_shared"] == 0
    assert by_id["split.shared_patients"]["severity"] == "ok"
    assert by_id["split.manifest_order"]["values"]["run_used_contiguous"] is False
    causes = d["verdict"]
    assert not {c["id"] for c in causes} & {"leakage", "contiguous_folds"}
    rank = {"high": 0, "medium": 1, "low": 2}
    assert [rank[c["severity"]] for c in causes] == sorted(rank[c["severity"]] for c in causes)
    for c in causes:
        assert c["evidence"] and set(c["evidence"]) <= set(by_id), c["id"]
        assert c["summary"] and c["fix"], c["id"]
    text = report.read_text()
    assert f"<b>{h['auc']:.3f}</b>" in text
    assert f"<b>{h['ci_low']:.3f} - {h['ci_high']:.3f}</b>" in text
    for c in causes:
        assert f"<b>{html.escape(c['title'])}</b>" in text, c["id"]
    if not causes:
        assert "No rule fired" in text


def test_worked_example_on_mini_mias(cwd, mias_root, monkeypatch):
    outs = _run_lines(_block("## Worked example on mini-MIAS", "bash"), cwd)
    assert "322 films, 161 patients; 119 ROIs (119 located) = 68 benign + 51 malignant from 104 patients" in outs[0]
    run = cwd / "runs" / "mias" / "small"
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["n_rois"], summary["n_patients"], summary["cv_scheme"]) == (119, 104, "grouped")
    d = json.loads((run / "diagnosis.json").read_text())
    assert d["settings"]["n_permutations"] == 50
    # (that the 50 permutations then run is pinned by test_diagnose.py::
    # test_diagnose_finds_the_inputs_of_a_run_made_with_a_relative_store, an xfail until fixed)
    _check_diagnosis_and_report(d, run / "report.html", summary)
    # export: the ONNX file gives fold 0's out-of-fold logits, and its card says so
    import numpy as np
    import onnxruntime as ort
    import pandas as pd

    from mammodecomp.rundir import read_run as load_run
    card = (run / "export" / "MODEL_CARD.md").read_text()
    assert f"Pooled out-of-fold AUC {summary['auc']:.3f}" in card and "Research only" in card
    exp = json.loads((run / "export" / "export.json").read_text())
    assert exp["max_abs_diff"] <= 1e-4
    r = load_run(run)           # run.json's store paths are relative to the run: any cwd reads them
    f0 = r.oof[r.oof["fold"] == 0].set_index("roi_id")
    rows = np.flatnonzero(r.manifest["roi_id"].isin(f0.index).to_numpy())
    sess = ort.InferenceSession(str(run / "export" / exp["onnx"]), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"components": np.ascontiguousarray(r.inputs()[rows], dtype=np.float32)})[0].reshape(-1)
    np.testing.assert_allclose(got, f0.loc[r.manifest["roi_id"].to_numpy()[rows], "logit"], rtol=0, atol=1e-4)
    # predict --fold 0 through the run's own preprocessing reproduces fold 0's out-of-fold probabilities
    import pandas as pd
    preds = pd.read_csv(cwd / "runs" / "mias" / "preds.csv", dtype={"roi_id": str}).set_index("roi_id")
    oof = pd.read_csv(run / "oof.csv", dtype={"roi_id": str})
    f0 = oof[oof["fold"] == 0].set_index("roi_id")
    assert len(f0) > 10
    assert (abs(preds.loc[f0.index, "prob"] - f0["prob"]) < 1e-5).all()
    # cv found the components that `decompose` cached: one store entry only
    assert len(list((cwd / "runs" / "mias" / "store").glob("*.npy"))) == 2  # components + rois


def test_study_example(cwd, mias_root):
    block = README.split("To compare recipes and input variants", 1)[1]
    _run_lines(re.search(r"```bash\n(.*?)```", block, re.S).group(1), cwd)
    study = cwd / "runs" / "mias-study"
    arms = json.loads((study / "study.json").read_text())["arms"]
    assert set(arms) == {"small", "raw"} and arms["raw"]["recipe"] == "small"
    assert "decomposition.variant=raw" in arms["raw"]["overrides"]
    d = json.loads((study / "diagnosis.json").read_text())
    assert d["is_study"] and d["siblings"] == ["raw"]
    _check_diagnosis_and_report(d, study / "report.html", json.loads((study / "small" / "summary.json").read_text()))
    # the components-vs-raw ablation is measured from the sibling run, on the same ROIs
    ab = next(f for f in d["findings"] if f["id"] == "ablation.channels")["values"]
    assert ab["source"] == "runs"
    assert any({c["a"], c["b"]} == {"components", "raw"} and c["n"] == 119 for c in ab["comparisons"])


def test_python_api_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAMMODECOMP_QUIET", "1")
    code = _block("## Python API", "python")
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    run = tmp_path / "runs" / "api"
    assert ns["run"] == Path("runs/api")
    on_disk = json.loads((run / "diagnosis.json").read_text())
    assert on_disk == json.loads(json.dumps(ns["findings"]))
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["n_patients"], summary["recipe"]) == (40, "small")
    from mammodecomp.report import write_report
    _check_diagnosis_and_report(ns["findings"], write_report(run), summary)


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
