"""mini-MIAS: ``Info.txt`` + 322 films (``mdbNNN.pgm`` as distributed, or ``.png``).

Layout::

    ROOT/Info.txt
    ROOT/mdb001.pgm  (or mdb001.png)  ... mdb322

``Info.txt`` data rows are the lines that start with ``mdb`` + 3 digits:
``REFNUM BG CLASS [SEVERITY [X Y RADIUS]]`` (``*NOTE 3*`` in place of the
coordinates for widely spread calcifications). Everything else (the header
text) is ignored. A malformed data row raises
:class:`~mammodecomp.errors.InputError` naming ``Info.txt`` and the line.

Facts used (Info.txt notes and the MIAS paper):

- Coordinates have their origin at the bottom-left corner:
  ``center_row = H - Y`` (``1024 - Y``), ``center_col = X``.
- Films come in pairs of one patient: ``patient = (N + 1) // 2`` for
  ``mdbN``; Info.txt note 1 says even numbers are left breasts and odd
  numbers right ones. The films agree: odd films have the chest wall on the
  image's right edge, even ones on the left, as a right/left MLO displayed
  back to back. ``laterality`` is therefore ``R`` for odd N, ``L`` for even N.
- All films are MLO, 1024 x 1024, 8 bit, 200 micron pixels
  (``pixel_spacing_mm = 0.2``).

Tasks
-----
``benign-malignant``
    one ROI per located abnormal row (X, Y, RADIUS given); rows without
    coordinates and normal films are dropped (counted in ``attrs["dropped"]``).
``normal-abnormal``
    located abnormal ROIs (label 1) against tissue patches drawn inside the
    breast of the normal films (label 0); see :func:`normal_patches`.
``film-benign-malignant``
    one row per abnormal film, no coordinates (the whole film is the ROI);
    label 1 if any row of the film is malignant. Abnormal rows without
    coordinates count here.
``film-normal-abnormal``
    one row per film, label 1 if the film has any abnormality.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from . import SOURCES
from ._common import check_task, image_shape, require_dir

TASKS = ("benign-malignant", "normal-abnormal", "film-benign-malignant", "film-normal-abnormal")
PIXEL_SPACING_MM = 0.2
BACKGROUNDS = {"F": "fatty", "G": "fatty-glandular", "D": "dense-glandular"}
CLASSES = {"CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM", "NORM"}
_DATA_ROW = re.compile(r"^mdb\d{3}")
_REFNUM = re.compile(r"^mdb(\d{3})$")


def parse_info(path: str | Path) -> pd.DataFrame:
    """Parse mini-MIAS ``Info.txt`` into one row per data line.

    Returns columns ``film_id, film_number, line, background_tissue,
    lesion_type, severity, x, y, radius`` (x, y, radius NaN where absent;
    severity ``""`` for normal films).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "Info.txt"
    >>> _ = p.write_text("header text\\nmdb001 G CIRC B 535 425 197\\nmdb003 D NORM \\n"
    ...                  "mdb216 D CALC M *NOTE 3*\\n")
    >>> parse_info(p)[["film_id", "severity", "y", "line"]].values.tolist()
    [['mdb001', 'B', 425.0, 2], ['mdb003', '', nan, 3], ['mdb216', 'M', nan, 4]]
    """
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        raise InputError("file not found; expected mini-MIAS Info.txt", path=path) from None
    rows = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not _DATA_ROW.match(line):
            continue
        rows.append(_parse_row(line, lineno, path))
    if not rows:
        raise InputError("no data rows (lines starting with mdb + 3 digits); is this mini-MIAS Info.txt?",
                         path=path)
    return pd.DataFrame(rows)


def _parse_row(line: str, lineno: int, path: Path) -> dict:
    def bad(why: str) -> InputError:
        return InputError(f"line {lineno}: malformed data row '{line}': {why}; expected "
                          "'mdbNNN BG CLASS [SEVERITY [X Y RADIUS]]'", path=path)

    tok = line.split()
    m = _REFNUM.match(tok[0])
    if m is None:
        raise bad(f"reference '{tok[0]}' is not mdb + 3 digits")
    if len(tok) < 3:
        raise bad("too few fields")
    bg, cls = tok[1].upper(), tok[2].upper()
    if bg not in BACKGROUNDS:
        raise bad(f"background '{tok[1]}' is not one of F, G, D")
    if cls not in CLASSES:
        raise bad(f"class '{tok[2]}' is not one of {', '.join(sorted(CLASSES))}")
    rest = tok[3:]
    sev = ""
    x = y = r = np.nan
    if cls == "NORM":
        if rest:
            raise bad("a NORM row has no severity or coordinates")
    else:
        if not rest:
            raise bad(f"abnormal class {cls} without severity B or M")
        sev = rest[0].upper()
        if sev not in ("B", "M"):
            raise bad(f"severity '{rest[0]}' is not B or M")
        coords = rest[1:]
        if coords and coords[0].startswith("*"):
            coords = []  # '*NOTE 3*': calcifications spread over the film, no coordinates
        if coords:
            if len(coords) != 3:
                raise bad(f"{len(coords)} coordinate field(s); expected X Y RADIUS")
            try:
                x, y, r = (float(int(v)) for v in coords)
            except ValueError:
                raise bad(f"coordinates {coords} are not integers") from None
            if r <= 0 or x < 0 or y < 0:
                raise bad("X, Y must be >= 0 and RADIUS > 0")
    return {"film_id": tok[0], "film_number": int(m.group(1)), "line": lineno,
            "background_tissue": bg, "lesion_type": cls, "severity": sev, "x": x, "y": y, "radius": r}


def _film_path(root: Path, film: str) -> Path | None:
    for ext in (".pgm", ".png", ".PGM", ".PNG"):
        p = root / f"{film}{ext}"
        if p.is_file():
            return p
    return None


@SOURCES.register("mias")
def mias_source(root: str | Path, task: str = "benign-malignant", *, seed: int = 0,
                patches_per_film: int = 1, min_side: int = 64, tissue_threshold: float = 0.1) -> pd.DataFrame:
    """Manifest for mini-MIAS (see the module docstring for layout and tasks).

    Parameters
    ----------
    root : folder with ``Info.txt`` and the films.
    task : ``benign-malignant`` (default), ``normal-abnormal``,
        ``film-benign-malignant`` or ``film-normal-abnormal``.
    seed, patches_per_film, min_side, tissue_threshold : normal tissue
        patches (task ``normal-abnormal``), see :func:`normal_patches`.
    """
    check_task("mias", task, TASKS)
    root = require_dir(root, "mini-MIAS")
    info_path = root / "Info.txt"
    if not info_path.is_file():
        raise InputError("Info.txt not found; expected the mini-MIAS folder with Info.txt and mdbNNN.pgm/.png "
                         "films", path=root)
    info = parse_info(info_path)
    films = info.drop_duplicates("film_id")[["film_id", "film_number", "line"]].reset_index(drop=True)
    paths, shapes = {}, {}
    for film, line in zip(films["film_id"], films["line"]):
        p = _film_path(root, film)
        if p is None:
            raise InputError(f"line {line}: film {film} has no image {film}.pgm or {film}.png", path=info_path)
        paths[film] = p
        shapes[film] = image_shape(p)
        if np.isnan(shapes[film][0]):
            raise InputError(f"line {line}: film {film} cannot be read; expected a PGM or PNG image", path=p)
    info["image_path"] = info["film_id"].map(lambda f: str(paths[f]))
    info["image_height"] = info["film_id"].map(lambda f: shapes[f][0])
    info["image_width"] = info["film_id"].map(lambda f: shapes[f][1])
    info["patient_id"] = info["film_number"].map(lambda n: f"mias_p{(n + 1) // 2:03d}")
    info["laterality"] = info["film_number"].map(lambda n: "R" if n % 2 else "L")
    info["roi_id"] = info["film_id"] + "_" + (info.groupby("film_id").cumcount() + 1).astype(str)
    info["center_row"] = info["image_height"] - info["y"]
    info["center_col"] = info["x"]
    abnormal = info["severity"] != ""
    located = abnormal & info["radius"].notna()
    dataset = {"films": int(len(films)), "patients": int(info["patient_id"].nunique()),
               "data_rows": int(len(info)), "normal_films": int((~abnormal).sum()),
               "abnormal_rows": int(abnormal.sum()), "located_rois": int(located.sum()),
               "abnormal_rows_without_coordinates": int((abnormal & ~located).sum())}
    common = {"source": "mias", "view": "MLO", "pixel_spacing_mm": PIXEL_SPACING_MM}
    keep = ["roi_id", "patient_id", "label", "label_name", "image_path", "source", "view", "laterality",
            "lesion_type", "center_row", "center_col", "radius", "image_height", "image_width",
            "pixel_spacing_mm", "film_id", "background_tissue", "severity", "line"]

    if task in ("benign-malignant", "normal-abnormal"):
        rois = info[located].assign(**common).copy()
        if task == "benign-malignant":
            rois["label"] = (rois["severity"] == "M").astype(int)
            rois["label_name"] = np.where(rois["label"] == 1, "malignant", "benign")
            dropped = {"normal films": dataset["normal_films"],
                       "abnormal rows without coordinates": dataset["abnormal_rows_without_coordinates"]}
        else:
            rois["label"] = 1
            rois["label_name"] = "abnormal"
            normal = info[~abnormal].assign(**common)
            patches, no_room = normal_patches(normal, rois["radius"].to_numpy(), seed=seed,
                                              per_film=patches_per_film, min_side=min_side,
                                              tissue_threshold=tissue_threshold)
            rois = pd.concat([rois, patches], ignore_index=True)
            dropped = {"abnormal rows without coordinates": dataset["abnormal_rows_without_coordinates"],
                       "normal films without room for a patch": no_room}
        df = rois[keep].reset_index(drop=True)
    else:
        g = info.groupby("film_id", sort=True)
        film = g.agg(patient_id=("patient_id", "first"), image_path=("image_path", "first"),
                     laterality=("laterality", "first"), image_height=("image_height", "first"),
                     image_width=("image_width", "first"), background_tissue=("background_tissue", "first"),
                     lesion_type=("lesion_type", lambda s: "+".join(sorted(set(s)))),
                     severity=("severity", lambda s: "".join(sorted(set(s)))),
                     line=("line", "first")).reset_index()
        film = film.assign(**common)
        film["roi_id"] = film["film_id"]
        if task == "film-benign-malignant":
            dropped = {"normal films": int((film["severity"] == "").sum())}
            film = film[film["severity"] != ""].copy()
            film["label"] = film["severity"].str.contains("M").astype(int)
            film["label_name"] = np.where(film["label"] == 1, "malignant", "benign")
        else:
            dropped = {}
            film["label"] = (film["severity"] != "").astype(int)
            film["label_name"] = np.where(film["label"] == 1, "abnormal", "normal")
        df = film[[c for c in keep if c in film.columns]].reset_index(drop=True)
    df.attrs["dataset"] = dataset
    df.attrs["dropped"] = dropped
    return df


def breast_mask(image: np.ndarray, *, factor: int = 4, tissue_threshold: float = 0.1) -> np.ndarray:
    """Breast region of a film at 1/*factor* resolution (bool array).

    Pixels above *tissue_threshold* (after block-averaging by *factor*),
    largest connected component, holes filled: film labels and scanner marks
    that float in the background are left out.

    Examples
    --------
    >>> img = np.zeros((64, 64), np.float32); img[8:40, 0:30] = 0.6; img[50:52, 50:52] = 1.0
    >>> m = breast_mask(img, factor=2)
    >>> m.shape, int(m.sum()), bool(m[25, 26])
    ((32, 32), 240, False)
    """
    from scipy import ndimage as ndi

    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    small = image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    mask = small > tissue_threshold
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return ndi.binary_fill_holes(lab == int(np.argmax(sizes)))


def normal_patches(normal: pd.DataFrame, radii: np.ndarray, *, seed: int = 0, per_film: int = 1,
                   min_side: int = 64, tissue_threshold: float = 0.1, factor: int = 4,
                   max_draws: int = 50) -> tuple[pd.DataFrame, int]:
    """Draw tissue patches inside the breast of normal films.

    For each film, a radius is drawn from *radii* (the located lesions' radii,
    so patches and lesions share one size distribution) and a centre is drawn
    uniformly among the positions where the whole square crop that
    :func:`mammodecomp.roi.extract_roi` takes in ``context`` mode (side
    ``max(2 r, min_side)``) lies inside the breast mask: it touches neither
    the film border nor the background. The generator is seeded by
    ``(seed, film number)``, so a film's patches do not depend on the other
    films. A radius with no room is redrawn (at most *max_draws* times);
    films where none fits are skipped and counted. Several patches of one
    film do not overlap.

    Returns
    -------
    (patches DataFrame with label 0 ``normal``, number of films skipped)

    Notes
    -----
    The breast mask includes the pectoral muscle, so a patch can fall on it.
    """
    from scipy import ndimage as ndi

    from ..io import read_image

    radii = np.asarray(radii, float)
    if radii.size == 0:
        raise InputError("no located lesions to take the patch size distribution from")
    out, skipped = [], 0
    for _, film in normal.iterrows():
        img = read_image(film["image_path"])
        mask = breast_mask(img, factor=factor, tissue_threshold=tissue_threshold)
        mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = False  # the film border is outside
        dist = ndi.distance_transform_edt(mask) * factor  # in full-resolution pixels
        rng = np.random.default_rng([int(seed), int(film["film_number"])])
        chosen: list[tuple[float, float, float]] = []
        for k in range(per_film):
            for _ in range(max_draws):
                r = float(rng.choice(radii))
                half = max(r, min_side / 2.0)
                need = half * np.sqrt(2.0) + factor  # the crop's corners stay inside the mask
                ok = dist >= need
                if chosen:
                    ii, jj = np.indices(dist.shape)
                    for (cr, cc, ch) in chosen:
                        gap = half + ch  # Chebyshev distance between centres of two squares
                        ok &= (np.abs(ii * factor + factor / 2 - cr) >= gap) | \
                              (np.abs(jj * factor + factor / 2 - cc) >= gap)
                idx = np.flatnonzero(ok)
                if idx.size:
                    i, j = np.unravel_index(idx[rng.integers(idx.size)], dist.shape)
                    cr, cc = float(i * factor + factor // 2), float(j * factor + factor // 2)
                    chosen.append((cr, cc, half))
                    row = film.to_dict()
                    row.update(roi_id=f"{film['film_id']}_n{k + 1}", label=0, label_name="normal",
                               lesion_type="NORM", center_row=cr, center_col=cc, radius=r)
                    out.append(row)
                    break
            else:
                if k == 0:
                    skipped += 1
                break
    return pd.DataFrame(out), skipped
