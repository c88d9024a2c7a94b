"""mammodecomp: honest classifiers on decomposed mammogram ROIs.

The public API, imported lazily so that ``import mammodecomp`` stays light:

- :func:`load_manifest` — read and validate a manifest (one row per ROI).
- :func:`decompose` — (N,H,W) -> (N,K,H,W), components that add up to the ROI.
- :func:`cross_validate` — run a recipe under patient-grouped CV into a run directory.
- :func:`diagnose` — evidence for why a run over-fits (diagnosis.json).
- :func:`predict` — fold-ensemble predictions of a run on new ROIs.
"""
from __future__ import annotations

import sys
import types

__version__ = "0.1.0"

_API = {
    "load_manifest": ("mammodecomp.manifest", "load_manifest"),
    "decompose": ("mammodecomp.decompose", "decompose"),
    "cross_validate": ("mammodecomp.train", "cross_validate"),
    "diagnose": ("mammodecomp.diagnose", "diagnose"),
    "predict": ("mammodecomp.predict", "predict"),
    "resolve_config": ("mammodecomp.config", "resolve_config"),
    "create_model": ("mammodecomp.models", "create_model"),
}

__all__ = sorted(_API)


def _api_function(name: str):
    import importlib
    mod, attr = _API[name]
    return getattr(importlib.import_module(mod), attr)


class _Package(types.ModuleType):
    """``mammodecomp.decompose`` (and ``diagnose``, ``predict``) name both a
    submodule and the API function of the same name. Once the submodule is
    imported, Python would set the package attribute to the module; this class
    keeps ``from mammodecomp import decompose`` returning the function. The
    submodules stay reachable through ``sys.modules`` and ``from
    mammodecomp.decompose import ...``.
    """

    def __getattribute__(self, name: str):
        if name in _API:
            return _api_function(name)
        return super().__getattribute__(name)


sys.modules[__name__].__class__ = _Package
