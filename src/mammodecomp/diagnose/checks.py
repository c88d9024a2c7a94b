"""The registry of diagnosis checks: one decorator per evidence family.

A check is a function of one :class:`~.context.Context` returning a list of
:class:`~._common.Finding`. It is registered with the finding ids and value
names it writes, so the verdict's rules can be held to them (a test asserts
that every value a rule reads is written by some check)::

    @register_check("split", family="split", title="Split hygiene", order=10,
                    writes={SHARED_PATIENTS: (N_SHARED, PATIENTS), ...})
    def check(ctx):
        return [...]

A new family is one module in this package and one decorator:
:func:`load_checks` imports every public module of the package, which fills
:data:`CHECKS` (the timm ``register_model`` pattern).

Invariants
----------
* Checks run in ``order``; one failing check becomes one finding saying so
  (``"<family>.error"``, severity info) and the others still run.
* A check reads only the context; results pass between checks only through
  the context's cached inputs (features, baseline probabilities), never
  through mutated dicts.
"""
from __future__ import annotations

import importlib
import pkgutil
import time
from dataclasses import dataclass, field
from typing import Callable

from ..registry import Registry
from ._common import SKIPPED, Finding

__all__ = ["Check", "CHECKS", "register_check", "load_checks", "checks", "families", "written", "run_checks"]

#: name -> :class:`Check`, filled on import of the family modules
CHECKS = Registry("diagnosis check")

#: modules of this package that hold no check
_NOT_FAMILIES = {"checks", "context", "verdict"}


@dataclass(frozen=True)
class Check:
    """One registered evidence family.

    Attributes
    ----------
    name : the step name (timings and errors in ``diagnosis.json``).
    family : the report section of its findings.
    title : the section's heading.
    order : checks run, and sections appear, by increasing order.
    fn : ``(Context) -> list[Finding]``.
    writes : finding id -> the value names it writes.
    """

    name: str
    family: str
    title: str
    order: int
    fn: Callable = field(repr=False)
    writes: dict = field(default_factory=dict)


def register_check(name: str, *, family: str, title: str, order: int, writes: dict) -> Callable:
    """Decorator: register ``fn(ctx) -> list[Finding]`` as check *name*.

    Examples
    --------
    >>> from mammodecomp.diagnose.checks import checks
    >>> [ch.name for ch in checks()][:3]
    ['split', 'metric', 'curves']
    """
    def deco(fn: Callable) -> Callable:
        CHECKS.register(name)(Check(name=name, family=family, title=title, order=order, fn=fn,
                                    writes={k: tuple(v) for k, v in writes.items()}))
        return fn
    return deco


def load_checks() -> None:
    """Import every family module of this package (each registers its checks once)."""
    pkg = importlib.import_module(__package__)
    for m in pkgutil.iter_modules(pkg.__path__):
        if not m.name.startswith("_") and m.name not in _NOT_FAMILIES:
            importlib.import_module(f"{__package__}.{m.name}")


def checks() -> list[Check]:
    """The registered checks, in run order."""
    load_checks()
    return sorted((CHECKS.get(n) for n in CHECKS), key=lambda c: (c.order, c.name))


def families() -> list[tuple[str, str]]:
    """``(family, title)`` of every report section, in order (one per family)."""
    out: dict = {}
    for c in checks():
        out.setdefault(c.family, c.title)
    return list(out.items())


def written() -> dict[str, set]:
    """finding id -> every value name some check writes for it (plus ``skipped``)."""
    out: dict = {}
    for c in checks():
        for fid, names in c.writes.items():
            out.setdefault(fid, {SKIPPED}).update(names)
    return out


def run_checks(ctx) -> tuple[list[Finding], list[dict], dict]:
    """Run every check on *ctx*.

    Returns
    -------
    findings, errors (``{"step", "error"}`` per failed check), timings
    (step name -> seconds).
    """
    findings: list[Finding] = []
    errors: list[dict] = []
    timings: dict = {}
    for c in checks():
        t0 = time.perf_counter()
        try:
            out = list(c.fn(ctx))
        except Exception as e:  # noqa: BLE001 - one step failing must not hide the others
            errors.append({"step": c.name, "error": f"{type(e).__name__}: {e}"})
            out = [Finding(f"{c.family}.error", c.family, f"{c.name}: not measured", "info",
                           f"this step failed: {type(e).__name__}: {e}", values={SKIPPED: True})]
        timings[c.name] = round(time.perf_counter() - t0, 3)
        findings += out
    return findings, errors, timings
