"""Errors that reach the user as one line.

Every error raised for bad *input* (a file, a row, a config value) is an
:class:`InputError`. The CLI prints ``error: <message>`` on stderr and exits
with status 2, without a traceback unless ``--debug`` is given.

Messages follow scikit-learn's habit: name the thing (file, row, field), the
value found, what was expected and, where there is one, the fix.
"""
from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """A bad input: the message is one line meant for the user."""

    def __init__(self, message: str, *, path: str | Path | None = None, row: int | None = None,
                 field: str | None = None):
        where = []
        if path is not None:
            where.append(str(path))
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        text = f"{prefix}: {message}" if prefix else message
        # one line, always
        text = " ".join(str(text).split())
        super().__init__(text)
        self.message = " ".join(str(message).split())   # without the file/row/field prefix
        self.path = path
        self.row = row
        self.field = field


class StageMissingError(InputError):
    """A stage was asked to run before the stage that makes its input."""


class VersionMismatchError(InputError):
    """A store or run directory written by an incompatible version."""
