"""Progress bars that respect ``--quiet`` and non-interactive runs."""
from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def quiet() -> bool:
    return os.environ.get("MAMMODECOMP_QUIET") == "1"


def _tty() -> bool:
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def progress(iterable=None, *, total=None, desc: str = "", leave: bool = False, disable: bool | None = None):
    """A tqdm bar; hidden with ``--quiet`` (MAMMODECOMP_QUIET=1).

    When stderr is not a terminal (a CI log, ``nohup``, a file), a bar
    redraws at most every 30 s instead of ten times a second, and always
    ends its line when it closes, so whatever is printed next (an error
    above all) starts on a line of its own.
    """
    tty = _tty()
    return tqdm(iterable, total=total, desc=desc, leave=leave or not tty, dynamic_ncols=True,
                mininterval=0.1 if tty else 30.0, disable=quiet() if disable is None else disable)


def close_bars() -> None:
    """Close every open bar so that what is printed next starts on its own line.

    A bar drawn to a log (stderr not a terminal) leaves its line open; an
    error printed after it would land on the bar's line.
    """
    for b in list(getattr(tqdm, "_instances", []) or []):
        try:
            b.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
