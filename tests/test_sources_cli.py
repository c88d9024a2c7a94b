"""``mammodecomp data summary`` / ``data build``: output, and bad input -> one line, exit 2."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mammodecomp.cli import main
from mammodecomp.manifest import load_manifest
from test_sources_mias import HEADER, ROWS, write_mias


def run(argv, capsys):
    code = 0
    try:
        main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def mias_root(tmp_path_factory):
    return write_mias(tmp_path_factory.mktemp("mias_cli"))


def test_summary(mias_root, capsys):
    code, out, err = run(["data", "summary", "--source", "mias", "--root", str(mias_root)], capsys)
    assert code == 0, err
    assert out.splitlines()[0] == ("mias (benign-malignant): 9 films, 6 patients; 6 ROIs (6 located) = "
                                   "5 benign + 1 malignant from 3 patients")
    assert "abnormal rows without coordinates: 2" in out


def test_summary_json_task(mias_root, capsys):
    import json
    code, out, _ = run(["data", "summary", "--source", "mias", "--root", str(mias_root), "--task",
                        "film-normal-abnormal", "--json"], capsys)
    assert code == 0 and json.loads(out)["classes"] == {"abnormal": 6, "normal": 3}


def test_build_writes_manifest(mias_root, tmp_path, capsys):
    out_path = tmp_path / "out" / "manifest.parquet"
    code, out, err = run(["data", "build", "--source", "mias", "--root", str(mias_root), "--out", str(out_path)],
                         capsys)
    assert code == 0, err
    assert out.startswith(f"wrote {out_path}")
    df = load_manifest(out_path)
    assert len(df) == 6 and df["roi_id"].iloc[0] == "mdb001_1"


def _one_line_error(code, err):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def test_summary_missing_folder(tmp_path, capsys):
    code, _, err = run(["data", "summary", "--source", "mias", "--root", str(tmp_path / "nope")], capsys)
    assert "folder not found" in _one_line_error(code, err)


def test_summary_malformed_info(tmp_path, capsys):
    root = write_mias(tmp_path / "m", rows=ROWS + "mdb007 G CIRC B 535 425\n", films=[])
    code, _, err = run(["data", "summary", "--source", "mias", "--root", str(root)], capsys)
    line = _one_line_error(code, err)
    assert f"Info.txt: line {HEADER.count(chr(10)) + 12}: malformed data row 'mdb007 G CIRC B 535 425'" in line


def test_unknown_source_and_task(tmp_path, capsys):
    code, _, err = run(["data", "summary", "--source", "ddsm", "--root", str(tmp_path)], capsys)
    assert "unknown source 'ddsm'" in _one_line_error(code, err)
    code, _, err = run(["data", "summary", "--source", "csv", "--root", str(tmp_path), "--task", "x"], capsys)
    assert "no task 'x'" in _one_line_error(code, err)


def test_console_script_no_traceback(tmp_path):
    exe = Path(sys.executable).with_name("mammodecomp")
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    root = write_mias(tmp_path / "m", rows=ROWS + "mdb007 G CIRC Q 1 2 3\n", films=[])
    p = subprocess.run([str(exe), "data", "summary", "--source", "mias", "--root", str(root)],
                       capture_output=True, text=True, timeout=120)
    line = _one_line_error(p.returncode, p.stderr)
    assert "severity 'Q' is not B or M" in line
