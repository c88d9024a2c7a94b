"""Tests of mammodecomp.decompose against independent references and invariants."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mammodecomp.decompose import METHODS, decompose
from mammodecomp.decompose.laplacian import expand, reduce
from mammodecomp.decompose.vmd import vmd_coefficients
from mammodecomp.errors import InputError

ALL = ["vmd", "fabemd", "starlet", "laplacian", "bands"]
FAST_VMD = {"max_iter": 15, "tol": 0.0}


def _params(method):
    return FAST_VMD if method == "vmd" else {}


def _texture(n=32, seed=0, batch=2):
    """Smooth random texture plus fine noise: energy at every scale."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batch):
        img = rng.random((n, n))
        X = np.fft.fft2(img)
        f = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n)))
        X *= 1 / (f + 0.02)
        img = np.real(np.fft.ifft2(X))
        img = (img - img.min()) / (img.max() - img.min())
        out.append(img + 0.05 * rng.standard_normal((n, n)))
    return np.stack(out)


# --------------------------------------------------------------------- contract
@pytest.mark.parametrize("method", ALL)
def test_sum_float32_shapes_and_types(method):
    x = _texture(48, seed=1).astype(np.float32)
    c = decompose(x, method, k=5, **_params(method))
    assert isinstance(c, np.ndarray) and c.dtype == np.float32 and c.shape == (2, 5, 48, 48)
    rng_ = float(x.max() - x.min())
    assert np.abs(c.sum(1) - x).max() <= 1e-5 * rng_
    t = decompose(torch.from_numpy(x), method, k=5, **_params(method))
    assert isinstance(t, torch.Tensor) and t.shape == (2, 5, 48, 48)
    np.testing.assert_array_equal(t.numpy(), c)  # deterministic
    assert np.abs(c).max() > 0 and np.abs(c[:, 0]).max() > 1e-3  # not a trivial split


@pytest.mark.parametrize("method", ALL)
def test_batch_independent(method):
    x = _texture(32, seed=2, batch=3)
    full = decompose(x, method, k=4, **_params(method))
    one = decompose(x[1:2], method, k=4, **_params(method))
    np.testing.assert_allclose(one[0], full[1], atol=1e-12)


TRANSFORMS = {
    "flip_rows": lambda a: a[..., ::-1, :],
    "flip_cols": lambda a: a[..., :, ::-1],
    "rot90": lambda a: np.rot90(a, 1, (-2, -1)),
    "rot180": lambda a: np.rot90(a, 2, (-2, -1)),
    "rot270": lambda a: np.rot90(a, 3, (-2, -1)),
    "transpose": lambda a: np.swapaxes(a, -1, -2),
    "anti_transpose": lambda a: np.rot90(np.swapaxes(a, -1, -2), 2, (-2, -1)),
}


@pytest.mark.parametrize("method,tname", list(itertools.product(ALL, TRANSFORMS)))
def test_equivariance(method, tname):
    """decompose(T x) == T decompose(x) for the 7 non-trivial symmetries of the square.

    VMD uses its default init ("oriented"), with an odd and an even number
    of free modes (k=5: 3 non-DC modes + DC + residual).
    """
    T = TRANSFORMS[tname]
    x = _texture(32, seed=3)
    c = decompose(x, method, k=5, **_params(method))
    ct = decompose(np.ascontiguousarray(T(x)), method, k=5, **_params(method))
    np.testing.assert_allclose(ct, T(c), atol=1e-9)


def test_vmd_paper_init_is_not_equivariant_but_oriented_is():
    """Documented: MATLAB's radial init (fixed fan at angle 0) breaks rotation equivariance."""
    x = _texture(32, seed=4, batch=1)
    T = TRANSFORMS["rot90"]
    p = {"k": 5, "max_iter": 30, "tol": 0.0}
    bad = decompose(np.ascontiguousarray(T(x)), "vmd", init="radial", **p) - T(decompose(x, "vmd", init="radial", **p))
    good = decompose(np.ascontiguousarray(T(x)), "vmd", **p) - T(decompose(x, "vmd", **p))
    assert np.abs(bad).max() > 1e-4
    assert np.abs(good).max() < 1e-9


@pytest.mark.parametrize("method", ALL)
def test_constant_goes_to_last_channel(method):
    x = np.full((2, 24, 20), 0.37)
    c = decompose(x, method, k=4, **_params(method))
    np.testing.assert_allclose(c[:, -1], x, atol=1e-12)
    assert np.abs(c[:, :-1]).max() < 1e-12


def test_append_raw_and_identity():
    x = _texture(16, batch=2).astype(np.float32)
    c = decompose(x, "starlet", k=3, append_raw=True)
    assert c.shape == (2, 4, 16, 16)
    np.testing.assert_array_equal(c[:, -1], x)
    i = decompose(x, "identity")
    assert i.shape == (2, 1, 16, 16)
    np.testing.assert_array_equal(i[:, 0], x)
    with pytest.raises(InputError, match="identity"):
        decompose(x, "identity", k=3)


def test_input_errors():
    x = np.zeros((1, 8, 8))
    with pytest.raises(InputError, match="unknown decomposition method 'nope'"):
        decompose(x, "nope")
    with pytest.raises(InputError, match=r"\(N,H,W\)"):
        decompose(np.zeros((8, 8)), "starlet")
    with pytest.raises(InputError, match="NaN"):
        decompose(np.full((1, 8, 8), np.nan), "starlet")
    with pytest.raises(InputError, match="unknown parameter"):
        decompose(x, "starlet", bogus=1)
    with pytest.raises(InputError, match="k must be"):
        decompose(x, "starlet", k=0)
    with pytest.raises(InputError, match="residual"):
        decompose(x, "vmd", residual="x")
    with pytest.raises(InputError, match="init must be"):
        decompose(x, "vmd", init="spiral")
    with pytest.raises(InputError, match="init must be"):
        decompose(x, "vmd", k=3, init=[[0.1, 0.2]])


def test_registry_complete():
    assert set(METHODS) == {"vmd", "fabemd", "starlet", "laplacian", "bands", "identity"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("method", ALL)
def test_gpu_matches_cpu(method):
    x = _texture(32, seed=5)
    cpu = decompose(x, method, k=4, **_params(method))
    gpu = decompose(torch.from_numpy(x), method, k=4, device="cuda", **_params(method))
    assert gpu.device.type == "cuda"
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu, atol=1e-8)


# --------------------------------------------------------------------- VMD
def _vmd2d_paper(signal, alpha, tau, K, DC, n_iter):
    """Loop-by-loop transcription of Dragomiretskiy & Zosso's VMD_2D.m (init 0).

    Written independently of the package: full complex fftshift-ed spectra,
    half-plane Hilbert masks, Wiener updates in Gauss-Seidel order, spectral
    centres of gravity, real(ifft2) to recover full spectra, dual ascent.
    """
    Hy, Hx = signal.shape
    X, Y = np.meshgrid(np.arange(1, Hx + 1) / Hx, np.arange(1, Hy + 1) / Hy)
    freqs_1 = X - 0.5 - 1 / Hx
    freqs_2 = Y - 0.5 - 1 / Hy
    f_hat = np.fft.fftshift(np.fft.fft2(signal))
    u_hat = np.zeros((Hy, Hx, K), dtype=complex)
    sum_uk = np.zeros((Hy, Hx), dtype=complex)
    mu_hat = np.zeros((Hy, Hx), dtype=complex)
    omega = np.zeros((n_iter + 1, 2, K))
    maxK = K - 1 if DC else K
    for k in range(DC + 1, DC + maxK + 1):  # MATLAB's 1-based k
        omega[0, 0, k - 1] = 0.25 * np.cos(np.pi * (k - 1) / maxK)
        omega[0, 1, k - 1] = 0.25 * np.sin(np.pi * (k - 1) / maxK)
    for n in range(n_iter):
        for k in range(K):
            mask = np.sign(freqs_1 * omega[n, 0, k] + freqs_2 * omega[n, 1, k]) + 1
            prev = K - 1 if k == 0 else k - 1
            sum_uk = u_hat[:, :, prev] + sum_uk - u_hat[:, :, k]
            u_hat[:, :, k] = ((f_hat - sum_uk - mu_hat / 2) * mask) / (
                1 + alpha * ((freqs_1 - omega[n, 0, k]) ** 2 + (freqs_2 - omega[n, 1, k]) ** 2))
            if not (DC and k == 0):
                p = np.abs(u_hat[:, :, k]) ** 2
                omega[n + 1, 0, k] = np.sum(freqs_1 * p) / np.sum(p)
                omega[n + 1, 1, k] = np.sum(freqs_2 * p) / np.sum(p)
                if omega[n + 1, 1, k] < 0:
                    omega[n + 1, :, k] = -omega[n + 1, :, k]
            u_hat[:, :, k] = np.fft.fftshift(np.fft.fft2(np.real(np.fft.ifft2(np.fft.ifftshift(u_hat[:, :, k])))))
        mu_hat = mu_hat + tau * (np.sum(u_hat, axis=2) - f_hat)
    u = np.stack([np.real(np.fft.ifft2(np.fft.ifftshift(u_hat[:, :, k]))) for k in range(K)])
    return u, omega[n_iter]


def _nyquist_free(img):
    F = np.fft.fft2(img)
    n = img.shape[0]
    F[n // 2, :] = 0
    F[:, n // 2] = 0
    return np.real(np.fft.ifft2(F))


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("dc,tau,alpha", [(True, 0.25, 1000.0), (False, 0.0, 500.0), (False, 0.5, 2000.0)])
def test_vmd_matches_paper_transcription(dc, tau, alpha, backend):
    n, K, n_iter = 32, 4, 25
    yy, xx = np.mgrid[:n, :n]
    img = _texture(n, seed=7, batch=1)[0] + 0.5 * np.cos(2 * np.pi * (3 * yy + 7 * xx) / n)
    img = _nyquist_free(img)
    ref_u, ref_om = _vmd2d_paper(img, alpha, tau, K, int(dc), n_iter)
    X, c, om, iters, _ = vmd_coefficients(torch.from_numpy(img[None]), K, alpha=alpha, tau=tau, tol=0.0,
                                          max_iter=n_iter, dc=dc, init="radial", zero_mean=False, backend=backend)
    u = torch.fft.irfft2(c * X[:, None], s=(n, n))[0].numpy()
    assert iters[0] == n_iter
    np.testing.assert_allclose(u, ref_u, atol=1e-8)
    np.testing.assert_allclose(om[0].numpy(), ref_om.T, atol=1e-8)
    assert np.abs(ref_u).max() > 0.01  # the modes are not trivial


@pytest.mark.parametrize("tol,tau,dc", [(0.0, 0.0, True), (1e-7, 0.0, False), (1e-7, 0.3, True)])
def test_vmd_numba_kernel_equals_torch_path(tol, tau, dc):
    """The compiled CPU kernel runs the torch path's iterations (float64: to 1e-10), stops each
    image at the same iteration, and does not depend on the thread count or the batch."""
    import numba
    x = torch.from_numpy(np.stack([_texture(48, seed=s, batch=1)[0][:, :40] for s in range(3)]))
    kw = {"max_iter": 60, "tol": tol, "tau": tau, "dc": dc}
    Xt, ct, omt, itt, cvt = vmd_coefficients(x, 3, backend="torch", **kw)
    Xn, cn, omn, itn, cvn = vmd_coefficients(x, 3, backend="numba", **kw)
    np.testing.assert_array_equal(itn, itt)
    np.testing.assert_array_equal(cvn, cvt)
    np.testing.assert_allclose(cn.numpy(), ct.numpy(), atol=1e-10)
    np.testing.assert_allclose(omn.numpy(), omt.numpy(), atol=1e-10)
    if tol and not tau:  # (with tau > 0 these textures do not converge in 60 iterations)
        assert cvn.any() and (itn < 60).any()
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        c1 = vmd_coefficients(x, 3, backend="numba", **kw)[1]
        alone = vmd_coefficients(x[1:2], 3, backend="numba", **kw)[1]
    finally:
        torch.set_num_threads(prev)
    assert numba.config.NUMBA_NUM_THREADS >= 1
    assert torch.equal(c1, cn)  # bitwise, whatever the thread count
    # alone vs in a batch: torch's batched rfft2 (before the kernel) rounds an image of a batch and
    # the same image alone differently on some CPUs (1.4e-14 here), so the batch is held to 1e-12
    np.testing.assert_allclose(alone[0].numpy(), cn[1].numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("residual", ["channel", "fold"])
def test_vmd_numba_output_equals_torch_output(residual):
    x = np.stack([_texture(40, seed=s, batch=1)[0] + 3.0 for s in range(3)])
    x[2] = 1.5  # a constant image: nothing to decompose, unreconstructed fraction 0
    kw = {"k": 4, "max_iter": 30, "tol": 1e-9, "residual": residual, "return_info": True}
    a, ia = decompose(x, "vmd", backend="numba", **kw)
    b, ib = decompose(x, "vmd", backend="torch", **kw)
    np.testing.assert_allclose(a, b, atol=1e-10)
    np.testing.assert_allclose(a.sum(1), x, atol=1e-12)
    np.testing.assert_allclose(ia["unreconstructed_fraction"], ib["unreconstructed_fraction"], atol=1e-10)
    # (the constant image's omegas follow FFT rounding noise, 1e-13: not compared)
    np.testing.assert_allclose(ia["omega"][:2], ib["omega"][:2], atol=1e-10)
    assert ia["unreconstructed_fraction"][2] == 0 and np.all(ia["unreconstructed_fraction"][:2] > 0)


@pytest.mark.parametrize("method", ["vmd", "starlet", "laplacian", "bands"])
def test_compiled_cpu_paths_leave_torch_thread_count_alone(method):
    """numba and torch share the OpenMP runtime; a decomposition must not change torch's
    thread count (a resumed training run would round differently)."""
    prev = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            decompose(np.random.default_rng(0).random((3, 24, 24)).astype(np.float32), method, max_iter=3) \
                if method == "vmd" else decompose(np.random.default_rng(0).random((3, 24, 24)), method)
            assert torch.get_num_threads() == n
    finally:
        torch.set_num_threads(prev)


_COMPILE_PROBE = """
import hashlib, json, sys
import numpy as np
from mammodecomp.decompose import decompose, _vmd_cpu, _starlet_cpu, _laplacian_cpu
x = np.random.default_rng(0).random((5, 24, 24)).astype(np.float32)
runs = {"vmd": dict(max_iter=20), "vmd-oriented": dict(max_iter=20, init="oriented"), "starlet": {},
        "laplacian": {}}
out = {m: hashlib.sha256(decompose(x, m.split("-")[0], 4, **kw).tobytes()).hexdigest() for m, kw in runs.items()}
kernels = [_vmd_cpu.batch, _vmd_cpu.moments, _vmd_cpu.fan_energy, _starlet_cpu._kernel, _laplacian_cpu._pyramid]
out["hits"] = sum(sum(k.stats.cache_hits.values()) for k in kernels)
out["misses"] = sum(sum(k.stats.cache_misses.values()) for k in kernels)
json.dump(out, sys.stdout)
"""


def test_compiled_kernels_give_the_same_bits_fresh_and_from_numba_cache(tmp_path):
    """A fresh checkout compiles the kernels in-process; later processes load numba's disk
    cache. Both must round the same way (with fastmath reassoc they did not: a Ray worker's
    store entry differed from the single-process one in a fresh clone)."""
    import json
    import os
    import subprocess
    import sys
    pytest.importorskip("numba")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    runs = []
    for _ in range(2):
        p = subprocess.run([sys.executable, "-c", _COMPILE_PROBE], env=env, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-2000:]
        runs.append(json.loads(p.stdout))
    fresh, cached = runs
    assert fresh.pop("hits") == 0 and fresh.pop("misses") > 0          # compiled here
    assert cached.pop("misses") == 0 and cached.pop("hits") > 0        # loaded from the cache
    assert fresh == cached


def test_vmd_backend_choice_and_errors(monkeypatch):
    from mammodecomp.decompose import _vmd_cpu
    x = _texture(16, seed=3).astype(np.float32)
    with pytest.raises(InputError, match="backend must be one of auto, torch, numba; got 'fortran'"):
        decompose(x, "vmd", backend="fortran")
    auto = decompose(x, "vmd", max_iter=10, tol=0.0)
    np.testing.assert_array_equal(auto, decompose(x, "vmd", max_iter=10, tol=0.0, backend="numba"))
    monkeypatch.setattr(_vmd_cpu, "available", lambda: False)  # numba missing: auto falls back to torch
    np.testing.assert_array_equal(decompose(x, "vmd", max_iter=10, tol=0.0),
                                  decompose(x, "vmd", max_iter=10, tol=0.0, backend="torch"))
    with pytest.raises(InputError, match="backend='numba' needs the images on the CPU and numba installed"):
        decompose(x, "vmd", backend="numba")


def test_vmd_recovers_cosines():
    n = 64
    yy, xx = np.mgrid[:n, :n]
    freqs = [(3, 1), (1, 9), (12, 5)]  # (row, col) cycles per image
    amps = [1.0, 0.7, 0.5]
    cos = [a * np.cos(2 * np.pi * (fy * yy + fx * xx) / n) for (fy, fx), a in zip(freqs, amps)]
    x = (sum(cos) + 0.5)[None]
    c, info = decompose(x, "vmd", k=4, dc=False, tol=1e-9, max_iter=500, return_info=True)
    om = info["omega"][0] * n  # bins, (omega_x, omega_y) with omega_y >= 0
    for (fy, fx), ci in zip(freqs, cos):
        target = np.array([fx, fy])
        d = np.minimum(np.abs(om - target).max(1), np.abs(om + target).max(1))
        j = int(np.argmin(d))
        assert d[j] <= 1.0  # within one frequency bin
        e_mode, e_true = np.sum(c[0, j] ** 2), np.sum(ci ** 2)
        assert abs(e_mode - e_true) / e_true < 0.05
        assert np.sum((c[0, j] - ci) ** 2) / e_true < 0.05
    np.testing.assert_allclose(c[0, -1], 0.5, atol=0.05)  # the mean is in the residual channel
    assert info["converged"][0] and info["unreconstructed_fraction"][0] < 0.01


def test_vmd_residual_fold_and_info():
    x = _texture(32, seed=8)
    c, info = decompose(x, "vmd", k=4, residual="fold", max_iter=40, tol=0.0, return_info=True)
    assert c.shape == (2, 4, 32, 32) and info["omega"].shape == (2, 4, 2)
    np.testing.assert_allclose(c.sum(1), x, atol=1e-12)
    mags = np.hypot(*info["omega"].transpose(2, 0, 1))
    assert np.all(np.diff(mags, axis=1) <= 0)  # modes by decreasing centre frequency
    f = info["unreconstructed_fraction"]
    assert f.shape == (2,) and np.all((f > 0) & (f < 1))
    assert list(info["iterations"]) == [40, 40]


def test_vmd_tolerance_stops_early_per_image():
    x = _texture(32, seed=9)
    _, info = decompose(x, "vmd", k=3, tol=1e-4, max_iter=300, return_info=True)
    assert info["converged"].all() and (info["iterations"] < 300).all()


# --------------------------------------------------------------------- filter banks
@pytest.mark.parametrize("shape,k", [((3, 37, 29), 6), ((2, 8, 5), 5), ((1, 64, 64), 2)])
def test_starlet_compiled_cpu_kernel_equals_torch_path(monkeypatch, shape, k):
    """Odd sizes and holes wider than the image (symmetric extension of any width) included."""
    from mammodecomp.decompose import _starlet_cpu
    x = np.random.default_rng(1).random(shape)
    fast = decompose(x, "starlet", k=k)
    monkeypatch.setattr(_starlet_cpu, "available", lambda: False)
    ref = decompose(x, "starlet", k=k)
    np.testing.assert_allclose(fast, ref, atol=1e-14)
    np.testing.assert_allclose(fast.sum(1), x, atol=1e-14)


@pytest.mark.parametrize("shape,k", [((2, 37, 29), 5), ((1, 64, 64), 6), ((2, 9, 12), 4), ((1, 5, 3), 3),
                                     ((1, 16, 16), 1)])
def test_laplacian_compiled_cpu_kernel_equals_torch_path(monkeypatch, shape, k):
    from mammodecomp.decompose import _laplacian_cpu
    x = np.random.default_rng(2).random(shape)
    fast, info = decompose(x, "laplacian", k=k, return_info=True)
    monkeypatch.setattr(_laplacian_cpu, "available", lambda: False)
    ref, ref_info = decompose(x, "laplacian", k=k, return_info=True)
    np.testing.assert_allclose(fast, ref, atol=1e-13)
    np.testing.assert_allclose(fast.sum(1), x, atol=1e-13)
    assert [tuple(s) for s in info["level_shapes"]] == [tuple(s) for s in ref_info["level_shapes"]]


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_bands_packed_cpu_path_equals_torch_path(monkeypatch, k):
    """Two real bands per complex inverse FFT == one real inverse FFT per band."""
    import sys
    x = np.random.default_rng(3).random((2, 37, 30))
    fast = decompose(x, "bands", k=k)
    monkeypatch.setattr(sys.modules["mammodecomp.decompose.bands"], "CPU_PACKED", False)
    ref = decompose(x, "bands", k=k)
    np.testing.assert_allclose(fast, ref, atol=1e-13)
    np.testing.assert_allclose(fast.sum(1), x, atol=1e-13)


def test_starlet_b3_filter_bank():
    n = 64
    x = np.zeros((1, n, n))
    x[0, 32, 32] = 1.0
    c = decompose(x, "starlet", k=3)
    h = np.array([1, 4, 6, 4, 1]) / 16
    c1 = np.zeros((n, n))
    c1[30:35, 30:35] = np.outer(h, h)
    np.testing.assert_allclose(x[0] - c[0, 0], c1, atol=1e-15)  # c_1 = h * x
    h2 = np.zeros(9)
    h2[::2] = h  # a trous: one hole
    hh = np.convolve(h, h2)
    c2 = np.zeros((n, n))
    c2[26:39, 26:39] = np.outer(hh, hh)
    np.testing.assert_allclose(c[0, 2], c2, atol=1e-15)  # c_2 = h_2 * h * x
    np.testing.assert_allclose(c.sum(1), x, atol=1e-15)


def test_laplacian_filter_bank_and_reconstruction():
    # odd axis: B3 blur then every second sample
    x = torch.zeros(1, 33, 33, dtype=torch.float64)
    x[0, 16, 16] = 1
    h = np.array([1, 4, 6, 4, 1]) / 16
    r = reduce(x)[0].numpy()
    exp = np.zeros((17, 17))
    exp[7:10, 7:10] = np.outer(h[::2], h[::2])
    np.testing.assert_allclose(r, exp, atol=1e-15)
    # even axis: B3 blur then means of sample pairs = taps [1,5,10,10,5,1]/32 on the half-sample grid
    x = torch.zeros(1, 32, 32, dtype=torch.float64)
    x[0, 16, 16] = 1
    r = reduce(x)[0].numpy()
    t = np.zeros(16)
    t[7:10] = np.array([5, 10, 1]) / 32
    np.testing.assert_allclose(r, np.outer(t, t), atol=1e-15)
    # perfect reconstruction, and the last channel is the expanded low-pass residual
    img = _texture(40, seed=10, batch=1)
    c = decompose(img, "laplacian", k=4)
    np.testing.assert_allclose(c.sum(1), img, atol=1e-13)
    g = [torch.from_numpy(img)]
    for _ in range(3):
        g.append(reduce(g[-1]))
    low = g[3]
    for lvl in (2, 1, 0):
        low = expand(low, tuple(g[lvl].shape[-2:]))
    np.testing.assert_allclose(c[:, -1], low.numpy(), atol=1e-13)


def _centroid(a):
    P = np.abs(np.fft.fft2(a)) ** 2
    n, m = a.shape
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(m), np.fft.fftfreq(n)))
    return float((f * P).sum() / P.sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fabemd_centroids_decrease(seed):
    x = _texture(64, seed=seed, batch=1)
    c, info = decompose(x, "fabemd", k=5, return_info=True)
    cents = [_centroid(c[0, j]) for j in range(5)]
    assert all(a > b for a, b in zip(cents, cents[1:])), cents
    assert np.all(np.diff(info["windows"], axis=1) > 0)


def test_bands_partition_of_unity():
    from mammodecomp.decompose.bands import band_filters
    f = band_filters(30, 30, 5)
    np.testing.assert_allclose(f.sum(0).numpy(), 1.0, atol=1e-15)
    assert (f >= 0).all() and (f <= 1).all()
    x = _texture(30, seed=11, batch=1)
    c = decompose(x, "bands", k=5)
    cents = [_centroid(c[0, j]) for j in range(5)]
    assert all(a > b for a, b in zip(cents, cents[1:]))


# --------------------------------------------------------------------- real mini-MIAS film crops
def _mias_crops(root, n=4, size=128, seed=0):
    """``n`` crops of ``size`` px cut at seeded random positions of seeded random mini-MIAS films (8-bit: plateaus)."""
    from mammodecomp.io import read_image
    rng = np.random.default_rng(seed)
    films = sorted(root.glob("mdb*.png")) or sorted(root.glob("mdb*.pgm"))
    out = []
    for _ in range(n):
        f = read_image(films[rng.integers(len(films))])
        r, c = rng.integers(0, np.array(f.shape) - size)
        out.append(f[r:r + size, c:c + size])
    return np.stack(out).astype(np.float64)


@pytest.fixture(scope="module")
def film_crops(mias_root):
    return _mias_crops(mias_root)


@pytest.mark.slow
@pytest.mark.parametrize("method", ALL)
def test_exact_sum_on_real_film_crops(method, film_crops):
    x = film_crops.astype(np.float32)
    c = decompose(x, method, k=5, **_params(method))
    assert np.abs(c.sum(1) - x).max() <= 1e-5 * float(x.max() - x.min())
    c64 = decompose(film_crops, method, k=5, **_params(method))
    assert np.abs(c64.sum(1) - film_crops).max() <= 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("method,tname", list(itertools.product(ALL, ["flip_rows", "flip_cols", "rot90",
                                                                        "transpose"])))
def test_equivariance_on_real_film_crops(method, tname, film_crops):
    """As test_equivariance, on 8-bit film crops whose plateaus made FABEMD's window choice flip."""
    T = TRANSFORMS[tname]
    for x in (film_crops, film_crops.astype(np.float32)):
        c, info = decompose(x, method, k=5, return_info=True, **_params(method))
        ct, info_t = decompose(np.ascontiguousarray(T(x)), method, k=5, return_info=True, **_params(method))
        atol = 1e-9 if x.dtype == np.float64 else 1e-5
        if method == "fabemd":  # exact: same windows, same additions
            atol = 0.0
            np.testing.assert_array_equal(info_t["windows"], info["windows"])
        np.testing.assert_allclose(ct, T(c), rtol=0, atol=atol)
