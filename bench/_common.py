"""Shared by the bench scripts: replace one '## ' section of BENCHMARKS.md atomically."""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mammodecomp.io import atomic_write  # noqa: E402


def write_section(text: str, heading: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace the section that starts with ``## {heading}`` (or append it)."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pat = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pat.search(old):
        new = pat.sub(lambda _: text.rstrip("\n") + "\n\n", old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    with atomic_write(path, "w") as f:
        f.write(new.rstrip("\n") + "\n")
