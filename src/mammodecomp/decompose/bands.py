"""Smooth radial frequency bands: a partition of unity in the Fourier domain.

Band edges are dyadic in radial frequency ``r = |xi|`` (cycles/pixel):
``r_j = 0.5 / 2**j`` for j = 1..K-1. The low-pass ``L_j(r)`` is 1 below
``r_j / s``, 0 above ``r_j * s`` (``s = sqrt(2)`` by default, ``width``)
with a raised-cosine transition in log r. Channel 0 is ``1 - L_1``, channel j
is ``L_j - L_{j+1}``, the last channel is ``L_{K-1}``: the filters add to 1
at every frequency, and only the last channel passes DC.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InputError
from . import METHODS, _check_params


#: on the CPU, two bands per complex inverse FFT (:func:`_bands_cpu`); False: the torch path
CPU_PACKED = True


def _lowpass(r: torch.Tensor, edge: float, width: float) -> torch.Tensor:
    lo, hi = math.log(edge / width), math.log(edge * width)
    t = ((torch.log(r.clamp_min(1e-12)) - lo) / (hi - lo)).clamp(0, 1)
    return 0.5 * (1 + torch.cos(math.pi * t))


def band_filters(h: int, w: int, k: int, width: float = math.sqrt(2), dtype=torch.float64,
                 device=None, full: bool = False) -> torch.Tensor:
    """(K, H, W//2+1) real filters on the ``rfft2`` grid (``full``: (K, H, W), the ``fft2`` grid); they sum to 1.

    >>> f = band_filters(16, 16, 4)
    >>> bool(torch.allclose(f.sum(0), torch.ones(16, 9, dtype=torch.float64)))
    True
    >>> f[:, 0, 0].tolist()
    [0.0, 0.0, 0.0, 1.0]
    """
    fy = torch.fft.fftfreq(h, dtype=dtype, device=device).abs()[:, None]
    fx = (torch.fft.fftfreq if full else torch.fft.rfftfreq)(w, dtype=dtype, device=device).abs()[None, :]
    r = torch.sqrt(fy ** 2 + fx ** 2)
    lows = [torch.ones_like(r)] + [_lowpass(r, 0.5 / 2 ** j, width) for j in range(1, k)]
    lows[1:] = [torch.where(r == 0, torch.ones_like(r), lp) for lp in lows[1:]]
    bands = [lows[j] - lows[j + 1] for j in range(k - 1)] + [lows[k - 1]]
    return torch.stack(bands, 0)


@METHODS.register("bands")
def bands(x: torch.Tensor, k: int, width: float = math.sqrt(2), **params):
    """Split the spectrum into K smooth dyadic radial bands (finest first).

    Parameters
    ----------
    width : ratio between a band edge and the ends of its transition (> 1).
    """
    _check_params("bands", params)
    if not width > 1:
        raise InputError(f"bands: width must be > 1, got {width}")
    n, h, w = x.shape
    info = {"edges": [0.5 / 2 ** j for j in range(1, k)]}
    if x.device.type == "cpu" and k > 2 and CPU_PACKED:
        return torch.from_numpy(_bands_cpu(x.contiguous().numpy(), k, width)), info
    filt = band_filters(h, w, k, width, dtype=x.dtype, device=x.device)
    X = torch.fft.rfft2(x)
    comps = torch.fft.irfft2(X[:, None, :, :] * filt[None, : k - 1], s=(h, w)) if k > 1 else x.new_zeros(n, 0, h, w)
    last = x - comps.sum(1)
    return torch.cat([comps, last[:, None]], 1), info


def _bands_cpu(x: np.ndarray, k: int, width: float) -> np.ndarray:
    """The CPU path: two bands per inverse FFT.

    The filters are real and even (functions of ``|xi|``), so for a real image
    ``ifft2(F (B_a + i B_b)) = u_a + i u_b``: one complex inverse FFT gives two
    bands, and pocketfft's complex transforms are much faster here than
    torch's complex-to-real ones (bench/decompose.py).
    """
    from scipy import fft as sfft
    n, h, w = x.shape
    workers = max(1, torch.get_num_threads())
    filt = band_filters(h, w, k, width, dtype=torch.float64, full=True)[: k - 1].numpy()
    ctype = np.complex64 if x.dtype == np.float32 else np.complex128
    pairs = np.zeros(((k - 1 + 1) // 2, h, w), dtype=ctype)
    pairs.real = filt[0::2]
    pairs.imag[: (k - 1) // 2] = filt[1::2]
    F = sfft.fft2(x, workers=workers)
    Z = sfft.ifft2(F[:, None] * pairs[None], workers=workers, overwrite_x=True)
    out = np.empty((n, k, h, w), dtype=x.dtype)
    out[:, 0:k - 1:2] = Z.real
    out[:, 1:k - 1:2] = Z.imag[:, : (k - 1) // 2]
    np.subtract(x, out[:, : k - 1].sum(1), out=out[:, k - 1])
    return out
