"""Isotropic undecimated wavelet (starlet): B3-spline a trous algorithm.

Starck, Fadili & Murtagh (2007), "The undecimated wavelet decomposition and its
reconstruction", IEEE TIP 16(2). Smoothing ``c_j = h_j * c_{j-1}`` with the
separable B3-spline kernel ``h = [1, 4, 6, 4, 1] / 16`` dilated by ``2**(j-1)``
(holes), detail ``w_j = c_{j-1} - c_j``. Output: ``w_1 .. w_{K-1}`` (finest
first) and the coarse approximation ``c_{K-1}``; the sum telescopes to the
input exactly.
"""
from __future__ import annotations

import torch

from . import METHODS, _check_params
from ._filters import sep_conv

B3 = (1.0, 4.0, 6.0, 4.0, 1.0)


@METHODS.register("starlet")
def starlet(x: torch.Tensor, k: int, **params):
    """Starlet transform: K-1 detail scales + coarse approximation.

    Boundary: symmetric extension (flip/rotation equivariant). On the CPU
    with numba installed the same arithmetic runs as a compiled loop nest
    (:mod:`._starlet_cpu`).
    """
    _check_params("starlet", params)
    info = {"kernel": [v / 16 for v in B3], "scales": k - 1}
    if x.device.type == "cpu":
        from . import _starlet_cpu  # imports numba: only for CPU tensors
        if _starlet_cpu.available():
            taps = [v / sum(B3) for v in B3]
            out = _starlet_cpu.starlet(x.contiguous().numpy(), taps, k, torch.get_num_threads())
            return torch.from_numpy(out), info
    out = []
    c = x
    for j in range(k - 1):
        c_next = sep_conv(c, B3, dilation=2 ** j)
        out.append(c - c_next)
        c = c_next
    out.append(c)
    return torch.stack(out, 1), info
