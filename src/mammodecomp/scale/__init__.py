"""Scaling a study out: one GPU well used, many GPUs, many machines.

Submodules (imported on first use; Ray is never imported by the core):

* :mod:`~mammodecomp.scale.resident` -- inputs resident on the device as
  float16, batches indexed and augmented there (``train.device_resident``),
  cuDNN autotuner (``train.cudnn_benchmark``), ``torch.compile``
  (``train.compile``); used by :func:`mammodecomp.train.fit_fold`.
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
    "make_resident": "resident", "gather": "resident", "fits_on_device": "resident",
    "RayFoldRunner": "ray_cv",
    "ray_decompose": "ray_decompose", "ray_extract_rois": "ray_decompose", "ray_prepare_store": "ray_decompose",
    "fit_fold_ddp": "ddp", "TorchrunFoldRunner": "ddp",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
