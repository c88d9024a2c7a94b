"""Shared separable filtering with symmetric (mirror) boundaries.

Symmetric extension (numpy's ``"symmetric"``: the edge sample is repeated)
commutes with flips and transposes, and the kernels used here are symmetric
and separable with the same taps on both axes, so every filter below is
exactly equivariant under the 8 symmetries of the square (up to float
rounding from the order of the two 1-D passes).
"""
from __future__ import annotations

import torch


def sym_index(n: int, before: int, after: int, device=None) -> torch.Tensor:
    """Indices of a length-``n`` axis extended symmetrically (any pad width).

    >>> sym_index(3, 4, 4).tolist()
    [2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0]
    """
    i = torch.arange(-before, n + after, device=device)
    m = torch.remainder(i, 2 * n)
    return torch.where(m >= n, 2 * n - 1 - m, m)


def pad_axis(x: torch.Tensor, axis: int, before: int, after: int | None = None) -> torch.Tensor:
    """Symmetric padding of one axis (flipped slices; index gather for very wide pads)."""
    after = before if after is None else after
    n = x.shape[axis]
    if before == 0 and after == 0:
        return x
    if before <= n and after <= n:
        parts = [x.narrow(axis, 0, before).flip(axis), x, x.narrow(axis, n - after, after).flip(axis)]
        return torch.cat(parts, axis)
    return x.index_select(axis, sym_index(n, before, after, x.device))


def sym_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad the last two axes of ``x`` symmetrically by ``pad`` on every side."""
    return pad_axis(pad_axis(x, -2, pad), -1, pad)


def conv_axis(x: torch.Tensor, taps, axis: int, dilation: int = 1) -> torch.Tensor:
    """Correlate one axis of ``x`` with ``taps`` (odd length, centred), symmetric boundary.

    Shifted multiply-adds: on CPU much faster than a one-channel ``conv2d``.
    """
    taps = [float(t) for t in taps]
    L = len(taps)
    r = (L // 2) * dilation
    n = x.shape[axis]
    xp = pad_axis(x, axis, r)
    out = xp.narrow(axis, 0, n) * taps[0]
    for i in range(1, L):
        out.add_(xp.narrow(axis, i * dilation, n), alpha=taps[i])
    return out


def sep_conv(x: torch.Tensor, taps, dilation: int = 1) -> torch.Tensor:
    """Separable 2-D convolution of (N,H,W) ``x`` by symmetric 1-D ``taps``.

    Taps are normalised to sum 1; holes of ``dilation - 1`` samples between
    taps (a trous); symmetric boundary of any width.

    >>> x = torch.zeros(1, 9, 9, dtype=torch.float64); x[0, 4, 4] = 1
    >>> (sep_conv(x, [1, 4, 6, 4, 1])[0, 4] * 256).tolist()
    [0.0, 0.0, 6.0, 24.0, 36.0, 24.0, 6.0, 0.0, 0.0]
    """
    tot = float(sum(taps))
    taps = [float(t) / tot for t in taps]
    return conv_axis(conv_axis(x, taps, -2, dilation), taps, -1, dilation)


def _box_axis(x: torch.Tensor, w: int, op: str, axis: int) -> torch.Tensor:
    n = x.shape[axis]
    xp = pad_axis(x, axis, w // 2)
    if op == "mean":  # running sum by cumulative sums
        cs = torch.cumsum(xp, axis)
        cs = torch.cat([torch.zeros_like(cs.narrow(axis, 0, 1)), cs], axis)
        return (cs.narrow(axis, w, n) - cs.narrow(axis, 0, n)) / w
    f = torch.maximum if op == "max" else torch.minimum
    m, p = xp, 1
    while 2 * p <= w:  # m[i] = extreme of xp[i : i + 2p]
        m = f(m.narrow(axis, 0, m.shape[axis] - p), m.narrow(axis, p, m.shape[axis] - p))
        p *= 2
    return f(m.narrow(axis, 0, n), m.narrow(axis, w - p, n))


def box_filter(x: torch.Tensor, w: int, op: str = "mean") -> torch.Tensor:
    """``w`` x ``w`` (odd ``w``) moving max, min or mean of (N,H,W) ``x``, symmetric boundary.

    >>> x = torch.arange(5.0).view(1, 1, 5).expand(1, 5, 5)
    >>> box_filter(x, 3, "max")[0, 0].tolist(), box_filter(x, 3, "mean")[0, 0].tolist()
    ([1.0, 2.0, 3.0, 4.0, 4.0], [0.3333333432674408, 1.0, 2.0, 3.0, 3.6666667461395264])
    """
    return _box_axis(_box_axis(x, w, op, -2), w, op, -1)
