"""Scaling a study out: one GPU well used, many GPUs, many machines.

Submodules (imported on first use; Ray is never imported by the core):

* :mod:`mammodecomp.device` (below the trainer, not in this package) --
  inputs resident on the device as float16 (``train.device_resident``), the
  cuDNN autotuner and ``torch.compile``; used by :func:`mammodecomp.fit.fit_fold`.
* :mod:`~mammodecomp.scale.ray_cv` -- :class:`RayFoldRunner`, folds and
  repeats as Ray tasks (one fold per GPU, or a fraction of one), gathered into
  the ordinary run directory.
* :mod:`~mammodecomp.scale.ray_decompose` -- :func:`ray_decompose`,
  :func:`ray_extract_rois`, :func:`ray_prepare_store`: a large manifest cut
  and decomposed on Ray workers into the ordinary store.
* :mod:`~mammodecomp.scale.ddp` -- :func:`fit_fold_ddp` and
  :class:`TorchrunFoldRunner`: one fold trained data-parallel under torchrun.

See docs/scale.md for how to run a study on a Ray cluster and with torchrun.

Examples
--------
>>> from mammodecomp import scale
>>> scale.RayFoldRunner(num_gpus_per_fold=1).num_gpus_per_fold
1
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "RayFoldRunner": "ray_cv",
    "ray_decompose": "ray_decompose", "ray_extract_rois": "ray_decompose", "ray_prepare_store": "ray_decompose",
    "fit_fold_ddp": "ddp", "TorchrunFoldRunner": "ddp",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
