"""Additive decompositions of ROIs: (N,H,W) -> (N,K,H,W), sum over K == input.

One public entry, :func:`decompose`, and a registry, :data:`METHODS`, filled
by one module per method on import (``vmd``, ``fabemd``, ``starlet``,
``laplacian``, ``bands``, ``identity``).

Every method is a function ``fn(x, k, **params) -> (components, info)`` where
``x`` is a float torch tensor (N,H,W) on the target device, ``components`` is
(N,K,H,W) in the same dtype and device and ``info`` a dict. Methods are
batched (no Python loop over pixels or images), deterministic, and their
channels add back to the input; channel 0 holds the finest detail and the last
channel the coarsest part, so a constant image lands entirely in the last
channel.

Examples
--------
>>> import numpy as np
>>> x = np.random.default_rng(0).random((2, 16, 16)).astype(np.float32)
>>> c = decompose(x, "starlet", k=3)
>>> c.shape, c.dtype
((2, 3, 16, 16), dtype('float32'))
>>> bool(np.abs(c.sum(1) - x).max() < 1e-5)
True
>>> sorted(METHODS)
['bands', 'fabemd', 'identity', 'laplacian', 'starlet', 'vmd']
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..registry import Registry

METHODS = Registry("decomposition method")

#: default number of channels when ``k`` is not given
DEFAULT_K = {"identity": 1}


def _as_tensor(images, device, dtype):
    was_numpy = not isinstance(images, torch.Tensor)
    if was_numpy:
        arr = np.asarray(images)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise InputError(f"images must be a numeric array, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        t = images
    if t.ndim == 2:
        raise InputError(f"images must be (N,H,W), got a single 2-D image of shape {tuple(t.shape)}; "
                         "add a leading axis (images[None])")
    if t.ndim != 3 or t.shape[0] == 0 or t.shape[1] < 2 or t.shape[2] < 2:
        raise InputError(f"images must be (N,H,W) with N >= 1 and H, W >= 2, got shape {tuple(t.shape)}")
    if dtype is None:
        dtype = t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32
    dtype = {"float32": torch.float32, "float64": torch.float64}.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if dtype not in (torch.float32, torch.float64):
        raise InputError(f"dtype must be float32 or float64, got {dtype}")
    t = t.to(device=device if device is not None else t.device, dtype=dtype)
    if not bool(torch.isfinite(t).all()):
        raise InputError("images contain NaN or Inf; expected finite pixel values")
    return t, was_numpy


def decompose(images, method: str = "vmd", k: int | None = None, *, device=None, dtype=None,
              append_raw: bool = False, return_info: bool = False, **params):
    """Decompose ROIs into K additive components.

    Parameters
    ----------
    images : (N,H,W) numpy array or torch tensor.
    method : a name in :data:`METHODS`.
    k : number of output channels (before ``append_raw``); default 5 (1 for
        ``identity``).
    device : torch device to compute on (``"cpu"``, ``"cuda"``); default: the
        input tensor's device (CPU for numpy).
    dtype : ``torch.float32`` (default for integer/float32 input) or
        ``torch.float64`` (the input's dtype when it is float64).
    append_raw : append the input ROI as an extra last channel (K+1 channels;
        the first K still add up to the ROI).
    return_info : also return the method's info dict.
    **params : method parameters (see each method's docstring).

    Returns
    -------
    components : (N,K,H,W) (or (N,K+1,H,W)); numpy if the input was numpy
        (on the CPU), else a tensor on ``device``.
    info : dict, only with ``return_info=True``.

    Notes
    -----
    Invariant: ``components[:, :K].sum(1) == images`` to about 1e-6 of the
    image range in float32 (the methods compute their last channel so that the
    identity holds by construction, not by convergence).
    """
    fn = METHODS.get(method)
    if k is None:
        k = DEFAULT_K.get(method, 5)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    x, was_numpy = _as_tensor(images, device, dtype)
    with torch.no_grad():
        comps, info = fn(x, int(k), **params)
        if append_raw:
            comps = torch.cat([comps, x[:, None]], 1)
    out = comps.cpu().numpy() if was_numpy else comps
    return (out, info) if return_info else out


def _check_params(method: str, params: dict) -> None:
    if params:
        raise InputError(f"unknown parameter(s) {sorted(params)} for method '{method}'")


from . import bands, fabemd, identity, laplacian, starlet, vmd  # noqa: E402,F401  (fill METHODS)

__all__ = ["METHODS", "decompose"]


from .._callable import make_callable  # noqa: E402

make_callable(__name__)
