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
_COMMAND_MODULES = ["data", "fetch", "bench", "synth", "decompose", "cv", "diagnose", "predict", "demo", "scale", "evaluate", "runs"]


def _version(value: bool) -> None:
    if value:
        from .. import __version__
        typer.echo(f"mammodecomp {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    if debug:
        os.environ["MAMMODECOMP_DEBUG"] = "1"
    if quiet:
        os.environ["MAMMODECOMP_QUIET"] = "1"


#: flags of the root command that may also be typed after the subcommand
_GLOBAL_FLAGS = ("--debug", "--quiet", "-q")


def _hoist_global_flags(argv: list[str]) -> list[str]:
    """``mammodecomp cv -q ...`` -> ``mammodecomp -q cv ...`` (before a ``--`` only).

    >>> _hoist_global_flags(["cv", "--set", "a=1", "-q", "--", "-q"])
    ['-q', 'cv', '--set', 'a=1', '--', '-q']
    """
    end = argv.index("--") if "--" in argv else len(argv)
    flags = [a for a in argv[:end] if a in _GLOBAL_FLAGS]
    return flags + [a for a in argv[:end] if a not in _GLOBAL_FLAGS] + argv[end:]


def _load_commands() -> None:
    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise


def _usage_line(e) -> str:
    """click's message for a usage error, with a close option name suggested and the help hint."""
    import difflib
    import re
    msg = re.sub(r"\s*\(Possible options?: [^)]*\)", "", e.format_message())
    ctx = getattr(e, "ctx", None)
    opt = getattr(e, "option_name", None)
    if ctx is not None and opt and "Did you mean" not in msg:
        names = {n.lstrip("-"): n for p in ctx.command.params for n in (*p.opts, *p.secondary_opts)
                 if n.startswith("--")}
        close = difflib.get_close_matches(opt.lstrip("-"), list(names), n=1, cutoff=0.75)
        if close:
            msg += f" (did you mean {names[close[0]]}?)"
    msg = msg.rstrip(". ")
    msg += f"; see '{ctx.command_path if ctx is not None else 'mammodecomp'} --help'"
    return " ".join(msg.split())


def main(argv: list[str] | None = None) -> None:
    """The console entry point: every failure is one line on stderr and a status.

    Bad input and usage errors exit 2, an interruption 130; ``--debug`` shows
    the traceback of a bad-input error instead.
    """
    from ..progress import close_bars
    _load_commands()
    args = _hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args
    try:
        app(args=args, prog_name="mammodecomp", standalone_mode=False)
    except InputError as e:
        if debug:
            raise
        close_bars()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        close_bars()
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        close_bars()
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    except typer.TyperException as e:   # typer's own click: usage errors (unknown option, bad value...)
        if type(e).__name__ == "NoArgsIsHelpError":   # a bare group: typer has printed its help
            sys.exit(0)
        close_bars()
        print(f"error: {_usage_line(e)}", file=sys.stderr)
        sys.exit(2)
