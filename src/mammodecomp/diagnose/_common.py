"""Findings: the unit of evidence shared by every family.

A finding is a plain dict (JSON-ready) made by :func:`finding`::

    {"id", "family", "title", "severity", "measured", "values", "figure",
     "meaning", "fix", "notes"}

``severity`` is one of :data:`SEVERITIES`, from most to least serious;
``figure`` names the report figure that shows the evidence (or None);
``values`` holds the numbers the verdict rules read.
"""
from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score

#: severities, most serious first; "ok" means the check passed
SEVERITIES = ("high", "medium", "low", "info", "ok")


def finding(id: str, family: str, title: str, severity: str, measured: str, *, values: dict | None = None,
            figure: str | None = None, meaning: str = "", fix: str = "", notes: str = "") -> dict:
    """Build one finding dict (see module docstring).

    Examples
    --------
    >>> f = finding("x.y", "x", "A title", "low", "what was measured", values={"a": np.float32(0.5)})
    >>> f["severity"], f["values"]["a"], type(f["values"]["a"]).__name__
    ('low', 0.5, 'float')
    """
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity!r} not in {SEVERITIES}")
    return {"id": id, "family": family, "title": title, "severity": severity, "measured": measured,
            "values": jsonable(values or {}), "figure": figure, "meaning": meaning, "fix": fix,
            "notes": notes}


def skipped(id: str, family: str, title: str, reason: str) -> dict:
    """A finding for evidence that could not be measured on this run."""
    return finding(id, family, title, "info", f"not measured: {reason}", values={"skipped": True})


def jsonable(obj):
    """Numpy scalars/arrays -> Python; NaN/Inf -> None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


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
