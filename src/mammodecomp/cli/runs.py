"""`mammodecomp runs [FOLDER]` and `mammodecomp runs compare A B ...`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import app


@app.command("runs", context_settings={"allow_interspersed_args": True})
def runs_cmd(
    args: List[str] = typer.Argument(None, metavar="[FOLDER] | compare RUN_A RUN_B [RUN ...] | track RUN [RUN ...]",
                                     help="A folder to list (default runs); `compare` and two or more run "
                                          "directories; or `track` and run directories."),
    out: Path = typer.Option(Path("compare.html"), "--out", "-o",
                             help="compare: the HTML page to write."),
    n_boot: int = typer.Option(2000, "--n-boot", help="compare: patient bootstrap resamples of the paired test."),
    seed: int = typer.Option(0, "--seed", help="compare: seed of the paired test's resampling."),
    store: Optional[Path] = typer.Option(None, "--store", help="track: MLflow SQLite file (default RUN/../mlflow.db) or tracking URI."),
):
    """List the runs under a folder, compare runs, or log runs to MLflow.

    Examples: mammodecomp runs runs/ ; mammodecomp runs compare runs/demo/seed runs/demo/small ;
    mammodecomp runs track runs/demo/small (after report or export: adds them to its MLflow run)
    """
    from ..errors import InputError
    from ..io import atomic_write
    from ..runs import compare_html, compare_runs, format_compare, format_list, list_runs
    args = list(args or [])
    if args and args[0] == "track":
        from ..track import log_run
        if len(args) < 2:
            raise InputError("runs track needs one or more run directories")
        for a in args[1:]:
            typer.echo(f"{a}: logged to MLflow as run {log_run(a, store)}")
        return
    if args and args[0] == "compare":
        if n_boot < 1:
            raise InputError(f"--n-boot {n_boot}: expected an integer >= 1")
        res = compare_runs(args[1:], n_boot=n_boot, seed=seed)
        typer.echo(format_compare(res))
        with atomic_write(out, "w") as f:
            f.write(compare_html(res))
        typer.echo(f"\ncomparison page written to {out}")
        return
    if len(args) > 1:
        raise InputError(f"runs takes one folder (got {len(args)}: {' '.join(args)}); "
                         "to compare runs: mammodecomp runs compare A B")
    folder = Path(args[0]) if args else Path("runs")
    rows = list_runs(folder)
    if not rows:
        typer.echo(f"no finished run directories under {folder}")
        return
    typer.echo(format_list(rows))
