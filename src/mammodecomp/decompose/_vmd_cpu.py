"""The 2-D VMD iterations as one compiled CPU kernel (numba), image-parallel.

:func:`mammodecomp.decompose.vmd.vmd_coefficients` states the algorithm and
runs it with torch tensor operations, which is what a GPU wants. On a CPU
those ~15 whole-array operations per mode and iteration each stream the state
through memory. Here the same arithmetic runs as one loop nest per image:

* one pass over the ``rfft2`` half grid per mode and iteration computes the
  Wiener filter, the new coefficient, the running remainder ``R``, the
  convergence term and the four sums of the centre-of-gravity update, with
  no temporary array;
* an image's whole state (``M + 2`` real fields of ``H x (W/2+1)``, about
  1.2 MB at 320 x 320 with 4 modes) stays in the core's L2 cache across its
  iterations;
* images run in parallel (``prange``), each in its own loop with its own
  stopping test, so results do not depend on the thread count or on which
  other images share the batch.

The sums use the data type's precision, one partial sum per frequency
column added up in a fixed order (vectorised, and the same bits however
numba compiles the loops), so values differ from the torch path by float
rounding only;
the tests hold both paths to the same loop-by-loop transcription of the
authors' MATLAB code (float64, 1e-8) and to each other.

This module (and numba) is imported only when a CPU decomposition runs;
without numba, or on a GPU, the torch paths run. The kernels are module-level
functions so numba's on-disk cache serves them across processes.
"""
from __future__ import annotations

import numpy as np

try:  # optional: without numba the torch paths run
    import numba as _numba
    from numba import njit, prange
except Exception:  # pragma: no cover - depends on the environment
    _numba = None

# Only nsz (signed zeros). No nnan/ninf (the den > 0 tests must hold), and no
# reassoc, contract or arcp: with reassoc LLVM split a reduction into SIMD
# partial sums one way in the code it compiled in-process and another way in
# the code numba caches on disk, so a fresh compile and a cached one rounded
# differently (the same images gave other bits in a fresh checkout than in the
# next process); FMA contraction and approximate reciprocals could likewise
# differ between vector and scalar code. The kernels keep one partial sum per
# column instead (the column loop vectorises with no reduction in it) and add
# the columns up in order: the same bits however the loops are compiled.
_FASTMATH = {"nsz"}


def available() -> bool:
    """Whether numba is importable (kernels compile on first use, then load from numba's cache)."""
    return _numba is not None


if _numba is not None:
    @njit(fastmath=_FASTMATH, error_model="numpy", cache=True, nogil=True)
    def one_image(Pw, A, invA, fy, fx, om, c, R, m, cst, max_iter, dc, use_tau, use_tol):
        # cst: [alpha, tau, tol, hw, 0, 1, 2] in the data dtype
        alpha, tau, tol, hw = cst[0], cst[1], cst[2], cst[3]
        zero, one, two = cst[4], cst[5], cst[6]
        half = one / two
        two_alpha = two * alpha
        M = c.shape[0]
        H, Wr = Pw.shape
        om_old = np.empty_like(om)
        acc = np.empty((5, Wr), dtype=Pw.dtype)  # per-column partial sums (see _FASTMATH)
        it = 0
        done = False
        while it < max_iter and not done:
            om_old[:, :] = om
            udiff = zero
            for k in range(M):
                ck = c[k]
                acc[:, :] = zero
                if dc and k == 0:  # omega = 0 for good: W = 1/A, no centre update
                    for r in range(H):
                        for q in range(Wr):
                            u = R[r, q] + ck[r, q]
                            g = u * invA[r, q]
                            R[r, q] = u - g
                            d = g - ck[r, q]
                            acc[0, q] += d * d * Pw[r, q]
                            ck[r, q] = g
                    for q in range(Wr):
                        udiff += acc[0, q]
                    continue
                ox, oy = om[k, 0], om[k, 1]
                base = alpha * (ox * ox + oy * oy)
                for r in range(H):
                    fyr = fy[r]
                    for q in range(Wr):
                        s = fyr * oy + fx[q] * ox
                        wk = one / (A[r, q] + base - two_alpha * abs(s))
                        old = ck[r, q]
                        u = R[r, q] + old
                        g = u * wk
                        R[r, q] = u - g
                        d = g - old
                        p = Pw[r, q]
                        acc[0, q] += d * d * p
                        ck[r, q] = g
                        e = g * g * p  # |u_k|^2, column-weighted
                        sg = one if s > zero else (-one if s < zero else zero)
                        se = sg * e
                        acc[1, q] += e
                        acc[2, q] += se * fx[q]
                        acc[3, q] += se * fyr
                        acc[4, q] += abs(sg) * e
                den, sx, sy, sa = zero, zero, zero, zero
                for q in range(Wr):  # column sums, then across columns: a fixed order
                    udiff += acc[0, q]
                    den += acc[1, q]
                    sx += acc[2, q]
                    sy += acc[3, q]
                    sa += acc[4, q]
                tot = den + sa
                if tot > zero:
                    nx, ny = two * sx / tot, two * sy / tot
                else:
                    nx, ny = ox, oy
                if ny < zero:  # keep omegas on the same half-plane
                    nx, ny = -nx, -ny
                om[k, 0], om[k, 1] = nx, ny
            if use_tau:  # dual ascent m += tau (sum_k c_k - 1); R = 1 - m/2 - sum_k c_k follows
                for r in range(H):
                    for q in range(Wr):
                        v = -tau * (R[r, q] + half * m[r, q])
                        m[r, q] += v
                        R[r, q] -= half * v
            it += 1
            if use_tol:
                odiff = zero
                for k in range(M):
                    for j in range(2):
                        t = om[k, j] - om_old[k, j]
                        odiff += t * t
                done = udiff / hw <= tol and odiff <= tol
        return it, done

    @njit(parallel=True, cache=True)
    def batch(Pw, A, invA, fy, fx, om, c, R, m, cst, max_iter, dc, use_tau, use_tol, iters, conv):
        for n in prange(Pw.shape[0]):
            it, ok = one_image(Pw[n], A, invA, fy, fx, om[n], c[n], R[n], m[n], cst, max_iter, dc,
                               use_tau, use_tol)
            iters[n] = it
            conv[n] = ok

    @njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
    def moments(Pw, fy, fx, out):  # out (N,3): sum Pw fx^2, sum Pw fy^2, sum Pw fy fx
        H, Wr = Pw.shape[1], Pw.shape[2]
        for n in prange(Pw.shape[0]):
            acc = np.zeros((3, Wr), dtype=Pw.dtype)  # per-column partial sums (see _FASTMATH)
            for r in range(H):
                fyr = fy[r]
                for q in range(Wr):
                    p = Pw[n, r, q]
                    acc[0, q] += p * fx[q] * fx[q]
                    acc[1, q] += p * fyr * fyr
                    acc[2, q] += p * fyr * fx[q]
            for j in range(3):
                t = out[n, j]  # zero of the data dtype
                for q in range(Wr):
                    t += acc[j, q]
                out[n, j] = t

    @njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
    def fan_energy(Pw, A, fy, fx, fan, cst, out):  # out (N,F): sum Pw W(fan_f)^2
        alpha, one, two = cst[0], cst[5], cst[6]
        H, Wr = Pw.shape[1], Pw.shape[2]
        for n in prange(Pw.shape[0]):
            acc = np.empty(Wr, dtype=Pw.dtype)
            for f in range(fan.shape[1]):
                ox, oy = fan[n, f, 0], fan[n, f, 1]
                base = alpha * (ox * ox + oy * oy)
                acc[:] = 0.0
                for r in range(H):
                    fyr = fy[r]
                    for q in range(Wr):
                        s = fyr * oy + fx[q] * ox
                        w = one / (A[r, q] + base - two * alpha * abs(s))
                        acc[q] += Pw[n, r, q] * w * w
                e = out[n, f]
                for q in range(Wr):
                    e += acc[q]
                out[n, f] = e

    @njit(parallel=True, error_model="numpy", cache=True)
    def spectra(c, X, order, Z):  # Z[n, j] = c[n, order[n, j]] * X[n]
        H, Wr = X.shape[1], X.shape[2]
        for n in prange(c.shape[0]):
            for j in range(order.shape[1]):
                ck = c[n, order[n, j]]
                for r in range(H):
                    for q in range(Wr):
                        Z[n, j, r, q] = ck[r, q] * X[n, r, q]

    @njit(parallel=True, error_model="numpy", cache=True)
    def finish(u, x, mean, fold, out, frac):
        # out[:, :M] = modes, residual x - sum(modes) as a channel or added to the last mode;
        # frac = ||x - mean - sum(modes)|| / ||x - mean|| (sums in float64)
        M, H, W = u.shape[1], u.shape[2], u.shape[3]
        for n in prange(u.shape[0]):
            num, den = 0.0, 0.0
            mu = mean[n]
            for r in range(H):
                for q in range(W):
                    acc = u[n, 0, r, q]
                    out[n, 0, r, q] = acc
                    for k in range(1, M):
                        v = u[n, k, r, q]
                        out[n, k, r, q] = v
                        acc += v
                    res = x[n, r, q] - acc
                    if fold:
                        out[n, M - 1, r, q] += res
                    else:
                        out[n, M, r, q] = res
                    d = float(res - mu)
                    e = float(x[n, r, q] - mu)
                    num += d * d
                    den += e * e
            frac[n] = np.sqrt(num / den) if den > 0 else 0.0


class _threads:
    """Run numba's parallel loops on ``n`` threads (torch's count), then restore both.

    numba's OpenMP layer and torch share one OpenMP runtime: setting numba's
    thread count sets torch's too (``omp_set_num_threads``), which would
    change torch's reduction order, hence its float rounding, after any
    decomposition. So torch's count is put back on the way out.
    """

    def __init__(self, n: int):
        self.numba = _numba
        self.n = max(1, min(int(n), _numba.config.NUMBA_NUM_THREADS))

    def __enter__(self):
        import torch
        self.torch_threads = torch.get_num_threads()
        self.prev = self.numba.get_num_threads()
        self.numba.set_num_threads(self.n)

    def __exit__(self, *exc):
        import torch
        self.numba.set_num_threads(self.prev)
        torch.set_num_threads(self.torch_threads)


def _consts(dt, alpha: float = 0.0, tau: float = 0.0, tol: float = 0.0, hw: float = 1.0) -> np.ndarray:
    return np.array([alpha, tau, tol, hw, 0.0, 1.0, 2.0], dtype=dt)


def oriented_stats(Pw: np.ndarray, fy: np.ndarray, fx: np.ndarray, threads: int) -> np.ndarray:
    """(N,3) spectral moments ``sum Pw fx^2, sum Pw fy^2, sum Pw fy fx`` of the ``oriented`` init."""
    out = np.zeros((Pw.shape[0], 3), dtype=Pw.dtype)
    with _threads(threads):
        moments(np.ascontiguousarray(Pw), np.ascontiguousarray(fy), np.ascontiguousarray(fx), out)
    return out


def oriented_energy(Pw: np.ndarray, A: np.ndarray, fy: np.ndarray, fx: np.ndarray, fan: np.ndarray,
                    alpha: float, threads: int) -> np.ndarray:
    """(N,F) energy ``sum Pw W^2`` that each candidate centre frequency's Wiener filter captures."""
    out = np.zeros(fan.shape[:2], dtype=Pw.dtype)
    with _threads(threads):
        fan_energy(np.ascontiguousarray(Pw), np.ascontiguousarray(A), np.ascontiguousarray(fy),
                   np.ascontiguousarray(fx), np.ascontiguousarray(fan), _consts(Pw.dtype, alpha), out)
    return out


def run(Pw: np.ndarray, A: np.ndarray, fy: np.ndarray, fx: np.ndarray, om: np.ndarray, *, alpha: float,
        tau: float, tol: float, max_iter: int, dc: bool, hw: float, threads: int):
    """Iterate 2-D VMD on the half grid for a batch; same contract as the torch loop.

    Parameters
    ----------
    Pw : (N,H,Wr) column-weighted ``|X|^2``; A : (H,Wr) ``1 + alpha |xi|^2``;
    fy : (H,), fx : (Wr,) frequencies; om : (N,M,2) initial centre
    frequencies (updated in place). All arrays share one float dtype.

    Returns
    -------
    c : (N,M,H,Wr) coefficients; om; iters (N,) int64; converged (N,) bool.
    """
    dt = Pw.dtype
    N, H, Wr = Pw.shape
    M = om.shape[1]
    c = np.zeros((N, M, H, Wr), dtype=dt)
    R = np.ones((N, H, Wr), dtype=dt)
    m = np.zeros((N, H, Wr) if tau > 0 else (N, 1, 1), dtype=dt)
    cst = _consts(dt, alpha, tau, tol, hw)
    iters = np.zeros(N, dtype=np.int64)
    conv = np.zeros(N, dtype=np.bool_)
    invA = (1.0 / A).astype(dt)
    with _threads(threads):
        batch(np.ascontiguousarray(Pw), np.ascontiguousarray(A), invA, np.ascontiguousarray(fy),
              np.ascontiguousarray(fx), om, c, R, m, cst, int(max_iter), bool(dc), bool(tau > 0), bool(tol > 0),
              iters, conv)
    return c, om, iters, conv


def assemble(x: np.ndarray, X: np.ndarray, c: np.ndarray, order: np.ndarray, mean: np.ndarray, *, fold: bool,
             threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Modes in ``order`` (inverse ``rfft2`` of ``c X``) and the residual, as the K output channels.

    Returns ``(out, frac)``: out (N,K,H,W) with K = M + 1 (residual channel) or
    M (``fold``: residual added to the last mode), and the unreconstructed
    fraction per image. The channels add up to ``x`` by construction.
    """
    from scipy import fft as sfft
    N, H, W = x.shape
    M = order.shape[1]
    Z = np.empty((N, M) + X.shape[1:], dtype=X.dtype)
    out = np.empty((N, M if fold else M + 1, H, W), dtype=x.dtype)
    frac = np.empty(N, dtype=np.float64)
    with _threads(threads):
        spectra(c, X, order, Z)
        u = sfft.irfft2(Z, s=(H, W), overwrite_x=True, workers=max(1, int(threads)))
        finish(u, x, mean.astype(x.dtype), bool(fold), out, frac)
    return out, frac.astype(x.dtype)
