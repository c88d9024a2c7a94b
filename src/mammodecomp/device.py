"""The training device: which one, inputs resident on it, batches gathered there.

This module sits below the trainer (:mod:`mammodecomp.fit`) and the scale-out
runners; it imports nothing of mammodecomp.

A study's inputs are small beside an accelerator's memory (1000 ROIs x 5
components x 320 x 320 in float16 is 1 GB), so the fastest loop copies them to
the device once and never goes back to the host inside an epoch: the batch is
an index into the resident tensor, augmentation runs on the device
(:class:`mammodecomp.augment.Augment` works on tensors on any device) and the
labels live there too.

The same code runs on the CPU (the "device" is then host memory), which is how
the tests check that the resident path gives the host path's predictions.

Examples
--------
>>> import numpy as np, torch
>>> x = np.arange(2 * 1 * 2 * 2, dtype=np.float32).reshape(2, 1, 2, 2)
>>> r = make_resident(x, "cpu")
>>> r.dtype, tuple(r.shape)
(torch.float16, (2, 1, 2, 2))
>>> gather(r, torch.tensor([1])).dtype
torch.float32
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch

__all__ = ["resolve_device", "resident_nbytes", "fits_on_device", "make_resident", "gather", "cudnn_benchmark", "maybe_compile"]

def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; any other name as torch reads it.

    With ``local_rank`` (a data-parallel process), a CUDA device without an
    index becomes ``cuda:local_rank``.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if local_rank is not None and dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


#: fraction of the device's free memory the resident inputs may take
DEFAULT_HEADROOM = 0.5


def resident_nbytes(x, dtype=torch.float16) -> int:
    """Bytes the inputs ``x`` take on the device in ``dtype``.

    Parameters
    ----------
    x : array-like with a ``shape``
        The inputs (N, C, H, W).
    dtype : torch.dtype
        Storage dtype on the device.

    Returns
    -------
    int
        ``prod(shape) * itemsize``.
    """
    return int(np.prod(x.shape)) * torch.empty((), dtype=dtype).element_size()


def fits_on_device(nbytes: int, device: torch.device | str, headroom: float = DEFAULT_HEADROOM) -> bool:
    """Whether ``nbytes`` fit in ``headroom`` of the device's free memory.

    Parameters
    ----------
    nbytes : int
        Bytes to place.
    device : torch.device or str
        Target device. Non-CUDA devices (the CPU) always answer True: the
        host copy is already there.
    headroom : float
        Largest fraction of the free memory the inputs may take; the rest is
        left to activations, gradients and the optimiser.

    Returns
    -------
    bool
    """
    device = torch.device(device)
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= headroom * free


def make_resident(x, device: torch.device | str, dtype=torch.float16, *, headroom: float = DEFAULT_HEADROOM,
                  chunk_rows: int = 256) -> torch.Tensor | None:
    """Copy inputs to ``device`` once, as ``dtype``; None when they do not fit.

    Parameters
    ----------
    x : numpy array (N, C, H, W) (a memmap is fine) or torch tensor
        The inputs in manifest row order.
    device : torch.device or str
        Where to keep them.
    dtype : torch.dtype
        Storage dtype; float16 (default) halves the footprint and is exact
        for decomposed components, which the store already keeps in float16.
    headroom : float
        See :func:`fits_on_device`.
    chunk_rows : int
        Rows converted and copied per step, so a float32 host array is never
        duplicated whole.

    Returns
    -------
    torch.Tensor or None
        (N, C, H, W) tensor on ``device``; None (with a warning) when it does
        not fit, in which case callers keep the host path.

    Notes
    -----
    Raw ROIs (the ``raw`` and ``components+raw`` variants) are float32 on the
    host; rounding them to float16 changes them by at most 2**-11 relative,
    so predictions then match the host path to a tolerance, not exactly.
    """
    device = torch.device(device)
    need = resident_nbytes(x, dtype)
    if not fits_on_device(need, device, headroom):
        warnings.warn(f"inputs need {need / 2**30:.2f} GiB on {device}, more than {headroom:.0%} of its free "
                      "memory; keeping them on the host", RuntimeWarning, stacklevel=2)
        return None
    out = torch.empty(tuple(x.shape), dtype=dtype, device=device)
    for s in range(0, x.shape[0], chunk_rows):
        part = x[s:s + chunk_rows]
        t = part if isinstance(part, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(part))
        out[s:s + t.shape[0]].copy_(t.to(dtype), non_blocking=False)
    return out


def gather(resident: torch.Tensor, idx: torch.Tensor, *, channels_last: bool = False) -> torch.Tensor:
    """Rows ``idx`` of the resident inputs as float32, on their device.

    Parameters
    ----------
    resident : torch.Tensor
        (N, C, H, W) from :func:`make_resident`.
    idx : torch.Tensor
        int64 row indices on the same device.
    channels_last : bool
        Return the batch in ``torch.channels_last`` memory format.

    Returns
    -------
    torch.Tensor
        (len(idx), C, H, W) float32.
    """
    xb = resident.index_select(0, idx).float()
    if channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    return xb


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool, device: torch.device):
    """Turn the cuDNN autotuner on while a fold trains, then restore it.

    Parameters
    ----------
    enabled : bool
        Whether to turn it on (``train.cudnn_benchmark``).
    device : torch.device
        Only a CUDA device changes anything.

    Notes
    -----
    The autotuner picks the fastest convolution algorithm per input shape;
    the choice may differ between runs, so bit-for-bit reproducibility on a
    GPU needs it off (the default).
    """
    if not enabled or device.type != "cuda":
        yield
        return
    prev = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = prev


def maybe_compile(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """``torch.compile(model)`` when enabled, else the model itself.

    Parameters
    ----------
    model : torch.nn.Module
        The model to run; its own ``state_dict`` (plain names) is what is
        saved, the compiled wrapper is only called.
    enabled : bool
        ``train.compile``.

    Returns
    -------
    torch.nn.Module
        A module with the same parameters; calling it runs the compiled
        graph (the last, smaller batch of an epoch triggers one recompile with
        a dynamic batch dimension).
    """
    if not enabled:
        return model
    return torch.compile(model)
