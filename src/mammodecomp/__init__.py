"""mammodecomp: honest classifiers on decomposed mammogram ROIs.

The public API, imported lazily so that ``import mammodecomp`` stays light:

- :func:`load_manifest` — read and validate a manifest (one row per ROI).
- :func:`decompose` — (N,H,W) -> (N,K,H,W), components that add up to the ROI.
- :func:`cross_validate` — run a recipe under patient-grouped CV into a run directory.
- :func:`diagnose` — evidence for why a run over-fits (diagnosis.json).
- :func:`predict` — fold-ensemble predictions of a run on new ROIs.
"""
from __future__ import annotations

__version__ = "0.1.0"

#: public name -> (module, attribute); a module whose name is its function's
#: (decompose, diagnose, predict) is callable itself (see ``_callable``)
_API = {
    "load_manifest": ("mammodecomp.manifest", "load_manifest"),
    "decompose": ("mammodecomp.decompose", None),
    "cross_validate": ("mammodecomp.train", "cross_validate"),
    "diagnose": ("mammodecomp.diagnose", None),
    "write_report": ("mammodecomp.report", "write_report"),
    "predict": ("mammodecomp.predict", None),
    "resolve_config": ("mammodecomp.config", "resolve_config"),
    "create_model": ("mammodecomp.models", "create_model"),
    "build_manifest": ("mammodecomp.sources", "build_manifest"),
    "read_run": ("mammodecomp.rundir", "read_run"),
    "run_study": ("mammodecomp.study", "run_study"),
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib
        mod, attr = _API[name]
        m = importlib.import_module(mod)
        return m if attr is None else getattr(m, attr)
    raise AttributeError(f"module 'mammodecomp' has no attribute {name!r}")
