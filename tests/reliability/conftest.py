"""Fixtures of the reliability suite (helpers live in relhelp.py)."""
import pytest

from relhelp import run_cli


@pytest.fixture
def cli(capsys):
    """``cli(args) -> (code, stdout, stderr)``."""
    return lambda args: run_cli(args, capsys)
