"""Fast and adaptive bidimensional EMD (FABEMD).

Bhuiyan, Adhami & Khan (2008), "Fast and adaptive bidimensional empirical mode
decomposition using order-statistics filter based envelope estimation",
EURASIP J. Adv. Signal Process. 2008:728356.

For each IMF the current residue ``S`` gets an upper envelope (a ``w x w``
MAX filter smoothed by a ``w x w`` mean filter), a lower envelope (MIN
filter, same smoothing), and their mean ``M``; the IMF is ``S - M`` and the
next residue is ``M`` (one pass per IMF, no sifting, as in the paper).

Window size. The paper derives ``w`` from the distances between adjacent
local maxima (and minima), found by a nearest-neighbour search over the
extrema points. Here, to stay batched, the adjacent-extrema distance is
estimated from the density of extrema: ``d = sqrt(H * W / n)`` with ``n`` the
number of local maxima or minima (3x3 neighbourhood), whichever is larger
(the denser set, i.e. the smaller distance, as in the paper's type-1 rule);
``w`` is ``d`` rounded up to an odd integer, at least 3 and at least 2 more
than the previous IMF's window, so windows grow strictly from IMF to IMF.
Windows are per image; images sharing a window are filtered together (a loop
over distinct window sizes, not over images).

Boundaries are symmetric and the windows square, so flips and 90-degree
rotations commute with the decomposition *exactly*, bit for bit: the max and
min filters are order-free, and the mean filter (:func:`_mean_d4`) is the
average of its forward and mirrored running sums on each axis and of its
two axis orders, so the image and its flip or transpose go through the same
additions. This matters because the window comes from counts of extrema
with ``>=``/``<=``: on 8-bit films with plateaus, a rounding difference
between an image and its flip used to change those counts, the rounded
window and every IMF after it (up to 0.10 on 320-px mini-MIAS crops).
"""
from __future__ import annotations


import torch

from . import METHODS, _check_params
from ._filters import _box_axis, box_filter


def _mean_axis(x: torch.Tensor, w: int, axis: int) -> torch.Tensor:
    fwd = _box_axis(x, w, "mean", axis)
    bwd = _box_axis(x.flip(axis), w, "mean", axis).flip(axis)
    return 0.5 * (fwd + bwd)  # a + b == b + a: mirrored input, mirrored output, same bits


def _mean_d4(x: torch.Tensor, w: int) -> torch.Tensor:
    """``w x w`` moving mean that commutes exactly with the 8 symmetries of the square."""
    rc = _mean_axis(_mean_axis(x, w, -2), w, -1)
    cr = _mean_axis(_mean_axis(x, w, -1), w, -2)
    return 0.5 * (rc + cr)


def _windows(S: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    n, h, w = S.shape
    n_max = (S >= box_filter(S, 3, "max")).sum((1, 2))
    n_min = (S <= box_filter(S, 3, "min")).sum((1, 2))
    cnt = torch.maximum(n_max, n_min).clamp_min(1).to(torch.float64)
    d = torch.sqrt(h * w / cnt)
    win = torch.ceil(d).to(torch.int64)
    win = win + (1 - win % 2)  # odd
    win = torch.maximum(win, prev + 2).clamp_min(3)
    return win.clamp_max(2 * max(h, w) + 1)


@METHODS.register("fabemd")
def fabemd(x: torch.Tensor, k: int, **params):
    """FABEMD: K-1 IMFs (finest first) + residue.

    Returns info ``windows``: (N, K-1) window sizes used per image and IMF.
    """
    _check_params("fabemd", params)
    S = x
    imfs, wins = [], []
    prev = torch.ones(x.shape[0], dtype=torch.int64, device=x.device)
    for _ in range(k - 1):
        win = _windows(S, prev)
        M = torch.empty_like(S)
        for wv in torch.unique(win).tolist():
            idx = torch.nonzero(win == wv).flatten()
            s = S.index_select(0, idx)
            # mean of the two smoothed envelopes == the smoothed mean of the MAX and MIN maps (linear filter)
            M.index_copy_(0, idx, _mean_d4(0.5 * (box_filter(s, wv, "max") + box_filter(s, wv, "min")), wv))
        imfs.append(S - M)
        S = M
        prev = win
        wins.append(win)
    last = x - torch.stack(imfs, 1).sum(1) if imfs else x.clone()
    info = {"windows": torch.stack(wins, 1).cpu().numpy() if wins else None}
    return torch.stack(imfs + [last], 1), info


