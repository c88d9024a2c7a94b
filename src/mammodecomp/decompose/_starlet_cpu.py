"""The starlet (a trous B3-spline) transform as one compiled CPU loop nest per image (numba).

Same arithmetic as :func:`mammodecomp.decompose.starlet.starlet` (separable
smoothing, rows then columns, symmetric boundary of any width, details
``c_{j-1} - c_j``), written straight into the (N,K,H,W) output: no padded
copies, no temporaries beyond one plane per image, images in parallel.
"""
from __future__ import annotations

import numpy as np

from ._vmd_cpu import _FASTMATH, _numba, _threads, available  # noqa: F401  (one numba probe, flags, thread guard)

if _numba is not None:
    from numba import njit, prange

    @njit(cache=True, inline="always")
    def sym(i, n):  # symmetric extension (edge sample repeated), any distance
        m = i % (2 * n)
        return 2 * n - 1 - m if m >= n else m

    @njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
    def _kernel(x, h, levels, out):
        N, H, W = x.shape
        L = h.shape[0]
        half = L // 2
        for n in prange(N):
            c = x[n].copy()
            tmp = np.empty_like(c)
            nxt = np.empty_like(c)
            row = np.empty(W + 2 * half * (2 ** max(levels - 1, 0)), dtype=x.dtype)
            for j in range(levels):
                d = 2 ** j
                r0 = half * d
                for r in range(H):  # along rows (axis -2)
                    for q in range(W):
                        tmp[r, q] = h[0] * c[sym(r - r0, H), q]
                    for t in range(1, L):
                        src = sym(r - r0 + t * d, H)
                        for q in range(W):
                            tmp[r, q] += h[t] * c[src, q]
                for r in range(H):  # along columns (axis -1), through a padded row
                    for q in range(W + 2 * r0):
                        row[q] = tmp[r, sym(q - r0, W)]
                    for q in range(W):
                        nxt[r, q] = h[0] * row[q]
                    for t in range(1, L):  # tap by tap: the column loop vectorises, each sum in tap order
                        o = t * d
                        for q in range(W):
                            nxt[r, q] += h[t] * row[q + o]
                for r in range(H):
                    for q in range(W):
                        out[n, j, r, q] = c[r, q] - nxt[r, q]
                c, nxt = nxt, c
            for r in range(H):
                for q in range(W):
                    out[n, levels, r, q] = c[r, q]


def starlet(x: np.ndarray, taps, k: int, threads: int) -> np.ndarray:
    """(N,K,H,W) starlet of (N,H,W) ``x`` with normalised ``taps`` (K-1 details + approximation)."""
    out = np.empty((x.shape[0], k) + x.shape[1:], dtype=x.dtype)
    h = np.asarray(taps, dtype=x.dtype)
    with _threads(threads):
        _kernel(np.ascontiguousarray(x), h, k - 1, out)
    return out
