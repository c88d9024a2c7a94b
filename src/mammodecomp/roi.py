"""ROI extraction: manifest rows -> (N, H, W) float32 ROIs in [0, 1] + per-ROI metadata.

Two deterministic crop modes, both centred on the lesion:

``context``
    side = ``max(context * radius, min_side)`` pixels, where radius is the
    circle's radius or half the longer side of the box (``context=2`` gives
    the spec's ``max(2 x radius or bbox side, 64 px)``), resized to
    ``size x size``: every lesion fills the ROI alike, so lesion size is
    normalised away.
``fixed``
    a fixed physical field of view: side = ``fov_mm / pixel_spacing_mm``
    pixels (``fov_mm=64`` at 0.2 mm -> 320 px), so lesion size stays
    visible in the ROI.

Windows reaching past the film are padded (``reflect`` or ``constant`` 0);
intensities stay those of :func:`mammodecomp.io.read_image` (float32 in
[0, 1] scaled by the source bit depth; no per-ROI normalisation). Resizing
uses :func:`skimage.transform.resize` (bilinear, anti-aliased when shrinking).
Rows without coordinates: the whole image resized to ``size x size``.

Per ROI metadata (possible shortcut features, used by the diagnosis):
``roi_id, crop_side_px, scale`` (output px per source px),
``background_fraction`` (ROI pixels below ``background_threshold``: air),
``border_fraction`` (share of the crop window outside the film, i.e.
padded), ``mean_intensity``, ``pixel_spacing_mm`` (source) and
``roi_spacing_mm`` (source spacing / scale).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .errors import InputError
from .io import read_image
from .progress import progress as _progress

MODES = ("context", "fixed")
PADS = ("reflect", "constant")
META_COLUMNS = ["roi_id", "crop_side_px", "scale", "background_fraction", "border_fraction",
                "mean_intensity", "pixel_spacing_mm", "roi_spacing_mm"]


def _num(row: Mapping, key: str) -> float:
    v = row.get(key, np.nan) if hasattr(row, "get") else np.nan
    try:
        v = float(v)
    except (TypeError, ValueError):
        return np.nan
    return v


def lesion_geometry(row: Mapping) -> tuple[float, float, float] | None:
    """(centre row, centre col, radius) of a manifest row; None without coordinates.

    A box gives its centre and half its longer side.

    >>> lesion_geometry({"center_row": 10, "center_col": 20, "radius": 5})
    (10.0, 20.0, 5.0)
    >>> lesion_geometry({"bbox_row0": 0, "bbox_col0": 10, "bbox_row1": 20, "bbox_col1": 50})
    (10.0, 30.0, 20.0)
    >>> lesion_geometry({"radius": float("nan")}) is None
    True
    """
    r, c, rad = _num(row, "center_row"), _num(row, "center_col"), _num(row, "radius")
    if not (np.isnan(r) or np.isnan(c) or np.isnan(rad)):
        return r, c, rad
    b = [_num(row, k) for k in ("bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1")]
    if not any(np.isnan(b)):
        return (b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, max(b[2] - b[0], b[3] - b[1]) / 2.0
    return None


def crop_side(row: Mapping, mode: str = "context", *, fov_mm: float | None = None,
              pixel_spacing_mm: float | None = None, context: float = 2.0, min_side: int = 64) -> int:
    """Side in source pixels of the square crop window of one row.

    >>> crop_side({"center_row": 50, "center_col": 50, "radius": 10})
    64
    >>> crop_side({"center_row": 500, "center_col": 500, "radius": 80})
    160
    >>> crop_side({"center_row": 500, "center_col": 500, "radius": 8, "pixel_spacing_mm": 0.2},
    ...           "fixed", fov_mm=64)
    320
    """
    if mode not in MODES:
        raise InputError(f"crop mode '{mode}' unknown; expected one of {MODES}")
    geo = lesion_geometry(row)
    if mode == "context":
        rad = geo[2] if geo is not None else 0.0
        return int(max(round(context * rad), int(min_side)))
    spacing = pixel_spacing_mm if pixel_spacing_mm is not None else _num(row, "pixel_spacing_mm")
    if spacing is None or not np.isfinite(spacing) or spacing <= 0:
        raise InputError(f"fixed field of view needs a pixel spacing; ROI '{row.get('roi_id', '?')}' has none "
                         "(add a pixel_spacing_mm column or pass pixel_spacing_mm=)", field="pixel_spacing_mm")
    fov = 64.0 if fov_mm is None else float(fov_mm)
    if fov <= 0:
        raise InputError(f"fov_mm={fov_mm} must be > 0")
    return int(max(round(fov / spacing), 1))


def _window(image: np.ndarray, r0: int, c0: int, side: int, pad: str) -> tuple[np.ndarray, float]:
    """The side x side window at (r0, c0), padded where it leaves the image."""
    H, W = image.shape
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r0 + side, H), min(c0 + side, W)
    if rr1 <= rr0 or cc1 <= cc0:
        raise InputError(f"crop window at ({r0}, {c0}) of side {side} lies outside the {H}x{W} image")
    crop = image[rr0:rr1, cc0:cc1]
    before_r, after_r = rr0 - r0, r0 + side - rr1
    before_c, after_c = cc0 - c0, c0 + side - cc1
    inside = (rr1 - rr0) * (cc1 - cc0)
    border = 1.0 - inside / float(side * side)
    if before_r or after_r or before_c or after_c:
        widths = ((before_r, after_r), (before_c, after_c))
        if pad == "reflect":
            # mirror about the edge pixel; the centre lies inside the film, so the part of the
            # window inside it is at least as wide as the padding in all but tiny films
            crop = np.pad(crop, widths, mode="reflect" if min(crop.shape) > 1 else "edge")
        else:
            crop = np.pad(crop, widths, mode="constant", constant_values=0.0)
    return crop, border


def _resize(crop: np.ndarray, size: int) -> np.ndarray:
    from skimage.transform import resize

    if crop.shape == (size, size):
        return crop.astype(np.float32, copy=True)
    shrink = crop.shape[0] > size or crop.shape[1] > size
    out = resize(crop, (size, size), order=1, mode="reflect", anti_aliasing=shrink, preserve_range=True)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def extract_roi(image: np.ndarray, row: Mapping, size: int = 320, mode: str = "context", *,
                fov_mm: float | None = None, pixel_spacing_mm: float | None = None, pad: str = "reflect",
                context: float = 2.0, min_side: int = 64, background_threshold: float = 0.05,
                return_meta: bool = False):
    """Crop one ROI from a film.

    Parameters
    ----------
    image : (H, W) float image in [0, 1] (as :func:`mammodecomp.io.read_image` gives).
    row : a manifest row (mapping with ``center_row, center_col, radius`` or
        ``bbox_*``; none of them means the whole image).
    size : output side in pixels.
    mode : ``context`` or ``fixed`` (see the module docstring).
    fov_mm : field of view of ``fixed`` mode (64 mm by default).
    pixel_spacing_mm : overrides the row's ``pixel_spacing_mm``.
    pad : ``reflect`` or ``constant`` (zeros) where the window leaves the film.
    context, min_side : ``context`` mode side = ``max(context * radius, min_side)``.
    background_threshold : intensity under which a pixel counts as background.
    return_meta : also return the per-ROI metadata dict.

    Returns
    -------
    (size, size) float32 array in [0, 1] (and the metadata dict).

    Examples
    --------
    >>> img = np.zeros((100, 100), np.float32); img[40:60, 40:60] = 1.0
    >>> roi, meta = extract_roi(img, {"center_row": 50, "center_col": 50, "radius": 10}, size=32,
    ...                         return_meta=True)
    >>> roi.shape, roi.dtype, meta["crop_side_px"], meta["scale"]
    ((32, 32), dtype('float32'), 64, 0.5)
    >>> round(meta["border_fraction"], 3), round(meta["mean_intensity"], 2)
    (0.0, 0.1)
    """
    if pad not in PADS:
        raise InputError(f"pad '{pad}' unknown; expected one of {PADS}")
    if mode not in MODES:
        raise InputError(f"crop mode '{mode}' unknown; expected one of {MODES}")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2 or min(image.shape) == 0:
        raise InputError(f"expected a 2-D image, got shape {image.shape}")
    H, W = image.shape
    spacing = pixel_spacing_mm if pixel_spacing_mm is not None else _num(row, "pixel_spacing_mm")
    geo = lesion_geometry(row)
    if geo is None:
        roi = _resize(image, size)
        side, border = max(H, W), 0.0
    else:
        cr, cc, _ = geo
        if not (0 <= cr < H and 0 <= cc < W):
            raise InputError(f"ROI '{row.get('roi_id', '?')}': centre (row {cr:g}, col {cc:g}) is outside the "
                             f"{H}x{W} image")
        side = crop_side(row, mode, fov_mm=fov_mm, pixel_spacing_mm=spacing, context=context,
                         min_side=min_side)
        r0 = int(np.floor(cr - side / 2.0 + 0.5))
        c0 = int(np.floor(cc - side / 2.0 + 0.5))
        crop, border = _window(image, r0, c0, side, pad)
        roi = _resize(crop, size)
    if not return_meta:
        return roi
    scale = size / float(side)
    meta = {"roi_id": row.get("roi_id") if hasattr(row, "get") else None, "crop_side_px": int(side),
            "scale": scale, "background_fraction": float(np.mean(roi < background_threshold)),
            "border_fraction": float(border), "mean_intensity": float(roi.mean()),
            "pixel_spacing_mm": float(spacing) if spacing is not None and np.isfinite(spacing) else np.nan}
    meta["roi_spacing_mm"] = meta["pixel_spacing_mm"] / scale
    return roi, meta


def extract_rois(manifest: pd.DataFrame, size: int = 320, mode: str = "context", fov_mm: float | None = None,
                 pad: str = "reflect", progress: bool = True, *, context: float = 2.0, min_side: int = 64,
                 background_threshold: float = 0.05, pixel_spacing_mm: float | None = None,
                 max_pixels: int | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Extract every ROI of a manifest, reading each film once.

    Parameters
    ----------
    manifest : a validated manifest (absolute ``image_path``).
    size, mode, fov_mm, pad, context, min_side, background_threshold,
    pixel_spacing_mm : see :func:`extract_roi`.
    progress : show a progress bar (hidden by ``--quiet``).
    max_pixels : passed to :func:`mammodecomp.io.read_image`.

    Returns
    -------
    rois : (N, size, size) float32 in [0, 1], in manifest row order.
    meta : DataFrame with :data:`META_COLUMNS`, one row per ROI, same order.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> Image.fromarray(np.full((80, 60), 128, np.uint8)).save(d / "f.png")
    >>> df = pd.DataFrame({"roi_id": ["a", "b"], "image_path": [str(d / "f.png")] * 2,
    ...                    "center_row": [40.0, np.nan], "center_col": [30.0, np.nan],
    ...                    "radius": [5.0, np.nan]})
    >>> rois, meta = extract_rois(df, size=16, progress=False)
    >>> rois.shape, meta["crop_side_px"].tolist(), round(float(rois.max()), 3)
    ((2, 16, 16), [64, 80], 0.502)
    """
    if mode not in MODES:
        raise InputError(f"crop mode '{mode}' unknown; expected one of {MODES}")
    if pad not in PADS:
        raise InputError(f"pad '{pad}' unknown; expected one of {PADS}")
    if "image_path" not in manifest.columns:
        raise InputError("manifest has no image_path column")
    n = len(manifest)
    rois = np.empty((n, size, size), np.float32)
    metas: list[dict | None] = [None] * n
    records = manifest.reset_index(drop=True).to_dict("records")
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(str(r["image_path"]), []).append(i)
    kw = {} if max_pixels is None else {"max_pixels": max_pixels}
    for path, idx in _progress(groups.items(), total=len(groups), desc="ROIs",
                               disable=None if progress else True):
        image = read_image(path, **kw)
        for i in idx:
            rois[i], metas[i] = extract_roi(image, records[i], size, mode, fov_mm=fov_mm,
                                            pixel_spacing_mm=pixel_spacing_mm, pad=pad, context=context,
                                            min_side=min_side, background_threshold=background_threshold,
                                            return_meta=True)
    meta = pd.DataFrame(metas, columns=META_COLUMNS)
    return rois, meta
