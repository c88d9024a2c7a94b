"""Options and arguments shared by the commands, defined once."""
from __future__ import annotations

from pathlib import Path

import typer

#: the run (or study) directory: the first argument of every command that reads a run
RUN = typer.Argument(..., metavar="RUN", show_default=False,
                     help="A run directory (mammodecomp cv) or, where a study makes sense, a study directory.")
STORE = typer.Option(None, "--store", help="The decomposition store folder, when the run was moved without it.")
CONFIG = typer.Option(None, "--config", "-c", help="YAML config (sections data, decomposition, model, train, cv).")
RECIPE = typer.Option(None, "--recipe", "-r", help="seed | small | finetune | probe (default: the config's, else small).")
SET = typer.Option([], "--set", "-s", help="Override a config key, e.g. --set train.epochs=10 (repeatable).")
OVERWRITE = typer.Option(False, "--overwrite", help="Delete an existing run directory first.")


def out_option(default: str, help: str) -> Path:
    return typer.Option(Path(default), "--out", "-o", help=help)
