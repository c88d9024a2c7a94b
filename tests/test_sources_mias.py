"""mini-MIAS source on an Info.txt excerpt and small films written in the real layout."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mammodecomp.errors import InputError
from mammodecomp.roi import extract_rois
from mammodecomp.sources import SOURCES, build_manifest, summarize
from mammodecomp.sources.mias import parse_info

HEADER = """              MAMMOGRAPHIC IMAGE ANALYSIS SOCIETY
                  MiniMammographic Database

1st column: MIAS database reference number.
mdb reference numbers are listed below; this line is prose, not data.
=================================================================

"""
ROWS = """mdb001 G CIRC B 535 425 197
mdb002 G CIRC B 522 280 69
mdb003 D NORM 
mdb004 D NORM 
mdb005 F CIRC B 477 133 30
mdb005 F CIRC B 500 168 26
mdb006 F NORM 
mdb059 F CIRC B
mdb144 F MISC B 233 994 29
mdb144 F MISC M 313 540 27
mdb216 D CALC M *NOTE 3* 
"""
FILMS = [1, 2, 3, 4, 5, 6, 59, 144, 216]
N = 1024


def breast(n: int) -> np.ndarray:
    """Boolean breast region of the fake film: a half ellipse on the chest-wall side."""
    rr, cc = np.mgrid[0:N, 0:N]
    wall = N - 1 if n % 2 else 0  # odd = right breast, chest wall on the image's right edge
    return ((rr - 512) / 450.0) ** 2 + ((cc - wall) / 600.0) ** 2 <= 1.0


def write_mias(root, rows=ROWS, films=FILMS, ext=".png"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "Info.txt").write_text(HEADER + rows)
    for n in films:
        img = np.where(breast(n), 150, 2).astype(np.uint8)
        img[::7, ::5] += 20 * breast(n)[::7, ::5].astype(np.uint8)  # some texture
        Image.fromarray(img).save(root / f"mdb{n:03d}{'.pgm' if n == 3 else ext}")
    return root


@pytest.fixture(scope="module")
def mias_root(tmp_path_factory):
    return write_mias(tmp_path_factory.mktemp("mias"))


def test_registered():
    assert "mias" in SOURCES


def test_parse_info_rows_and_lines(mias_root):
    info = parse_info(mias_root / "Info.txt")
    assert len(info) == 11 and info["film_id"].nunique() == 9
    first_line = HEADER.count("\n") + 1
    assert info["line"].tolist() == list(range(first_line, first_line + 11))
    assert info.loc[info.film_id == "mdb216", "severity"].item() == "M"
    assert np.isnan(info.loc[info.film_id == "mdb216", "x"].item())


def test_benign_malignant_manifest(mias_root):
    df = build_manifest("mias", mias_root)
    s = summarize(df)
    assert s["rois"] == s["located_rois"] == 6
    assert s["classes"] == {"benign": 5, "malignant": 1}
    assert s["dataset"]["films"] == 9 and s["dataset"]["patients"] == 6
    assert s["patients"] == s["patients_with_rois"] == 3  # mdb001/002 -> 1, mdb005 -> 3, mdb144 -> 72
    assert s["dropped"] == {"normal films": 3, "abnormal rows without coordinates": 2}
    r = df.set_index("roi_id")
    # origin bottom-left: row = 1024 - Y
    assert (r.loc["mdb001_1", "center_row"], r.loc["mdb001_1", "center_col"]) == (1024 - 425, 535)
    assert r.loc["mdb005_2", ["center_row", "radius"]].tolist() == [1024 - 168, 26]
    # patient = (N + 1) // 2; laterality from the film number parity
    assert r.loc[["mdb001_1", "mdb002_1", "mdb144_2"], "patient_id"].tolist() == ["mias_p001", "mias_p001",
                                                                                  "mias_p072"]
    assert r.loc[["mdb001_1", "mdb002_1"], "laterality"].tolist() == ["R", "L"]
    assert r.loc["mdb144_2", "label_name"] == "malignant" and r.loc["mdb144_1", "label"] == 0
    assert set(df.view) == {"MLO"} and set(df.pixel_spacing_mm) == {0.2}
    assert set(df.image_height) == {1024} and set(df.image_width) == {1024}


def test_pgm_films_read(mias_root):
    df = build_manifest("mias", mias_root, task="film-normal-abnormal")
    assert df.set_index("roi_id").loc["mdb003", "image_path"].endswith("mdb003.pgm")
    assert summarize(df)["classes"] == {"abnormal": 6, "normal": 3}


def test_film_benign_malignant(mias_root):
    df = build_manifest("mias", mias_root, task="film-benign-malignant").set_index("roi_id")
    # mdb144 has a benign and a malignant row: malignant film; mdb059 and mdb216 kept (no coordinates needed)
    assert df["label"].to_dict() == {"mdb001": 0, "mdb002": 0, "mdb005": 0, "mdb059": 0, "mdb144": 1,
                                     "mdb216": 1}
    assert "radius" not in df.columns and "bbox_row0" not in df.columns  # the whole film is the ROI


def test_normal_abnormal_patches(mias_root):
    df = build_manifest("mias", mias_root, task="normal-abnormal", seed=1)
    assert df.equals(build_manifest("mias", mias_root, task="normal-abnormal", seed=1))
    other = build_manifest("mias", mias_root, task="normal-abnormal", seed=2)
    normals = df[df.label == 0]
    assert normals["roi_id"].tolist() == ["mdb003_n1", "mdb004_n1", "mdb006_n1"]
    assert not normals[["center_row", "center_col"]].equals(other[other.label == 0][["center_row", "center_col"]])
    assert set(normals.radius) <= set(df.loc[df.label == 1, "radius"])
    for _, r in normals.iterrows():
        n = int(r.film_id[3:])
        half = int(max(r.radius, 32))
        r0, c0 = int(r.center_row) - half, int(r.center_col) - half
        assert r0 >= 0 and c0 >= 0 and r0 + 2 * half <= N and c0 + 2 * half <= N
        assert breast(n)[r0:r0 + 2 * half, c0:c0 + 2 * half].all()  # all tissue, no background
    _, meta = extract_rois(normals, size=32, progress=False)
    assert (meta.background_fraction == 0).all() and (meta.border_fraction == 0).all()


def test_several_patches_do_not_overlap(mias_root):
    df = build_manifest("mias", mias_root, task="normal-abnormal", patches_per_film=3, seed=0)
    for film, g in df[df.label == 0].groupby("film_id"):
        assert len(g) == 3
        pts = g[["center_row", "center_col", "radius"]].to_numpy()
        for i in range(3):
            for j in range(i + 1, 3):
                gap = max(pts[i, 2], 32) + max(pts[j, 2], 32)
                assert max(abs(pts[i, 0] - pts[j, 0]), abs(pts[i, 1] - pts[j, 1])) >= gap


BAD_ROWS = [
    ("mdb007 G CIRC B 535 425", "coordinate field"),
    ("mdb007 X NORM", "background 'X'"),
    ("mdb007 G BLOB B 1 2 3", "class 'BLOB'"),
    ("mdb007 G CIRC Q 1 2 3", "severity 'Q'"),
    ("mdb007 G CIRC B a 2 3", "not integers"),
    ("mdb007 G NORM B", "NORM row"),
    ("mdb007 G CIRC", "without severity"),
    ("mdb007 G", "too few fields"),
    ("mdb0071 G NORM", "not mdb + 3 digits"),
    ("mdb007 G CIRC B 5 5 0", "RADIUS > 0"),
]


@pytest.mark.parametrize("bad,why", BAD_ROWS)
def test_malformed_row_names_file_and_line(tmp_path, bad, why):
    root = write_mias(tmp_path / "m", rows=ROWS + bad + "\n", films=[])
    with pytest.raises(InputError) as e:
        build_manifest("mias", root)
    msg = str(e.value)
    line = HEADER.count("\n") + 12
    assert msg.startswith(f"{root / 'Info.txt'}: line {line}: malformed data row") and why in msg
    assert "\n" not in msg


def test_missing_film_names_line(tmp_path):
    root = write_mias(tmp_path / "m", films=[n for n in FILMS if n != 5])
    with pytest.raises(InputError, match=r"Info.txt: line \d+: film mdb005 has no image mdb005.pgm or mdb005.png"):
        build_manifest("mias", root)


def test_unreadable_film_named(tmp_path):
    root = write_mias(tmp_path / "m", rows="mdb001 G CIRC B 535 425 197\n", films=[])
    (root / "mdb001.pgm").write_bytes(b"P5 garbage")
    with pytest.raises(InputError, match=r"mdb001.pgm: line \d+: film mdb001 cannot be read"):
        build_manifest("mias", root)


def test_missing_folder_info_and_task(tmp_path):
    with pytest.raises(InputError, match="folder not found"):
        build_manifest("mias", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="Info.txt not found"):
        build_manifest("mias", tmp_path / "empty")
    (tmp_path / "empty" / "Info.txt").write_text(HEADER)
    with pytest.raises(InputError, match="no data rows"):
        build_manifest("mias", tmp_path / "empty")
    with pytest.raises(InputError, match="no task 'birads'"):
        build_manifest("mias", tmp_path / "empty", task="birads")
    with pytest.raises(InputError, match="unknown source 'miass'; expected one of: cbis-ddsm, csv"):
        build_manifest("miass", tmp_path)


def test_roi_crops_of_mias_rows(mias_root):
    df = build_manifest("mias", mias_root)
    rois, meta = extract_rois(df, size=64, mode="fixed", fov_mm=64, progress=False)
    assert rois.shape == (6, 64, 64) and (meta.crop_side_px == 320).all()
    assert np.allclose(meta.roi_spacing_mm, 1.0)
    assert isinstance(meta, pd.DataFrame) and meta.roi_id.tolist() == df.roi_id.tolist()
