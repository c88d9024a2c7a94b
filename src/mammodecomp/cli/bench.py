"""`mammodecomp bench`: run one of the repository's benchmark scripts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List

import typer

from . import app

BENCHES = {"decompose": "decompose.py", "synth": "synth.py", "train": "train.py", "study": "study.py"}


def bench_dir() -> Path | None:
    """The bench/ folder of a source checkout (benchmarks are not shipped in the wheel)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "bench" / "decompose.py").is_file() and (parent / "pyproject.toml").is_file():
            return parent / "bench"
    return None


@app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="decompose | synth | train | study"),
    args: List[str] = typer.Argument(None, help="Arguments for the script (e.g. --quick)."),
):
    """Run a benchmark from the source checkout; it writes its section of BENCHMARKS.md.

    Example: mammodecomp bench decompose --quick
    """
    from ..errors import InputError
    if name not in BENCHES:
        raise InputError(f"unknown benchmark '{name}'; expected one of: {', '.join(BENCHES)}")
    folder = bench_dir()
    if folder is None:
        raise InputError("benchmarks live in the source checkout's bench/ folder, which this installation "
                         "does not have; clone the repository and `pip install -e .`")
    extra = list(args or []) + list(ctx.args)
    r = subprocess.run([sys.executable, str(folder / BENCHES[name]), *extra], cwd=folder.parent)
    raise typer.Exit(r.returncode)
