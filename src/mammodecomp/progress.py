"""Progress bars that respect ``--quiet`` and non-interactive runs."""
from __future__ import annotations

import os

from tqdm.auto import tqdm


def quiet() -> bool:
    return os.environ.get("MAMMODECOMP_QUIET") == "1"


def progress(iterable=None, *, total=None, desc: str = "", leave: bool = False, disable: bool | None = None):
    """A tqdm bar; hidden with ``--quiet`` (MAMMODECOMP_QUIET=1)."""
    return tqdm(iterable, total=total, desc=desc, leave=leave, dynamic_ncols=True,
                disable=quiet() if disable is None else disable)
