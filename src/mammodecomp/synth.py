"""Seeded mammogram-like ROIs with known truth (the demo's default data).

Each patient has one lesion seen in several views (CC and MLO by default).
The lesion's malignancy is carried by one latent number, the *evidence* ``z``:

* the true label ``y`` is drawn with the requested prevalence (exact count);
* ``z | y ~ Normal(+d/2, 1)`` for malignant and ``Normal(-d/2, 1)`` for benign,
  with the separation ``d`` set by ``difficulty`` (0 -> ``d = 3.29``, oracle
  AUC 0.99; 1 -> ``d = 0.74``, oracle AUC 0.70; 0.5 -> AUC about 0.865);
* every shape parameter that differs between classes is a deterministic,
  monotone function of ``s = sigmoid(z)``: margin irregularity, margin blur
  and spiculation for masses; number, tightness, size and pleomorphism for
  calcification clusters. Benign-looking (``s`` small): circumscribed
  round/oval masses with smooth margins, or a few coarse scattered
  calcifications. Malignant-looking (``s`` large): irregular or spiculated
  masses with indistinct margins, or tight clusters of small pleomorphic
  calcifications;
* the observed label is the true label flipped with probability
  ``label_noise``.

So the Bayes posterior is known in closed form,
``oracle_prob = P(label = 1 | z) = e + (1 - 2e) * sigmoid(d z + logit(prevalence))``
with ``e = label_noise``, and :func:`oracle_auc` is the best AUC any
classifier of the images can reach on the set (up to what the rendering hides).

Everything that is *not* evidence is drawn from the same distribution for both
classes: lesion type, radius, contrast (integrated lesion brightness is fixed
by radius and contrast alone), position, breast density, tissue texture,
curvilinear structures and noise. Radius, contrast or mean ROI intensity alone
therefore carry no label information.

Background: Gaussian noise filtered to a power spectrum ``1/f^beta`` with
``beta`` in [2.6, 3.4] (anatomical noise of mammograms is measured at
``beta`` about 3), mildly anisotropic, on a fatty-to-dense base level, plus thin
curvilinear structures (ducts, vessels, ligaments) and signal-dependent
quantum-like noise. The two views of a patient share every lesion parameter
(including the random phases of its margin) but have independent backgrounds
and a small affine deformation of the lesion (rotation, 5 % stretch) and
position.

Pixel sizes scale with ``size / 320``; at 320 px think of about 0.1 mm/px.

Determinism: the patient table is drawn from ``default_rng([seed, 0])`` and
``default_rng([seed, 1, patient])``; each ROI's rendering from
``default_rng([seed, 2, patient, view])``. The same seed gives the same bytes,
whatever the batch size; patient ``i`` is the same whatever ``n_patients``
(given the same label).
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import fft as sfft
from scipy import ndimage
from scipy.special import expit, ndtr, ndtri

from .errors import InputError

__all__ = ["generate", "sample_manifest", "render", "backgrounds", "oracle_auc", "write_synthetic",
           "separation", "expected_oracle_auc", "auc"]

#: bump when a change alters generated pixels or latent columns
SYNTH_VERSION = 2   # 2: lesion_id column (pixels as in 1)
DEFAULT_VIEWS = ("CC", "MLO")
_D_EASY = math.sqrt(2.0) * float(ndtri(0.99))   # separation at difficulty 0
_D_HARD = math.sqrt(2.0) * float(ndtri(0.70))   # separation at difficulty 1
_BATCH = 32


# ----------------------------------------------------------------------------- knobs
def separation(difficulty: float) -> float:
    """Distance ``d`` between the class means of the latent evidence.

    Log-linear in ``difficulty`` between the values giving an oracle AUC of
    0.99 (difficulty 0) and 0.70 (difficulty 1) without label noise.

    >>> round(separation(0.0), 3), round(separation(1.0), 3)
    (3.29, 0.742)
    """
    t = float(difficulty)
    return _D_EASY * (_D_HARD / _D_EASY) ** t


def expected_oracle_auc(difficulty: float) -> float:
    """Large-sample oracle AUC without label noise: ``Phi(d / sqrt(2))``.

    >>> round(expected_oracle_auc(0.5), 3)
    0.865
    """
    return float(ndtr(separation(difficulty) / math.sqrt(2.0)))


def auc(y, score) -> float:
    """ROC AUC by the Mann-Whitney statistic (ties count one half).

    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    from scipy.stats import rankdata
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=float)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        raise InputError(f"AUC needs both classes; got {n1} positive and {n0} negative")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def oracle_auc(manifest: pd.DataFrame) -> float:
    """AUC of the Bayes posterior ``oracle_prob`` against the (noisy) ``label``.

    The best AUC a classifier of the ROIs can expect on this set.

    >>> m = sample_manifest(200, seed=0, difficulty=0.0)
    >>> oracle_auc(m) > 0.95
    True
    """
    for col in ("oracle_prob", "label"):
        if col not in manifest.columns:
            raise InputError(f"manifest has no '{col}' column; expected one written by mammodecomp.synth",
                             field=col)
    return auc(manifest["label"].to_numpy(), manifest["oracle_prob"].to_numpy())


def _check_knobs(n_patients, size, difficulty, label_noise, prevalence, views) -> tuple[str, ...]:
    if int(n_patients) != n_patients or n_patients < 2:
        raise InputError(f"n_patients={n_patients!r}; expected an integer >= 2 (both classes are needed)",
                         field="n_patients")
    if int(size) != size or not 64 <= size <= 4096:
        raise InputError(f"size={size!r}; expected an integer number of pixels in [64, 4096]", field="size")
    if not 0.0 <= float(difficulty) <= 1.0:
        raise InputError(f"difficulty={difficulty!r}; expected a number in [0, 1] (0 easy, 1 hard)",
                         field="difficulty")
    if not 0.0 <= float(label_noise) < 0.5:
        raise InputError(f"label_noise={label_noise!r}; expected a flip probability in [0, 0.5)",
                         field="label_noise")
    if not 0.0 < float(prevalence) < 1.0:
        raise InputError(f"prevalence={prevalence!r}; expected a fraction of malignant patients in (0, 1)",
                         field="prevalence")
    if isinstance(views, str):
        views = (views,)
    views = tuple(str(v) for v in views)
    if not views or len(set(views)) != len(views) or any(not v.strip() for v in views):
        raise InputError(f"views={views!r}; expected one or more distinct names such as ('CC', 'MLO')",
                         field="views")
    return views


# ----------------------------------------------------------------------------- table
def sample_manifest(n_patients: int = 300, size: int = 320, seed: int = 0, difficulty: float = 0.5,
                    label_noise: float = 0.0, prevalence: float = 0.5,
                    views=DEFAULT_VIEWS) -> pd.DataFrame:
    """Draw the patient/lesion table (labels, latent evidence, shape knobs) without pixels.

    Parameters are those of :func:`generate`. Fast: use it when only the
    truth is needed (oracle AUC, label balance).

    Returns
    -------
    DataFrame with one row per ROI (patient-major, views in the given order)
    and the columns described in :func:`generate`.

    Examples
    --------
    >>> m = sample_manifest(4, seed=1)
    >>> len(m), sorted(set(m["view"]))
    (8, ['CC', 'MLO'])
    >>> bool((m.groupby("patient_id")["latent_evidence"].nunique() == 1).all())
    True
    """
    views = _check_knobs(n_patients, size, difficulty, label_noise, prevalence, views)
    n = int(n_patients)
    sc = size / 320.0
    d = separation(difficulty)
    n1 = int(np.clip(round(prevalence * n), 1, n - 1))
    rng0 = np.random.default_rng([int(seed), 0])
    true_label = rng0.permutation(np.r_[np.ones(n1, np.int64), np.zeros(n - n1, np.int64)])
    rows = []
    width = max(4, len(str(n - 1)))
    prior = math.log(prevalence / (1 - prevalence))
    for i in range(n):
        r = np.random.default_rng([int(seed), 1, i])
        y = int(true_label[i])
        z = float(r.normal((y - 0.5) * d, 1.0))
        flip = bool(r.random() < label_noise)
        lab = y ^ int(flip)
        p_true = float(expit(d * z + prior))
        oracle = label_noise + (1 - 2 * label_noise) * p_true
        s = float(expit(z))
        lesion_type = "mass" if r.random() < 0.6 else "calcification"
        radius = float(r.uniform(18.0, 50.0) * sc)
        contrast = float(r.uniform(0.15, 0.30))
        style = float(r.random())          # 0: irregular mass ... 1: spiculated mass
        aspect = float(r.uniform(1.0, 1.7))
        orient = float(r.uniform(0, np.pi))
        density = float(r.beta(1.6, 1.6))
        laterality = "L" if r.random() < 0.5 else "R"
        pid = f"syn-p{i:0{width}d}"
        for v, view in enumerate(views):
            rows.append(dict(
                roi_id=f"{pid}-{view}", patient_id=pid, lesion_id=f"{pid}-L1", label=lab,
                label_name="malignant" if lab else "benign",
                image_path=f"images/{pid}-{view}.png", source="synthetic", view=view,
                laterality=laterality, lesion_type=lesion_type,
                image_height=int(size), image_width=int(size),
                latent_evidence=z, oracle_prob=oracle, true_label=y,
                malignancy_score=s, lesion_radius_px=radius, contrast=contrast,
                mass_style=style, aspect=aspect, orientation=orient, density=density,
                patient_index=i, view_index=v,
            ))
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- pixels
def _splat(img: np.ndarray, rows: np.ndarray, cols: np.ndarray, w: np.ndarray) -> None:
    """Add weights at fractional (row, col) positions with bilinear weights (in place)."""
    H, W = img.shape
    r0 = np.floor(rows).astype(np.int64)
    c0 = np.floor(cols).astype(np.int64)
    fr, fc = rows - r0, cols - c0
    flat = img.reshape(-1)
    for dr, dc, ww in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc),
                       (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        rr, cc = r0 + dr, c0 + dc
        ok = (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
        flat += np.bincount(rr[ok] * W + cc[ok], weights=(w * ww)[ok], minlength=H * W).astype(flat.dtype)


def _curves(rng, n, length, step, start, heading, wiggle):
    """Smooth random curves: arrays (rows, cols, t in [0,1]) for n curves of given lengths."""
    rows, cols, ts, ids = [], [], [], []
    for k in range(n):
        m = max(2, int(length[k] / step))
        turn = np.cumsum(rng.normal(0.0, wiggle, m))
        turn = ndimage.uniform_filter1d(turn, size=max(1, m // 8))
        ang = heading[k] + turn
        rows.append(start[k, 0] + np.cumsum(np.sin(ang)) * step)
        cols.append(start[k, 1] + np.cumsum(np.cos(ang)) * step)
        ts.append(np.linspace(0.0, 1.0, m))
        ids.append(np.full(m, k))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(ts), np.concatenate(ids)


def _freq_grid(size: int):
    fy = sfft.fftfreq(size).astype(np.float32)[:, None]
    fx = sfft.rfftfreq(size).astype(np.float32)[None, :]
    return fy, fx


def _tissue(whites: np.ndarray, betas, anis, angles, workers: int) -> np.ndarray:
    """Filter white noise (B,H,W) to anisotropic 1/f^beta fields of zero mean, unit SD."""
    B, H, W = whites.shape
    fy, fx = _freq_grid(H)
    F = sfft.rfft2(whites, workers=workers)
    f0 = 1.5 / H
    for b in range(B):
        ca, sa = math.cos(angles[b]), math.sin(angles[b])
        u = (fx * ca + fy * sa) * anis[b]
        v = (-fx * sa + fy * ca) / anis[b]
        filt = (u * u + v * v + f0 * f0) ** (-betas[b] / 4.0)
        filt[0, 0] = 0.0
        F[b] *= filt
    g = sfft.irfft2(F, s=(H, W), workers=workers).astype(np.float32)
    g -= g.mean(axis=(1, 2), keepdims=True)
    g /= g.std(axis=(1, 2), keepdims=True) + 1e-12
    return g


def _lesion(row: pd.Series, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Render one ROI's lesion layer (H,W float32, >= 0); returns (layer, info, centre row, col)."""
    sc = size / 320.0
    i, v = int(row["patient_index"]), int(row["view_index"])
    lr = np.random.default_rng([int(seed), 3, i])        # lesion detail: shared by the views
    vr = np.random.default_rng([int(seed), 4, i, v])     # this view's deformation and position
    s = float(row["malignancy_score"])
    R = float(row["lesion_radius_px"])
    contrast = float(row["contrast"])
    # view deformation: rotation + small anisotropic stretch (area preserving) + shift
    rot = float(row["orientation"]) + vr.normal(0.0, 0.35)
    stretch = 1.0 + vr.uniform(-0.06, 0.06)
    st_ang = vr.uniform(0, np.pi)
    cr = size / 2 + vr.uniform(-0.08, 0.08) * size
    cc = size / 2 + vr.uniform(-0.08, 0.08) * size
    # A maps lesion-frame (u, v) -> image offsets (drow, dcol)
    Rm = np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]])
    Rs = np.array([[math.cos(st_ang), -math.sin(st_ang)], [math.sin(st_ang), math.cos(st_ang)]])
    S = Rs @ np.diag([stretch, 1.0 / stretch]) @ Rs.T
    A = S @ Rm
    Ainv = np.linalg.inv(A)
    layer = np.zeros((size, size), np.float32)
    info = {}
    if row["lesion_type"] == "mass":
        style = float(row["mass_style"])
        asp = float(row["aspect"])
        irr = 0.03 + 0.30 * s * (1.0 - 0.55 * style)
        n_spic = int(round(22.0 * s * s * style))
        spic_len = R * (0.5 + 1.0 * s)
        margin = R * (0.025 + 0.12 * s) + 0.5 * sc
        ks = np.arange(2, 13)
        ck = ks ** -0.9
        ck = ck / ck.sum()
        phases = lr.uniform(0, 2 * np.pi, ks.size)
        spic_ang = lr.uniform(0, 2 * np.pi, 32)[:n_spic]
        spic_frac = lr.uniform(0.6, 1.0, 32)[:n_spic]
        spic_curv = lr.normal(0, 0.08, 32)[:n_spic]
        norm = math.sqrt(1.0 + 0.5 * float(((irr * ck) ** 2).sum()))
        reach = R * math.sqrt(asp) * (1 + irr) / norm * 1.07 + (spic_len if n_spic else 0) + 5 * margin + 4
        r0, r1 = max(0, int(cr - reach)), min(size, int(cr + reach) + 1)
        c0, c1 = max(0, int(cc - reach)), min(size, int(cc + reach) + 1)
        dy = np.arange(r0, r1, dtype=np.float32)[:, None] - np.float32(cr)
        dx = np.arange(c0, c1, dtype=np.float32)[None, :] - np.float32(cc)
        a00, a01, a10, a11 = (float(t) for t in Ainv.ravel())
        u = (a00 * dy + a01 * dx) * (1.0 / math.sqrt(asp))     # oval, area preserving
        w = (a10 * dy + a11 * dx) * math.sqrt(asp)
        rr = np.hypot(u, w)
        # margin radius rho(theta) = R (1 + irr * sum_k c_k cos(k theta + phi_k)), via powers of e^{i theta}
        e = (u + 1j * w) / np.maximum(rr, 1e-6)
        ek = e * e
        acc = np.zeros_like(e)
        for k, a, ph in zip(ks, ck, phases):
            acc += complex(a * math.cos(ph), a * math.sin(ph)) * ek
            ek *= e
        rho = (1.0 + irr * acc.real) * (R / norm)
        body = expit((rho - rr) / margin) * (1.0 - 0.3 * np.clip(rr / rho, 0, 1) ** 2)
        crop = body.astype(np.float32)
        if n_spic:
            # spicules: slightly curved tapering lines from inside the margin outwards (lesion frame)
            step = 0.5 * sc
            ln = spic_len * spic_frac
            m = np.maximum(2, (ln / step).astype(int) + int(R * 0.6 / step))
            pu, pw, pt = [], [], []
            for j in range(n_spic):
                t = np.linspace(0, 1, m[j])
                rad = 0.6 * R + t * (ln[j] + 0.4 * R)
                ang = spic_ang[j] + spic_curv[j] * t * t
                pu.append(rad * np.cos(ang) * math.sqrt(asp))
                pw.append(rad * np.sin(ang) / math.sqrt(asp))
                pt.append(np.clip(1.0 - (rad - 0.6 * R) / (ln[j] + 0.4 * R), 0, 1) ** 0.7)
            pu, pw, pt = np.concatenate(pu), np.concatenate(pw), np.concatenate(pt)
            prow = A[0, 0] * pu + A[0, 1] * pw + cr - r0
            pcol = A[1, 0] * pu + A[1, 1] * pw + cc - c0
            lines = np.zeros_like(crop)
            sig = 1.1 * sc
            _splat(lines, prow, pcol, pt * step * math.sqrt(2 * np.pi) * sig)
            lines = ndimage.gaussian_filter(lines, sig, truncate=3.0)
            crop = crop + 0.6 * lines
        target = contrast * np.pi * R * R * 0.85
        crop *= target / max(float(crop.sum()), 1e-6)
        layer[r0:r1, c0:c1] = crop
        info.update(irregularity=irr, n_spicules=n_spic, margin_px=margin, n_calcs=0)
    else:
        n_c = int(round(3 + 24 * s))
        spread = R * (1.5 - 0.7 * s)
        sig_mean = (3.4 - 2.2 * s) * sc
        pleo = 0.10 + 0.45 * s
        ang = lr.uniform(0, 2 * np.pi, 40)[:n_c]
        rad = spread * np.sqrt(lr.random(40)[:n_c])
        sig = sig_mean * np.exp(lr.normal(0, pleo, 40)[:n_c])
        elong = 1.0 + (0.2 + 2.2 * s) * lr.random(40)[:n_c]
        eang = lr.uniform(0, np.pi, 40)[:n_c]
        pu, pw = rad * np.cos(ang), rad * np.sin(ang)
        prow = A[0, 0] * pu + A[0, 1] * pw + cr
        pcol = A[1, 0] * pu + A[1, 1] * pw + cc
        sa = sig * np.sqrt(elong)                 # area preserving elongation
        sb = sig / np.sqrt(elong)
        reach = spread * 1.1 + 4 * float(sa.max()) + 3
        r0, r1 = max(0, int(cr - reach)), min(size, int(cr + reach) + 1)
        c0, c1 = max(0, int(cc - reach)), min(size, int(cc + reach) + 1)
        crop = np.zeros((r1 - r0, c1 - c0), np.float32)
        for j in range(n_c):                       # each calcification in its own small window
            h = 4.0 * float(sa[j]) + 2.0
            ra, rb = max(r0, int(prow[j] - h)), min(r1, int(prow[j] + h) + 1)
            ka, kb = max(c0, int(pcol[j] - h)), min(c1, int(pcol[j] + h) + 1)
            if ra >= rb or ka >= kb:
                continue
            dy = np.arange(ra, rb, dtype=np.float32)[:, None] - np.float32(prow[j])
            dx = np.arange(ka, kb, dtype=np.float32)[None, :] - np.float32(pcol[j])
            ca, sn = math.cos(eang[j] + rot), math.sin(eang[j] + rot)
            a = (dy * ca + dx * sn) * (1.0 / float(sa[j]))
            b = (dx * ca - dy * sn) * (1.0 / float(sb[j]))
            crop[ra - r0:rb - r0, ka - c0:kb - c0] += np.exp(-0.5 * (a * a + b * b))
        # integrated brightness fixed by contrast alone (same law for both classes)
        target = contrast * 2.6 * 300.0 * sc * sc
        crop *= target / max(float(crop.sum()), 1e-6)
        layer[r0:r1, c0:c1] = crop
        info.update(irregularity=0.0, n_spicules=0, margin_px=0.0, n_calcs=n_c)
    return layer, info, cr, cc


def _background_params(r):
    return dict(beta=float(r.uniform(2.6, 3.4)), anis=float(r.uniform(1.0, 1.5)),
                angle=float(r.uniform(0, np.pi)), tex_amp=float(r.uniform(0.045, 0.075)),
                n_lines=int(r.integers(3, 9)), line_amp=float(r.uniform(0.04, 0.08)),
                quantum=float(r.uniform(0.010, 0.018)), density_jitter=float(r.normal(0, 0.04)))


def _compose(rngs, params, density, size, workers):
    """Backgrounds (B,H,W) float32 (before noise) for per-ROI rngs/params/density."""
    B = len(rngs)
    sc = size / 320.0
    whites = np.stack([r.standard_normal((size, size), dtype=np.float32) for r in rngs])
    g = _tissue(whites, [p["beta"] for p in params], [p["anis"] for p in params],
                [p["angle"] for p in params], workers)
    lines = np.zeros((B, size, size), np.float32)
    for b, (r, p) in enumerate(zip(rngs, params)):
        n = p["n_lines"]
        length = r.uniform(0.3, 1.3, n) * size
        start = r.uniform(-0.1, 1.1, (n, 2)) * size
        heading = p["angle"] + np.pi / 2 + r.normal(0, 0.35, n) + np.where(r.random(n) < 0.5, 0, np.pi)
        rows, cols, t, ids = _curves(r, n, length, 0.7 * sc, start, heading, 0.06)
        bright = r.uniform(0.4, 1.0, n)[ids] * np.sin(np.pi * t) ** 0.5
        _splat(lines[b], rows, cols, bright * 0.7 * sc * math.sqrt(2 * np.pi) * 1.8 * sc)
    lines = ndimage.gaussian_filter(lines, (0, 1.8 * sc, 1.8 * sc), truncate=3.0)
    dens = np.array([min(1.0, max(0.0, density[b] + params[b]["density_jitter"])) for b in range(B)],
                    np.float32)
    base = (0.24 + 0.36 * dens)[:, None, None]
    amp = np.array([p["tex_amp"] for p in params], np.float32)[:, None, None] * (1.0 + 0.4 * dens[:, None, None])
    la = np.array([p["line_amp"] for p in params], np.float32)[:, None, None]
    return base + amp * g + la * lines


def _finish(img, rngs, params):
    """Quantum-like noise (variance proportional to signal) and clipping to [0, 1], in place."""
    for b, (r, p) in enumerate(zip(rngs, params)):
        x = np.clip(img[b], 0.0, None)
        img[b] = x + p["quantum"] * np.sqrt(x) * r.standard_normal(x.shape, dtype=np.float32)
    np.clip(img, 0.0, 1.0, out=img)
    return img


def backgrounds(n: int, size: int = 320, seed: int = 0, density=None, workers: int | None = None) -> np.ndarray:
    """Lesion-free backgrounds exactly as :func:`generate` makes them.

    Parameters
    ----------
    n : number of images.
    size : side in pixels.
    seed : random seed (streams separate from :func:`generate`'s).
    density : breast density in [0, 1] per image (fatty 0 .. dense 1); drawn if None.
    workers : FFT threads (all cores if None).

    Returns
    -------
    (n, size, size) float32 in [0, 1].

    >>> backgrounds(2, size=64).shape
    (2, 64, 64)
    """
    workers = workers or (os.cpu_count() or 1)
    rngs = [np.random.default_rng([int(seed), 5, i]) for i in range(n)]
    params = [_background_params(r) for r in rngs]
    if density is None:
        density = [float(r.beta(1.6, 1.6)) for r in rngs]
    density = np.broadcast_to(np.asarray(density, float), (n,))
    out = np.empty((n, size, size), np.float32)
    for s0 in range(0, n, _BATCH):
        sl = slice(s0, s0 + _BATCH)
        out[sl] = _finish(_compose(rngs[sl], params[sl], density[sl], size, workers), rngs[sl], params[sl])
    return out


def render(manifest: pd.DataFrame, size: int, seed: int, *, batch_size: int = _BATCH,
           workers: int | None = None, progress: bool = False) -> np.ndarray:
    """Render the ROIs of a table made by :func:`sample_manifest` (same size and seed).

    Returns (N, size, size) float32 in [0, 1]; fills the manifest's
    ``lesion_row``, ``lesion_col``, ``irregularity``, ``n_spicules``,
    ``margin_px`` and ``n_calcs`` columns in place.
    """
    from .progress import progress as bar
    workers = workers or (os.cpu_count() or 1)
    N = len(manifest)
    out = np.empty((N, size, size), np.float32)
    extra = {k: np.zeros(N) for k in ("lesion_row", "lesion_col", "irregularity", "n_spicules",
                                     "margin_px", "n_calcs")}
    starts = range(0, N, batch_size)
    it = bar(starts, total=len(starts), desc="synth", disable=None if progress else True)
    for s0 in it:
        sub = manifest.iloc[s0:s0 + batch_size]
        rngs = [np.random.default_rng([int(seed), 2, int(p), int(v)])
                for p, v in zip(sub["patient_index"], sub["view_index"])]
        params = [_background_params(r) for r in rngs]
        img = _compose(rngs, params, sub["density"].to_numpy(float), size, workers)
        for b in range(len(sub)):
            layer, info, cr, cc = _lesion(sub.iloc[b], size, seed)
            img[b] += layer
            info.update(lesion_row=cr, lesion_col=cc)
            for k, val in info.items():
                extra[k][s0 + b] = val
        out[s0:s0 + len(sub)] = _finish(img, rngs, params)
    for k, val in extra.items():
        manifest[k] = val.astype(np.int64) if k in ("n_spicules", "n_calcs") else val
    return out


def generate(n_patients: int = 300, size: int = 320, seed: int = 0, difficulty: float = 0.5,
             label_noise: float = 0.0, prevalence: float = 0.5, views=DEFAULT_VIEWS, *,
             workers: int | None = None, progress: bool = False):
    """Make a seeded set of mammogram-like ROIs with known truth.

    Parameters
    ----------
    n_patients : number of patients (>= 2); each gives one ROI per view.
    size : ROI side in pixels (lesion sizes scale with ``size / 320``).
    seed : random seed; the same seed gives identical arrays.
    difficulty : 0 (oracle AUC about 0.99) .. 1 (about 0.70); 0.5 gives about 0.865.
    label_noise : probability that a patient's observed label is flipped.
    prevalence : fraction of truly malignant patients (exact count, at least one per class).
    views : view names; each patient's views share the lesion.
    workers : FFT threads (all cores if None); results do not depend on it.
    progress : show a progress bar.

    Returns
    -------
    images : (N, size, size) float32 in [0, 1], N = n_patients * len(views).
    manifest : DataFrame, one row per ROI, in image order: ``roi_id``,
        ``patient_id``, ``label`` (observed), ``label_name``, ``image_path``
        (``images/<roi_id>.png``, relative to the folder
        :func:`write_synthetic` makes), ``source='synthetic'``, ``view``,
        ``laterality``, ``lesion_type`` ('mass'/'calcification'),
        ``image_height``, ``image_width``; latent truth ``latent_evidence``
        (z), ``oracle_prob`` (P(label=1 | z) including label noise),
        ``true_label`` (before label noise), ``malignancy_score``
        (sigmoid(z), what the shapes show), ``lesion_radius_px``,
        ``contrast``, ``mass_style``, ``aspect``, ``orientation``,
        ``density``, ``lesion_row``, ``lesion_col``, ``irregularity``,
        ``n_spicules``, ``margin_px``, ``n_calcs``, ``patient_index``,
        ``view_index``. No ``center_row``/``radius`` columns: each image is
        the ROI.

    Notes
    -----
    Radius, contrast, type, density, texture and noise have the same
    distribution in both classes; the integrated lesion brightness depends
    on radius and contrast only.

    Examples
    --------
    >>> x, m = generate(n_patients=2, size=64, seed=0)
    >>> x.shape, x.dtype, float(x.min()) >= 0.0, float(x.max()) <= 1.0
    ((4, 64, 64), dtype('float32'), True, True)
    >>> sorted(m["label_name"].unique())
    ['benign', 'malignant']
    """
    manifest = sample_manifest(n_patients, size, seed, difficulty, label_noise, prevalence, views)
    images = render(manifest, size, seed, workers=workers, progress=progress)
    from .manifest import validate_manifest
    validate_manifest(manifest, check_files=False, require_both_classes=False)
    return images, manifest


# ----------------------------------------------------------------------------- files
def _png16(path: Path, img: np.ndarray) -> None:
    from PIL import Image
    arr = np.round(np.clip(img, 0.0, 1.0) * 65535.0).astype(np.uint16)
    Image.fromarray(arr).save(path, format="PNG", compress_level=1)


def write_synthetic(out_dir, n_patients: int = 300, size: int = 320, seed: int = 0, difficulty: float = 0.5,
                    label_noise: float = 0.0, prevalence: float = 0.5, views=DEFAULT_VIEWS, *,
                    overwrite: bool = False, workers: int | None = None, progress: bool = False) -> Path:
    """Generate a set and write it as a folder, atomically.

    Layout::

        OUT/images/<roi_id>.png   16-bit grey PNG per ROI
        OUT/manifest.parquet      the manifest (image_path relative to OUT)
        OUT/synth.json            parameters, counts, oracle AUC, version

    The folder is built beside ``out_dir`` under a temporary name and renamed
    into place, so ``out_dir`` is either absent/old or complete.

    Parameters
    ----------
    out_dir : folder to create; must not exist or be empty unless ``overwrite``.
    overwrite : replace an existing non-empty ``out_dir``.
    Others : as :func:`generate`.

    Returns
    -------
    Path of ``out_dir``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = write_synthetic(pathlib.Path(tempfile.mkdtemp()) / "s", n_patients=2, size=64)
    >>> sorted(p.name for p in d.iterdir())
    ['images', 'manifest.parquet', 'synth.json']
    """
    from .io import write_json
    from .manifest import save_manifest, validate_manifest
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder; expected a new folder for the synthetic set", path=out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError("folder exists and is not empty; choose a new folder or pass overwrite "
                         "(--overwrite) to replace it", path=out)
    images, manifest = generate(n_patients, size, seed, difficulty, label_noise, prevalence, views,
                                workers=workers, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        for img, rel in zip(images, manifest["image_path"]):
            _png16(tmp / rel, img)
        validate_manifest(manifest, root=tmp, check_files=True)
        save_manifest(manifest, tmp / "manifest.parquet")
        oauc = oracle_auc(manifest)
        write_json(tmp / "synth.json", {
            "generator": "mammodecomp.synth", "synth_version": SYNTH_VERSION,
            "params": {"n_patients": int(n_patients), "size": int(size), "seed": int(seed),
                       "difficulty": float(difficulty), "label_noise": float(label_noise),
                       "prevalence": float(prevalence), "views": list(manifest["view"].unique())},
            "n_rois": int(len(manifest)),
            "n_malignant_patients": int(manifest.groupby("patient_id")["label"].first().sum()),
            "separation_d": separation(difficulty),
            "oracle_auc": oauc,
            "oracle_auc_expected_noise_free": expected_oracle_auc(difficulty),
            "png": "16-bit grey, value / 65535 = intensity in [0, 1]",
        })
        os.chmod(tmp, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
