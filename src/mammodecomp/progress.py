"""Progress bars that respect ``--quiet`` and non-interactive runs."""
from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def quiet() -> bool:
    return os.environ.get("MAMMODECOMP_QUIET") == "1"


def progress(iterable=None, *, total=None, desc: str = "", leave: bool = False, disable: bool | None = None):
    """A tqdm bar; hidden with ``--quiet`` (MAMMODECOMP_QUIET=1).

    When stderr is not a terminal (a CI log, ``nohup``, a file), a bar
    redraws at most every 30 s instead of ten times a second.
    """
    tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, leave=leave, dynamic_ncols=True,
                mininterval=0.1 if tty else 30.0, disable=quiet() if disable is None else disable)
