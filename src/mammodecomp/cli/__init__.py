"""The ``mammodecomp`` command line (typer).

Each command group lives in its own module of this package and registers
itself on :data:`app`; ``main`` turns :class:`~mammodecomp.errors.InputError`
into ``error: <one line>`` on stderr and exit status 2 (``--debug`` shows the
traceback instead).
"""
from __future__ import annotations

import importlib
import os
import sys

import typer

from ..errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train and honestly evaluate classifiers on decomposed mammogram ROIs.")
data_app = typer.Typer(no_args_is_help=True, help="Data sets: summarise, build manifests, fetch.")
app.add_typer(data_app, name="data")

# command modules, each registering on `app` or `data_app`; a missing one is skipped
_COMMAND_MODULES = ["data", "fetch", "bench", "synth", "decompose", "cv", "diagnose", "predict", "demo", "scale", "runs"]


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars.")):
    if debug:
        os.environ["MAMMODECOMP_DEBUG"] = "1"
    if quiet:
        os.environ["MAMMODECOMP_QUIET"] = "1"


def _load_commands() -> None:
    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise


def main(argv: list[str] | None = None) -> None:
    _load_commands()
    debug = "--debug" in (argv if argv is not None else sys.argv)
    try:
        app(args=argv, standalone_mode=False)
    except InputError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors and the like
        import click
        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        if isinstance(e, click.ClickException):
            print(f"error: {e.format_message()}", file=sys.stderr)
            sys.exit(2)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        raise
