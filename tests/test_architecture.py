"""The house as imports draw it: the layer contract of pyproject.toml holds
(a module imports only from layers below it), and breaking it is caught."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports (import-linter, in the test extra) is not installed beside this Python")
    return subprocess.run([exe, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_import_layers_are_kept():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "1 kept, 0 broken" in r.stdout


def test_a_device_helper_importing_the_trainer_breaks_the_contract(tmp_path):
    """The contract is not vacuous: the old shape (device helpers under scale/, importing upwards)
    is refused."""
    work = tmp_path / "copy"
    shutil.copytree(ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")
    dev = work / "src" / "mammodecomp" / "device.py"
    dev.write_text(dev.read_text() + "\nfrom .fit import fit_fold  # noqa: E402,F401\n")
    import os
    env = dict(os.environ, PYTHONPATH=str(work / "src"))
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    r = subprocess.run([exe, "--no-cache"], cwd=work, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode != 0
    assert "mammodecomp.device -> mammodecomp.fit" in r.stdout
