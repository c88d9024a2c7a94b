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

import torch

from ..errors import InputError
from . import METHODS, _check_params


def _lowpass(r: torch.Tensor, edge: float, width: float) -> torch.Tensor:
    lo, hi = math.log(edge / width), math.log(edge * width)
    t = ((torch.log(r.clamp_min(1e-12)) - lo) / (hi - lo)).clamp(0, 1)
    return 0.5 * (1 + torch.cos(math.pi * t))


def band_filters(h: int, w: int, k: int, width: float = math.sqrt(2), dtype=torch.float64,
                 device=None) -> torch.Tensor:
    """(K, H, W//2+1) real filters on the ``rfft2`` grid; they sum to 1.

    >>> f = band_filters(16, 16, 4)
    >>> bool(torch.allclose(f.sum(0), torch.ones(16, 9, dtype=torch.float64)))
    True
    >>> f[:, 0, 0].tolist()
    [0.0, 0.0, 0.0, 1.0]
    """
    fy = torch.fft.fftfreq(h, dtype=dtype, device=device).abs()[:, None]
    fx = torch.fft.rfftfreq(w, dtype=dtype, device=device).abs()[None, :]
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
    filt = band_filters(h, w, k, width, dtype=x.dtype, device=x.device)
    X = torch.fft.rfft2(x)
    comps = torch.fft.irfft2(X[:, None, :, :] * filt[None, : k - 1], s=(h, w)) if k > 1 else x.new_zeros(n, 0, h, w)
    last = x - comps.sum(1)
    return torch.cat([comps, last[:, None]], 1), {"edges": [0.5 / 2 ** j for j in range(1, k)]}
