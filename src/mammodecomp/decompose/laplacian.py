"""Laplacian pyramid (Burt & Adelson 1983), every band expanded to full size.

REDUCE blurs with the B3 / Burt kernel ``[1, 4, 6, 4, 1] / 16`` (a = 0.375)
and halves each axis; EXPAND doubles it and blurs. Band ``j`` is
``g_j - EXPAND(g_{j+1})``, brought back to the input size by ``j`` EXPANDs;
the last channel is the input minus all bands (equal, by linearity, to the
expanded low-pass residual ``g_{K-1}``), so the channels add to the input.

Decimation is chosen per axis so that it commutes with flips: an even-length
axis keeps the means of sample pairs ``(2i, 2i+1)`` (a half-sample grid,
symmetric boundary) and EXPAND repeats each sample twice before the blur; an
odd-length axis keeps samples ``0, 2, ..., n-1`` (whole-sample grid, reflect
boundary) and EXPAND inserts zeros and blurs with ``2 * B3``.
"""
from __future__ import annotations

import torch

from . import METHODS, _check_params

B3 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _index(n: int, pad: int, odd: bool, device) -> torch.Tensor:
    i = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(i)
    if odd:  # whole-sample reflection: ... 2 1 | 0 1 2 ... n-1 | n-2 ...
        m = torch.remainder(i, 2 * n - 2)
        return torch.where(m >= n, 2 * n - 2 - m, m)
    m = torch.remainder(i, 2 * n)  # half-sample: ... 1 0 | 0 1 ... n-1 | n-1 ...
    return torch.where(m >= n, 2 * n - 1 - m, m)


def _blur(x: torch.Tensor, taps: torch.Tensor, odd: bool, axis: int) -> torch.Tensor:
    """5-tap blur along ``axis`` with 2 samples of symmetric extension each side.

    Works on the axis in place of a transposed copy (slices along ``axis``
    stay contiguous blocks for axis -2), so no strided gathers.
    """
    n = x.shape[axis]
    if n >= 3:  # 2 samples each side by flipped slices
        if odd:  # whole-sample reflection
            parts = [x.narrow(axis, 1, 2).flip(axis), x, x.narrow(axis, n - 3, 2).flip(axis)]
        else:
            parts = [x.narrow(axis, 0, 2).flip(axis), x, x.narrow(axis, n - 2, 2).flip(axis)]
        xp = torch.cat(parts, axis)
    else:
        xp = x.index_select(axis, _index(n, 2, odd, x.device))
    t = taps.tolist()
    out = xp.narrow(axis, 0, n) * t[0]
    for i in range(1, 5):
        out.add_(xp.narrow(axis, i, n), alpha=t[i])
    return out


def _every_other(y: torch.Tensor, axis: int, start: int) -> torch.Tensor:
    sl = [slice(None)] * y.ndim
    sl[axis] = slice(start, None, 2)
    return y[tuple(sl)]


def _reduce_axis(x: torch.Tensor, axis: int) -> torch.Tensor:
    odd = x.shape[axis] % 2 == 1
    y = _blur(x, B3, odd, axis)
    return _every_other(y, axis, 0) if odd else 0.5 * (_every_other(y, axis, 0) + _every_other(y, axis, 1))


def _expand_axis(x: torch.Tensor, n: int, axis: int) -> torch.Tensor:
    if n % 2 == 1:
        shape = list(x.shape)
        shape[axis] = n
        up = x.new_zeros(shape)
        _every_other(up, axis, 0).copy_(x)
        return _blur(up, 2 * B3, True, axis)
    return _blur(x.repeat_interleave(2, axis), B3, False, axis)


def reduce(x: torch.Tensor) -> torch.Tensor:
    """Blur and halve both axes of (N,H,W) ``x`` (ceil for odd sizes)."""
    return _reduce_axis(_reduce_axis(x, -1), -2)


def expand(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Double both axes of (N,h,w) ``x`` to ``size`` and blur (linear in x).

    >>> g = torch.full((1, 5, 4), 2.0, dtype=torch.float64)
    >>> bool(torch.allclose(expand(reduce(g), (5, 4)), g))
    True
    """
    h, w = size
    return _expand_axis(_expand_axis(x, w, -1), h, -2)


@METHODS.register("laplacian")
def laplacian(x: torch.Tensor, k: int, **params):
    """Laplacian pyramid: K-1 full-size band-pass channels + low-pass residual."""
    _check_params("laplacian", params)
    if x.device.type == "cpu":
        from . import _laplacian_cpu  # imports numba: only for CPU tensors
        if _laplacian_cpu.available():  # same arithmetic, compiled
            out, shapes = _laplacian_cpu.laplacian(x.contiguous().numpy(), k, B3.double().numpy(),
                                                   torch.get_num_threads())
            return torch.from_numpy(out), {"level_shapes": shapes}
    g = [x]
    for _ in range(k - 1):
        g.append(reduce(g[-1]))
    bands = []
    for j in range(k - 1):
        b = g[j] - expand(g[j + 1], tuple(g[j].shape[-2:]))
        for i in range(j - 1, -1, -1):
            b = expand(b, tuple(g[i].shape[-2:]))
        bands.append(b)
    last = x - torch.stack(bands, 1).sum(1) if bands else x.clone()
    return torch.stack(bands + [last], 1), {"level_shapes": [tuple(t.shape[-2:]) for t in g]}
