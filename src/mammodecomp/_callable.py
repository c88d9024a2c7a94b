"""Modules that are also their own main function.

``mammodecomp.diagnose`` is a package (``mammodecomp.diagnose.load_study``,
``import mammodecomp.diagnose``) *and* the function a user calls
(``from mammodecomp import diagnose; diagnose(run)``). The module's class is
swapped for one whose instances are callable, so one name serves both.
"""
from __future__ import annotations

import sys
import types


def make_callable(module_name: str, func_name: str | None = None) -> None:
    """Calling module ``module_name`` calls its function ``func_name`` (default: the last name part)."""
    mod = sys.modules[module_name]
    attr = func_name or module_name.rsplit(".", 1)[-1]

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(self, attr)(*args, **kwargs)

    _CallableModule.__call__.__doc__ = getattr(mod, attr).__doc__
    mod.__class__ = _CallableModule
