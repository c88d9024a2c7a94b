"""Findings: the unit of evidence shared by every family.

A :class:`Finding` is a frozen dataclass; :meth:`Finding.to_dict` gives the
JSON-ready dict written to ``diagnosis.json``::

    {"id", "family", "title", "severity", "measured", "values", "figure",
     "meaning", "fix", "notes"}

``severity`` is one of :data:`SEVERITIES`, from most to least serious;
``figure`` names the report figure that shows the evidence (or None);
``values`` holds the numbers the verdict rules read, under the names the
family module exports (see :mod:`mammodecomp.diagnose.checks`).
"""
from __future__ import annotations

import math
from dataclasses import KW_ONLY, asdict, dataclass, field

import numpy as np
from ..io import strict_json as jsonable   # one strict-JSON conversion for the package
from sklearn.metrics import roc_auc_score

#: severities, most serious first; "na": the comparison is not defined on
#: this run (the finding says why); "ok": the check passed
SEVERITIES = ("high", "medium", "low", "info", "na", "ok")
#: value written by a finding whose evidence could not be measured
SKIPPED = "skipped"
#: value written by a not-applicable finding: why the comparison is undefined
REASON = "reason"


@dataclass(frozen=True)
class Finding:
    """One piece of evidence.

    Attributes
    ----------
    id : ``"<family>.<name>"``, unique in a diagnosis.
    family : the report section it belongs to.
    title, measured, meaning, fix, notes : prose for the report.
    severity : one of :data:`SEVERITIES`.
    values : the numbers behind it (numpy scalars become Python, NaN None).
    figure : the report figure that shows it, or None.
    arrays : large arrays for the report (Grad-CAM maps); not in ``to_dict``.

    Examples
    --------
    >>> f = Finding("x.y", "x", "A title", "low", "what was measured", values={"a": np.float32(0.5)})
    >>> f.severity, f.values["a"], type(f.values["a"]).__name__
    ('low', 0.5, 'float')
    >>> sorted(f.to_dict())[:4]
    ['family', 'figure', 'fix', 'id']
    """

    id: str
    family: str
    title: str
    severity: str
    measured: str
    _: KW_ONLY
    values: dict = field(default_factory=dict)
    figure: str | None = None
    meaning: str = ""
    fix: str = ""
    notes: str = ""
    arrays: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} not in {SEVERITIES}")
        object.__setattr__(self, "values", jsonable(self.values or {}))

    @property
    def skipped(self) -> bool:
        """True when the evidence was not measured (its values hold nothing to read)."""
        return bool(self.values.get(SKIPPED))

    def to_dict(self) -> dict:
        """The JSON-ready dict of ``diagnosis.json`` (without ``arrays``)."""
        d = asdict(self)
        d.pop("arrays")
        return d

    @classmethod
    def not_measured(cls, id: str, family: str, title: str, reason: str) -> "Finding":
        """Evidence that could not be measured on this run."""
        return cls(id, family, title, "info", f"not measured: {reason}", values={SKIPPED: True})

    @classmethod
    def not_applicable(cls, id: str, family: str, title: str, reason: str, *, values: dict | None = None,
                       figure: str | None = None, meaning: str = "") -> "Finding":
        """A comparison that is undefined on this run (severity ``"na"``), with the reason.

        Examples
        --------
        >>> f = Finding.not_applicable("m.x", "m", "T", "every test fold holds one class")
        >>> f.severity, f.measured, f.values["reason"]
        ('na', 'not applicable: every test fold holds one class', 'every test fold holds one class')
        """
        return cls(id, family, title, "na", f"not applicable: {reason}", values={**(values or {}), REASON: reason},
                   figure=figure, meaning=meaning)


def safe_auc(y, p) -> float:
    """ROC AUC, NaN when only one class is present."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, np.asarray(p, dtype=np.float64)))


def fmt(v, nd: int = 3) -> str:
    """A number for prose: ``nan``-safe, *nd* decimals."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{float(v):.{nd}f}"
