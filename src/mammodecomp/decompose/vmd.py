"""Two-dimensional variational mode decomposition (2-D VMD).

Dragomiretskiy & Zosso (2015), "Two-dimensional variational mode
decomposition", EMMCVPR, LNCS 8932, pp. 197-208; the reference is the authors'
MATLAB ``VMD_2D.m`` (half-plane analytic modes, Wiener-filter mode updates in
Gauss-Seidel order, centre frequencies as spectral centres of gravity on the
half-plane, dual ascent with step ``tau``).

How this implementation stays fast
----------------------------------
Every quantity of the algorithm is a *real, point-symmetric* coefficient field
times the image spectrum ``F``: the mode spectra are ``u_k = c_k F``, the
multiplier ``mu = m F``. The half-plane mask followed by "recover the full
spectrum from the analytic signal" (``fft2(real(ifft2(.)))`` in the MATLAB
code) collapses, for a Hermitian ``F``, to the real filter

    W_k(xi) = 1 / (1 + alpha (|xi|^2 + |omega_k|^2 - 2 |xi . omega_k|))

and the half-plane centre of gravity to

    omega_k = 2 sum(sign(s) xi |F|^2 c_k^2) / sum((1 + |sign(s)|) |F|^2 c_k^2),
    s = xi . omega_k.

So the iterations run on real arrays over the ``rfft2`` half grid, use
``|F|^2`` only, and need one forward FFT (``rfft2``) and one batched inverse
FFT per run, whatever the number of iterations. The result equals the
MATLAB algorithm's (checked to 1e-8 against a loop-by-loop transcription in
the tests) for images without content on the Nyquist row/column. On an
even-sized grid the Nyquist frequency is both +1/2 and -1/2, the MATLAB code
labels it -1/2 only, which breaks the flip symmetry of the half-plane masks;
here the Nyquist row and column are left out of the modes (they stay in the
residual channel), a negligible part of a mammogram's energy.

Channels
--------
Modes are sorted by decreasing centre frequency ``|omega_k|`` (the DC mode
last). VMD modes do not add back to the image exactly; with
``residual="channel"`` (default) ``K-1`` modes are computed and the last
channel is the explicit residual ``x - sum(modes)``; with ``residual="fold"``
``K`` modes are computed and the residual is added to the lowest mode. With
``zero_mean=True`` (default) the image mean (the DC bin) is removed before
VMD, so it lands in the last channel. ``info["unreconstructed_fraction"]``
is ``||x - mean - sum(modes)|| / ||x - mean||`` per image.

Symmetry
--------
Flipping a mode's ``omega`` to ``-omega`` (the MATLAB "keep omegas on the same
half-plane" step) changes neither the mode nor, up to sign, the next
``omega``: the half-plane choice is immaterial. What can break equivariance
under flips/90-degree rotations is the *initialisation and the Gauss-Seidel
order*. ``init="radial"`` (MATLAB init 0: a fan of directions at radius 1/4
starting at angle 0) and ``init="random"`` (MATLAB init 1, one seeded draw
shared by all images) are not equivariant. ``init="oriented"`` (default)
turns the radial fan to the principal axis of the image's power spectrum and
orders the modes' update slots by the energy their initial filter captures;
both follow the image under any flip, transpose or rotation by 90 degrees, so
the decomposition of a transformed image is the transformed decomposition
(up to float rounding, and barring exact ties in those energies or in
``|omega_k|``, which would reorder modes).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InputError
from . import METHODS


def _grids(h, w, dtype, device):
    fy = torch.fft.fftfreq(h, dtype=dtype, device=device)
    fx = torch.fft.rfftfreq(w, dtype=dtype, device=device)
    colw = torch.full((fx.numel(),), 2.0, dtype=dtype, device=device)
    colw[0] = 1.0
    if w % 2 == 0:
        colw[-1] = 1.0
    return fy, fx, colw


def _filter(fy, fx, A, alpha, om):
    """Wiener filters (B,H,Wr) and s = xi . omega for centre frequencies om (B,2)."""
    s = fy[None, :, None] * om[:, 1, None, None] + fx[None, None, :] * om[:, 0, None, None]
    c = alpha * (om[:, 0] ** 2 + om[:, 1] ** 2)
    Wf = 1.0 / (A[None] + c[:, None, None] - (2 * alpha) * s.abs())
    return Wf, s


def _init_omega(init, n_img, n_modes, dc, seed, Pw, fy, fx, A, alpha, dtype, device, backend="torch"):
    M = n_modes
    n_free = M - 1 if dc else M
    om = torch.zeros(n_img, M, 2, dtype=dtype, device=device)
    if n_free == 0:
        return om
    j = torch.arange(n_free, dtype=dtype, device=device)
    if isinstance(init, str) and init == "radial":
        ang = math.pi * (j + (1 if dc else 0)) / n_free  # MATLAB: pi*(k-1)/maxK, k = DC+1..DC+maxK
        om[:, M - n_free:, 0] = 0.25 * torch.cos(ang)
        om[:, M - n_free:, 1] = 0.25 * torch.sin(ang)
    elif isinstance(init, str) and init == "random":
        g = np.random.default_rng(seed)
        r = g.random((M, 2))
        r[:, 0] -= 0.5
        r[:, 1] /= 2
        om[:] = torch.as_tensor(r, dtype=dtype, device=device)
        if dc:
            om[:, 0] = 0
    elif isinstance(init, str) and init == "oriented":
        if backend == "numba":  # the same sums as one compiled pass per image
            from . import _vmd_cpu
            nt = torch.get_num_threads()
            Jxx, Jyy, Jxy = torch.from_numpy(_vmd_cpu.oriented_stats(Pw.numpy(), fy.numpy(), fx.numpy(), nt)).T
        else:
            Jxx = (Pw * fx[None, None, :] ** 2).sum((1, 2))
            Jyy = (Pw * fy[None, :, None] ** 2).sum((1, 2))
            Jxy = (Pw * fy[None, :, None] * fx[None, None, :]).sum((1, 2))
        theta0 = 0.5 * torch.atan2(2 * Jxy, Jxx - Jyy)  # (N,)
        ang = theta0[:, None] + math.pi * j[None, :] / n_free  # (N, n_free)
        fan = 0.25 * torch.stack([torch.cos(ang), torch.sin(ang)], -1)  # (N, n_free, 2)
        if backend == "numba":
            energy = torch.from_numpy(_vmd_cpu.oriented_energy(Pw.numpy(), A.numpy(), fy.numpy(), fx.numpy(),
                                                               fan.numpy(), alpha, nt))
        else:
            energy = torch.stack([(Pw * _filter(fy, fx, A, alpha, fan[:, i])[0] ** 2).sum((1, 2))
                                  for i in range(n_free)], 1)
        order = torch.argsort(energy, dim=1, descending=True, stable=True)
        om[:, M - n_free:] = torch.gather(fan, 1, order[..., None].expand(-1, -1, 2))
    else:
        try:
            arr = torch.as_tensor(np.asarray(init, dtype=float), dtype=dtype, device=device)
        except (TypeError, ValueError):
            arr = None
        if isinstance(init, str) or arr is None or arr.shape != (M, 2):
            raise InputError(f"vmd: init must be 'oriented', 'radial', 'random' or an array of shape "
                             f"({M}, 2) of (omega_x, omega_y) in cycles/pixel; got {init!r}")
        om[:] = arr
        if dc:
            om[:, 0] = 0
    return om


BACKENDS = ("auto", "torch", "numba")


def _backend(backend: str, device: torch.device) -> str:
    """The backend that will run: ``backend`` checked, ``"auto"`` resolved (numba imported only on a CPU)."""
    if backend not in BACKENDS:
        raise InputError(f"vmd: backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "torch":
        return backend
    has_numba = False
    if device.type == "cpu":
        from . import _vmd_cpu
        has_numba = _vmd_cpu.available()
    if backend == "numba" and not has_numba:
        why = "numba is not installed" if device.type == "cpu" else f"the images are on {device.type}"
        raise InputError(f"vmd: backend='numba' needs the images on the CPU and numba installed ({why})")
    return "numba" if has_numba else "torch"


def vmd_coefficients(x: torch.Tensor, n_modes: int, *, alpha: float = 5000.0, tau: float = 0.0,
                     tol: float = 1e-6, max_iter: int = 500, dc: bool = True, init="oriented",
                     seed: int = 0, zero_mean: bool = True, backend: str = "auto"):
    """Run 2-D VMD on (N,H,W) ``x``; return the spectrum and the mode coefficients.

    ``backend``: ``"torch"`` (tensor operations, any device), ``"numba"`` (one
    compiled loop nest per image on the CPU, :mod:`._vmd_cpu`; several times
    faster there) or ``"auto"`` (numba for CPU tensors when it is installed).
    Both compute the same iterations and agree to float rounding.

    Returns
    -------
    X : (N,H,W//2+1) complex, ``rfft2`` of the (mean-removed) images.
    c : (N,M,H,W//2+1) real; mode ``k`` has spectrum ``c[:, k] * X``.
    omega : (N,M,2) centre frequencies (omega_x along columns, omega_y along
        rows, cycles/pixel), in update-slot order (DC mode first when ``dc``).
    iters : (N,) iterations run per image.
    converged : (N,) whether the stopping rule (both the mode change
        ``sum_k ||u_k^{n+1} - u_k^n||^2`` and ``sum_k |omega_k^{n+1} - omega_k^n|^2``
        at most ``tol``, as in the MATLAB code) was met before ``max_iter``.
    """
    N, H, W = x.shape
    dt, dev = x.dtype, x.device
    X = torch.fft.rfft2(x)
    if zero_mean:
        X[:, 0, 0] = 0
    if H % 2 == 0:  # Nyquist bins: +-1/2 are one bin; left to the residual (see Notes)
        X[:, H // 2, :] = 0
    if W % 2 == 0:
        X[:, :, -1] = 0
    fy, fx, colw = _grids(H, W, dt, dev)
    Pw_all = (X.real ** 2 + X.imag ** 2) * colw
    A = 1.0 + alpha * (fy[:, None] ** 2 + fx[None, :] ** 2)
    M = n_modes
    backend = _backend(backend, dev)
    om_all = _init_omega(init, N, M, dc, seed, Pw_all, fy, fx, A, alpha, dt, dev, backend)
    if backend == "numba":
        from . import _vmd_cpu
        c_np, om_np, it_np, conv_np = _vmd_cpu.run(
            Pw_all.numpy(), A.numpy(), fy.numpy(), fx.numpy(), om_all.numpy().copy(), alpha=alpha, tau=tau,
            tol=tol, max_iter=max_iter, dc=dc, hw=float(H * W), threads=torch.get_num_threads())
        return X, torch.from_numpy(c_np), torch.from_numpy(om_np), it_np, conv_np
    Wr = fx.numel()
    c_all = torch.zeros(N, M, H, Wr, dtype=dt, device=dev)
    iters = torch.zeros(N, dtype=torch.int64)
    converged = torch.zeros(N, dtype=torch.bool)
    act = torch.arange(N, device=dev)
    Pw, om = Pw_all.reshape(N, -1), om_all.clone()
    L = H * Wr
    # state on the flattened half grid: coefficients c_k, R = 1 - m/2 - sum_k c_k, multiplier m
    c = [torch.zeros(N, L, dtype=dt, device=dev) for _ in range(M)]
    R = torch.ones(N, L, dtype=dt, device=dev)
    m = torch.zeros(N, L, dtype=dt, device=dev) if tau > 0 else None
    hw = float(H * W)
    fyc, fxr = fy[None, :, None], fx[None, None, :]
    Af = A.reshape(1, L)
    inv_A = 1.0 / Af
    # work buffers, reused in place: fresh large allocations cost page faults on CPU
    buf = [torch.empty(N, L, dtype=dt, device=dev) for _ in range(4)]
    spare = torch.empty(N, L, dtype=dt, device=dev)  # swapped with c_k after each update
    for it in range(max_iter):
        n_act = act.numel()
        s_, t_, u_, q_ = (w_[:n_act] for w_ in buf)
        udiff = torch.zeros(n_act, dtype=dt, device=dev)
        om_old = om.clone()
        for k in range(M):
            ok_ = om[:, k]
            if dc and k == 0:  # omega = 0 for good: W = 1 / A
                wk = inv_A
            else:  # Wiener filter W = 1 / (A + alpha |omega|^2 - 2 alpha |xi . omega|)
                torch.add(fyc * ok_[:, 1, None, None], fxr * ok_[:, 0, None, None], out=s_.view(n_act, H, Wr))
                torch.abs(s_, out=t_)
                torch.add(Af, t_, alpha=-2.0 * alpha, out=t_)
                t_.add_((alpha * (ok_ ** 2).sum(1))[:, None]).reciprocal_()
                wk = t_
            ck, g_ = c[k], spare
            torch.add(R, ck, out=u_)
            torch.mul(u_, wk, out=g_)  # new coefficient
            torch.sub(u_, g_, out=R)
            if tol > 0:
                torch.sub(g_, ck, out=u_)
                udiff += u_.mul_(u_).mul_(Pw).sum(1)
            c[k], spare = g_, ck
            if dc and k == 0:
                continue
            torch.mul(g_, g_, out=q_)
            q_.mul_(Pw)  # |u_k|^2 on the half grid, column-weighted
            den = q_.sum(1)
            torch.sign(s_, out=s_)
            s3 = s_.mul_(q_).view(n_act, H, Wr)  # sign(s) |u_k|^2
            numx = 2 * (s3.sum(1) * fx).sum(1)
            numy = 2 * (s3.sum(2) * fy).sum(1)
            den = den + s_.abs_().sum(1)
            ok = den > 0
            safe = torch.where(ok, den, torch.ones_like(den))
            new = torch.where(ok[:, None], torch.stack([numx, numy], 1) / safe[:, None], ok_)
            new = torch.where((new[:, 1] < 0)[:, None], -new, new)
            om[:, k] = new
        if tau > 0:  # dual ascent m += tau (sum_k c_k - 1), and R follows m
            torch.add(R, m, alpha=0.5, out=u_)
            u_.mul_(-tau)
            m.add_(u_)
            R.sub_(u_, alpha=0.5)
        iters[act.cpu()] += 1
        if tol > 0:
            odiff = ((om - om_old) ** 2).sum((1, 2))
            done = (udiff / hw <= tol) & (odiff <= tol)
            if bool(done.any()):
                idx = act[done]
                c_all[idx] = torch.stack([ci[done] for ci in c], 1).view(-1, M, H, Wr)
                om_all[idx] = om[done]
                converged[idx.cpu()] = True
                keep = ~done
                act, Pw, om, R = act[keep], Pw[keep], om[keep], R[keep]
                c = [ci[keep] for ci in c]
                m = m[keep] if m is not None else None
                spare = spare[:act.numel()]
                if act.numel() == 0:
                    break
    if act.numel():
        c_all[act] = torch.stack(c, 1).view(-1, M, H, Wr)
        om_all[act] = om
    return X, c_all, om_all, iters.numpy(), converged.numpy()


@METHODS.register("vmd")
def vmd(x: torch.Tensor, k: int, *, alpha: float = 5000.0, tau: float = 0.0, tol: float = 1e-6,
        max_iter: int = 500, dc: bool = True, init="oriented", seed: int = 0,
        residual: str = "channel", zero_mean: bool = True, backend: str = "auto"):
    """2-D VMD into K channels (modes by decreasing centre frequency, then residual).

    Parameters
    ----------
    alpha : bandwidth constraint (frequencies in cycles/pixel; 5000 as in the
        authors' demo). Smaller alpha widens the modes: on mini-MIAS ROIs the
        unreconstructed fraction is about 0.05 at alpha=100, 0.09 at 500,
        0.13 at 2000 and 0.17-0.18 at 5000 (bench/decompose.py), but small
        alpha needs many more iterations.
    tau : dual-ascent step. 0 (default, "noise slack", as pysdkit) drops the
        exact-reconstruction constraint; the authors' demo uses 0.25, with
        which a 32x32 random texture decomposed into 2 modes did not converge
        in 3000 iterations and ended with an unreconstructed fraction above
        2, so use it with care.
    tol : stopping tolerance (see :func:`vmd_coefficients`); 0 runs
        exactly ``max_iter`` iterations.
    max_iter : iteration cap.
    dc : keep the first mode at frequency (0, 0).
    init : ``"oriented"`` (default, equivariant), ``"radial"``, ``"random"``
        (with ``seed``) or an (M,2) array of initial (omega_x, omega_y).
    residual : ``"channel"`` (K-1 modes + residual) or ``"fold"`` (K modes,
        residual added to the lowest mode).
    zero_mean : remove the image mean before VMD (it goes to the last channel).
    backend : ``"auto"`` (default: the compiled numba kernel for CPU tensors
        when numba is installed, else torch), ``"torch"`` or ``"numba"``; see
        :func:`vmd_coefficients`.
    """
    if residual not in ("channel", "fold"):
        raise InputError(f"vmd: residual must be 'channel' or 'fold', got {residual!r}")
    n_modes = k - 1 if residual == "channel" else k
    if n_modes < 1:
        raise InputError(f"vmd: k={k} leaves no mode with residual='channel'; use k >= 2")
    if not alpha > 0 or tau < 0 or tol < 0 or max_iter < 1:
        raise InputError(f"vmd: need alpha > 0, tau >= 0, tol >= 0, max_iter >= 1; got alpha={alpha}, "
                         f"tau={tau}, tol={tol}, max_iter={max_iter}")
    N, H, W = x.shape
    backend = _backend(backend, x.device)
    X, c, om, iters, conv = vmd_coefficients(x, n_modes, alpha=alpha, tau=tau, tol=tol, max_iter=max_iter,
                                             dc=dc, init=init, seed=seed, zero_mean=zero_mean,
                                             backend=backend)
    mag = (om ** 2).sum(-1)
    order = torch.argsort(-mag, dim=1, stable=True)
    om = torch.gather(om, 1, order[..., None].expand(-1, -1, 2))
    mean = x.mean((1, 2), keepdim=True) if zero_mean else torch.zeros_like(x[:, :1, :1])
    if backend == "numba":  # sorted spectra, inverse FFTs, residual and its norm without temporaries
        from . import _vmd_cpu
        out, frac = _vmd_cpu.assemble(x.contiguous().numpy(), X.numpy(), c.numpy(), order.numpy(),
                                      mean.numpy().reshape(-1), fold=(residual == "fold"),
                                      threads=torch.get_num_threads())
        out, frac = torch.from_numpy(out), torch.from_numpy(frac)
    else:
        u = torch.fft.irfft2(c * X[:, None], s=(H, W))
        u = torch.gather(u, 1, order[:, :, None, None].expand(-1, -1, H, W))
        r = x - u.sum(1)
        num = torch.linalg.vector_norm((r - mean).flatten(1), dim=1)
        den = torch.linalg.vector_norm((x - mean).flatten(1), dim=1)
        frac = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))
        if residual == "channel":
            out = torch.cat([u, r[:, None]], 1)
        else:
            out = u.clone()
            out[:, -1] += r
    info = {"omega": om.cpu().numpy(), "iterations": iters, "converged": conv,
            "unreconstructed_fraction": frac.cpu().numpy()}
    return out, info
