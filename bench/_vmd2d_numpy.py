"""NumPy transcription of the public 2-D VMD port (Dragomiretskiy & Zosso's VMD_2D.m).

The baseline the benchmark compares against: one image at a time, full
complex fftshift-ed spectra, one fft2/ifft2 pair per mode per iteration to
"recover the full spectrum from the analytic signal", exactly as the MATLAB
code (and its Python ports) do. Kept here, outside the package, only for
bench/decompose.py.
"""
from __future__ import annotations

import numpy as np


def vmd2d_port(signal, alpha=5000.0, tau=0.0, K=4, DC=True, init=0, tol=1e-6, N=3000, seed=0):
    """Return (u (K,H,W), omega (2,K), iterations) like VMD_2D.m."""
    Hy, Hx = signal.shape
    X, Y = np.meshgrid(np.arange(1, Hx + 1) / Hx, np.arange(1, Hy + 1) / Hy)
    freqs_1 = X - 0.5 - 1 / Hx
    freqs_2 = Y - 0.5 - 1 / Hy
    f_hat = np.fft.fftshift(np.fft.fft2(signal))
    u_hat = np.zeros((K, Hy, Hx), dtype=complex)
    u_hat_old = u_hat.copy()
    sum_uk = np.zeros((Hy, Hx), dtype=complex)
    mu_hat = np.zeros((Hy, Hx), dtype=complex)
    omega = np.zeros((2, K))
    if init == 0:
        maxK = K - 1 if DC else K
        for k in range(int(DC) + 1, int(DC) + maxK + 1):
            omega[0, k - 1] = 0.25 * np.cos(np.pi * (k - 1) / maxK)
            omega[1, k - 1] = 0.25 * np.sin(np.pi * (k - 1) / maxK)
    else:
        rng = np.random.default_rng(seed)
        omega[0] = rng.random(K) - 0.5
        omega[1] = rng.random(K) / 2
        if DC:
            omega[:, 0] = 0
    uDiff = omegaDiff = tol + np.spacing(1)
    n = 0
    while (uDiff > tol or omegaDiff > tol) and n < N - 1:
        omega_old = omega.copy()
        for k in range(K):
            mask = np.sign(freqs_1 * omega[0, k] + freqs_2 * omega[1, k]) + 1
            sum_uk = u_hat[k - 1] + sum_uk - u_hat[k]
            u_hat[k] = ((f_hat - sum_uk - mu_hat / 2) * mask) / (
                1 + alpha * ((freqs_1 - omega[0, k]) ** 2 + (freqs_2 - omega[1, k]) ** 2))
            if not (DC and k == 0):
                p = np.abs(u_hat[k]) ** 2
                omega[0, k] = np.sum(freqs_1 * p) / np.sum(p)
                omega[1, k] = np.sum(freqs_2 * p) / np.sum(p)
                if omega[1, k] < 0:
                    omega[:, k] = -omega[:, k]
            u_hat[k] = np.fft.fftshift(np.fft.fft2(np.real(np.fft.ifft2(np.fft.ifftshift(u_hat[k])))))
        mu_hat = mu_hat + tau * (u_hat.sum(0) - f_hat)
        n += 1
        omegaDiff = np.spacing(1) + K * np.sum((omega - omega_old) ** 2)
        uDiff = abs(np.spacing(1) + np.sum(np.abs(u_hat - u_hat_old) ** 2) / (Hx * Hy))
        u_hat_old = u_hat.copy()
    u = np.real(np.fft.ifft2(np.fft.ifftshift(u_hat, axes=(1, 2)), axes=(1, 2)))
    return u, omega, n
