"""The Laplacian pyramid as compiled CPU loops per image (numba).

Same operations, in the same order, as :mod:`mammodecomp.decompose.laplacian`
(REDUCE and EXPAND along the last axis, then along rows; 5-tap blur with two
samples of whole-sample reflection for odd lengths and half-sample symmetric
extension for even ones; odd EXPAND inserts zeros and blurs with ``2 * B3``,
even EXPAND repeats samples), one line at a time in a per-image buffer, so the
torch path's padded copies and strided concatenations disappear. Images run in
parallel.
"""
from __future__ import annotations

import numpy as np

from ._vmd_cpu import _numba, _threads, available  # noqa: F401  (one numba probe, one thread guard)

if _numba is not None:
    from numba import njit, prange

    @njit(cache=True)
    def src_index(i, n, odd):
        if n == 1:
            return 0
        if odd:  # whole-sample reflection
            m = i % (2 * n - 2)
            return 2 * n - 2 - m if m >= n else m
        m = i % (2 * n)  # half-sample symmetric
        return 2 * n - 1 - m if m >= n else m

    @njit(cache=True)
    def blur(src, n, odd, taps, dst):  # dst[i] = sum_t taps[t] src[ext(i + t - 2)]
        for i in range(n):
            if i >= 2 and i + 2 < n:
                acc = src[i - 2] * taps[0]
                for t in range(1, 5):
                    acc = acc + src[i + t - 2] * taps[t]
            else:
                acc = src[src_index(i - 2, n, odd)] * taps[0]
                for t in range(1, 5):
                    acc = acc + src[src_index(i + t - 2, n, odd)] * taps[t]
            dst[i] = acc

    @njit(cache=True)
    def reduce_line(src, n, taps, work, dst):
        odd = n % 2 == 1
        blur(src, n, odd, taps, work)
        if odd:
            for i in range((n + 1) // 2):
                dst[i] = work[2 * i]
        else:
            for i in range(n // 2):
                dst[i] = 0.5 * (work[2 * i] + work[2 * i + 1])

    @njit(cache=True)
    def expand_line(src, n, taps, taps2, up, dst):
        if n % 2 == 1:
            for i in range(n):
                up[i] = src[i // 2] if i % 2 == 0 else 0.0
            blur(up, n, True, taps2, dst)
        else:
            for i in range(n):
                up[i] = src[i // 2]
            blur(up, n, False, taps, dst)

    @njit(cache=True)
    def reduce2d(a, h, w, taps, tmp, line, work, out_line, out):
        # rows (last axis) into tmp (h x w2), then columns into out (h2 x w2)
        w2, h2 = (w + 1) // 2, (h + 1) // 2  # ceil: odd lengths keep both ends
        for r in range(h):
            reduce_line(a[r], w, taps, work, tmp[r])
        for q in range(w2):
            for r in range(h):
                line[r] = tmp[r, q]
            reduce_line(line, h, taps, work, out_line)
            for r in range(h2):
                out[r, q] = out_line[r]

    @njit(cache=True)
    def expand2d(a, h, w, H, W, taps, taps2, tmp, line, up, out_line, out):
        # last axis: (h x w) -> tmp (h x W), then rows: -> out (H x W)
        for r in range(h):
            expand_line(a[r], W, taps, taps2, up, tmp[r])
        for q in range(W):
            for r in range(h):
                line[r] = tmp[r, q]
            expand_line(line, H, taps, taps2, up, out_line)
            for r in range(H):
                out[r, q] = out_line[r]

    @njit(parallel=True, cache=True)
    def _pyramid(x, hs, ws, taps, taps2, out):
        N, H, W = x.shape
        L = hs.shape[0]  # levels 0..K-1
        K = out.shape[1]
        for n in prange(N):
            big = max(H, W)
            g = np.zeros((L, H, W), dtype=x.dtype)  # level j in g[j, :hs[j], :ws[j]]
            tmp = np.empty((H, W), dtype=x.dtype)
            b = np.empty((H, W), dtype=x.dtype)
            e = np.empty((H, W), dtype=x.dtype)
            line = np.empty(big, dtype=x.dtype)
            work = np.empty(big, dtype=x.dtype)
            out_line = np.empty(big, dtype=x.dtype)
            g[0] = x[n]
            for j in range(L - 1):
                reduce2d(g[j], hs[j], ws[j], taps, tmp, line, work, out_line, g[j + 1])
            for j in range(K - 1):
                h, w = hs[j], ws[j]
                expand2d(g[j + 1], hs[j + 1], ws[j + 1], h, w, taps, taps2, tmp, line, work, out_line, e)
                for r in range(h):
                    for q in range(w):
                        b[r, q] = g[j, r, q] - e[r, q]
                for i in range(j - 1, -1, -1):  # back up to full size
                    expand2d(b, hs[i + 1], ws[i + 1], hs[i], ws[i], taps, taps2, tmp, line, work, out_line, e)
                    for r in range(hs[i]):
                        for q in range(ws[i]):
                            b[r, q] = e[r, q]
                for r in range(H):
                    for q in range(W):
                        out[n, j, r, q] = b[r, q]
            for r in range(H):  # last: the input minus all bands
                for q in range(W):
                    if K == 1:
                        out[n, 0, r, q] = x[n, r, q]
                        continue
                    acc = out[n, 0, r, q]
                    for j in range(1, K - 1):
                        acc = acc + out[n, j, r, q]
                    out[n, K - 1, r, q] = x[n, r, q] - acc


def laplacian(x: np.ndarray, k: int, taps: np.ndarray, threads: int) -> tuple[np.ndarray, list]:
    """(N,K,H,W) Laplacian-pyramid channels of (N,H,W) ``x`` and the level shapes."""
    N, H, W = x.shape
    hs, ws = [H], [W]
    for _ in range(k - 1):
        hs.append((hs[-1] + 1) // 2)
        ws.append((ws[-1] + 1) // 2)
    out = np.empty((N, k, H, W), dtype=x.dtype)
    t = np.asarray(taps, dtype=x.dtype)
    with _threads(threads):
        _pyramid(np.ascontiguousarray(x), np.array(hs, dtype=np.int64), np.array(ws, dtype=np.int64), t,
                 (2 * t).astype(x.dtype), out)
    return out, list(zip(hs, ws))
