"""Bad input at the command line: one ``error: ...`` line naming the file/row/field, exit 2,
no traceback (unless ``--debug``), and nothing written half.

Each case runs ``mammodecomp.cli.main`` in-process on a tiny input and checks
the output folder or file is absent afterwards. 12- and 16-bit images are the
positive control: they must decompose, with their own bit depth's scale.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from relhelp import png_header_only, write_dicom

SIDE = 16
RAMP = np.arange(SIDE * SIDE, dtype=np.int64).reshape(SIDE, SIDE)


def ramp(bits):
    """A ramp from 0 to the full range of *bits* (uint16 for more than 8 bits)."""
    top = 2 ** bits - 1
    return (RAMP * top // RAMP.max()).astype(np.uint8 if bits == 8 else np.uint16)


def manifest_for(tmp_path, paths, labels=None):
    m = tmp_path / "m.csv"
    pd.DataFrame({"roi_id": [f"r{i}" for i in range(len(paths))],
                  "patient_id": [f"p{i}" for i in range(len(paths))],
                  "label": labels or [i % 2 for i in range(len(paths))],
                  "image_path": [str(p) for p in paths]}).to_csv(m, index=False)
    return m


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def decompose_args(manifest, store, *extra):
    return ["-q", "decompose", "--manifest", manifest, "--method", "identity", "-k", "1", "--out", store,
            "--size", SIDE, *extra]


def nothing_in(folder):
    return not folder.exists() or not any(folder.iterdir())


# --------------------------------------------------------------------------- image files
def _good_png(p):
    Image.fromarray(ramp(8)).save(p)


def _good_pgm(p):
    Image.fromarray(ramp(8)).save(p, format="PPM")


def _good_tif(p):
    tifffile.imwrite(p, ramp(16))


def _good_dcm(p):
    write_dicom(p, ramp(16))


GOOD = {"png": _good_png, "pgm": _good_pgm, "tif": _good_tif, "dcm": _good_dcm}


@pytest.mark.parametrize("kind", sorted(GOOD))
@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_truncated_or_corrupt_image(tmp_path, cli, kind, damage):
    p = tmp_path / f"img.{kind}"
    GOOD[kind](p)
    data = p.read_bytes()
    if damage == "truncated":
        p.write_bytes(data[: len(data) // 2])
    else:  # keep the magic bytes (and DICOM preamble), scramble the rest
        keep = 136 if kind == "dcm" else 8
        rng = np.random.default_rng(0)
        p.write_bytes(data[:keep] + rng.integers(0, 256, len(data) - keep, dtype=np.uint8).tobytes())
    store = tmp_path / "store"
    code, out, err = cli(decompose_args(manifest_for(tmp_path, [p]), store))
    assert_one_line_error(code, err, "img." + kind)
    assert nothing_in(store)


def test_dicom_without_pixel_data(tmp_path, cli):
    p = write_dicom(tmp_path / "nopix.dcm", ramp(16), pixels=False)
    store = tmp_path / "store"
    code, _, err = cli(decompose_args(manifest_for(tmp_path, [p]), store))
    assert_one_line_error(code, err, "nopix.dcm", "no pixel data")
    assert nothing_in(store)


def test_dicom_unsupported_transfer_syntax(tmp_path, cli):
    from pydicom.uid import JPEG2000Lossless
    p = write_dicom(tmp_path / "j2k.dcm", ramp(16), transfer_syntax=JPEG2000Lossless)
    store = tmp_path / "store"
    code, _, err = cli(decompose_args(manifest_for(tmp_path, [p]), store))
    assert_one_line_error(code, err, "j2k.dcm", "transfer syntax", str(JPEG2000Lossless))
    assert nothing_in(store)


def test_16_and_12_bit_images_work_on_their_own_scale(tmp_path, cli):
    files = []
    for bits in (16, 12):
        Image.fromarray(ramp(bits)).save(tmp_path / f"a{bits}.png")
        tifffile.imwrite(tmp_path / f"a{bits}.tif", ramp(bits))
        write_dicom(tmp_path / f"a{bits}.dcm", ramp(bits), bits_stored=bits)
        files += [tmp_path / f"a{bits}.{s}" for s in ("png", "tif", "dcm")]
    store = tmp_path / "store"
    code, out, err = cli(decompose_args(manifest_for(tmp_path, files), store))
    assert code == 0, err
    (entry,) = store.glob("*.npy")
    arr = np.load(entry).astype(np.float32)  # (N, 1, H, W) identity: the ROI itself
    assert arr.shape == (len(files), 1, SIDE, SIDE)
    for i, f in enumerate(files):
        # a 12-bit image in a 16-bit container is scaled by 4095, not 65535 (which would give 0.06)
        assert arr[i].min() == pytest.approx(0.0, abs=1e-3), f.name
        assert arr[i].max() == pytest.approx(1.0, abs=1e-3), f.name


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_pixels(tmp_path, cli, bad):
    a = np.linspace(0, 1, SIDE * SIDE, dtype=np.float32).reshape(SIDE, SIDE)
    a[3, 4] = bad
    p = tmp_path / "nan.tif"
    tifffile.imwrite(p, a)
    store = tmp_path / "store"
    code, _, err = cli(decompose_args(manifest_for(tmp_path, [p]), store))
    assert_one_line_error(code, err, "nan.tif", "NaN or Inf")
    assert nothing_in(store)


@pytest.mark.parametrize("kind", ["png", "tif", "dcm"])
def test_empty_image(tmp_path, cli, kind):
    p = tmp_path / f"empty.{kind}"
    p.write_bytes(b"")
    store = tmp_path / "store"
    code, _, err = cli(decompose_args(manifest_for(tmp_path, [p]), store))
    assert_one_line_error(code, err, f"empty.{kind}")
    assert nothing_in(store)


@pytest.mark.filterwarnings("ignore:.*zero-size array:UserWarning")
def test_zero_sized_tiff(tmp_path, cli):
    p = tmp_path / "zero.tif"
    tifffile.imwrite(p, np.zeros((0, SIDE), np.uint16))
    store = tmp_path / "store"
    code, _, err = cli(decompose_args(manifest_for(tmp_path, [p]), store))
    assert_one_line_error(code, err, "zero.tif")
    assert nothing_in(store)


def test_pixel_limit_default_refuses_above_100_megapixels(tmp_path, cli):
    p = png_header_only(tmp_path / "huge.png", 20_000, 5_001)  # 100.02 megapixels, never decoded
    store = tmp_path / "store"
    code, _, err = cli(decompose_args(manifest_for(tmp_path, [p]), store))
    assert_one_line_error(code, err, "huge.png", "100020000 pixels", "limit of 100000000")
    assert nothing_in(store)


def test_pixel_limit_is_configurable(tmp_path, cli, monkeypatch):
    p = tmp_path / "a.png"
    Image.fromarray(ramp(8)).save(p)  # 256 pixels
    m = manifest_for(tmp_path, [p])
    code, _, err = cli(decompose_args(m, tmp_path / "s1", "--max-pixels", 255))
    assert_one_line_error(code, err, "a.png", "limit of 255")
    monkeypatch.setenv("MAMMODECOMP_MAX_PIXELS", "200")
    code, _, err = cli(decompose_args(m, tmp_path / "s2"))
    assert_one_line_error(code, err, "a.png", "limit of 200")
    assert nothing_in(tmp_path / "s1") and nothing_in(tmp_path / "s2")
    code, _, err = cli(decompose_args(m, tmp_path / "s3", "--max-pixels", 256))  # the flag wins
    assert code == 0, err


# --------------------------------------------------------------------------- manifests
@pytest.fixture
def images(tmp_path):
    out = []
    for i in range(4):
        p = tmp_path / "img" / f"i{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(ramp(8)).save(p)
        out.append(p)
    return out


def build(cli, tmp_path, rows):
    csv = tmp_path / "list.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    out = tmp_path / "manifest.parquet"
    code, _, err = cli(["data", "build", "--source", "csv", "--root", csv, "--out", out])
    return code, err, out


def _rows(images, **change):
    rows = {"path": [str(p) for p in images], "label": [0, 1, 0, 1],
            "patient_id": ["a", "b", "c", "d"], "roi_id": ["r0", "r1", "r2", "r3"]}
    rows.update(change)
    return rows


@pytest.mark.parametrize("change, needles", [
    ({"label": [0, 1, 2, 1]}, ["row 3", "field 'label'", "'2'"]),
    ({"label": ["benign", "maybe", 0, 1]}, ["row 2", "field 'label'", "maybe"]),
    ({"label": [1, 1, 1, 1]}, ["field 'label'", "both classes"]),
    ({"roi_id": ["r0", "r1", "r0", "r3"]}, ["duplicate roi_id 'r0'", "rows 1 and 3"]),
    ({"patient_id": ["a", "", "c", "d"]}, ["row 2", "field 'patient_id'", "missing"]),
    ({"bbox": ["0 0 8 8", "0 0 8 8", "4 4 40 12", "0 0 8 8"]}, ["row 3", "outside the 16x16 image"]),
])
def test_bad_manifest_rows(tmp_path, cli, images, change, needles):
    code, err, out = build(cli, tmp_path, _rows(images, **change))
    assert_one_line_error(code, err, "list.csv", *needles)
    assert not out.exists()


def test_bad_manifest_file_given_to_decompose(tmp_path, cli, images):
    m = manifest_for(tmp_path, images, labels=[0, 1, 7, 0])
    code, _, err = cli(decompose_args(m, tmp_path / "store"))
    assert_one_line_error(code, err, "m.csv", "row 3", "field 'label'")
    assert nothing_in(tmp_path / "store")


def test_lesion_centre_outside_the_film(tmp_path, cli, images):
    m = tmp_path / "m.csv"
    pd.DataFrame({"roi_id": ["a"], "patient_id": ["p"], "label": [0], "image_path": [str(images[0])],
                  "center_row": [40.0], "center_col": [3.0], "radius": [2.0],
                  "image_height": [16], "image_width": [16]}).to_csv(m, index=False)
    code, _, err = cli(decompose_args(m, tmp_path / "store"))
    assert_one_line_error(code, err, "m.csv", "row 1", "outside the 16x16 image")
    assert nothing_in(tmp_path / "store")


INFO_BAD = [("mdb001 G CIRC B 535 425\n", "2 coordinate field(s)"),
            ("mdb001 Q CIRC B 535 425 197\n", "background 'Q'"),
            ("mdb001 G CIRC X 535 425 197\n", "severity 'X'"),
            ("mdb001 G CIRC B 5a5 425 197\n", "not integers"),
            ("mdb001 G BLOB B 535 425 197\n", "class 'BLOB'")]


@pytest.mark.parametrize("line, needle", INFO_BAD)
def test_info_txt_line_that_does_not_parse(tmp_path, cli, line, needle):
    root = tmp_path / "mias"
    root.mkdir()
    (root / "Info.txt").write_text("header\nmdb002 G NORM\n" + line)
    Image.fromarray(np.zeros((1024, 1024), np.uint8)).save(root / "mdb001.png")
    out = tmp_path / "m.parquet"
    code, _, err = cli(["data", "build", "--source", "mias", "--root", root, "--out", out])
    assert_one_line_error(code, err, "Info.txt", "line 3", needle)
    assert not out.exists()


# --------------------------------------------------------------------------- folds
def _manifest_patients(tmp_path, images, patients, labels):
    m = tmp_path / "folds.csv"
    paths = [str(images[i % len(images)]) for i in range(len(patients))]
    pd.DataFrame({"roi_id": [f"r{i}" for i in range(len(patients))], "patient_id": patients,
                  "label": labels, "image_path": paths}).to_csv(m, index=False)
    return m


CV_TINY = ["--set", "data.roi_size=16", "--set", "decomposition.method=identity", "--set", "decomposition.k=1",
           "--set", "train.epochs=1", "--set", "cv.n_boot=10"]


@pytest.mark.parametrize("patients, labels, folds, needle", [
    (["a", "b", "c", "d"], [0, 1, 0, 1], 5, "4 patients for n_folds=5"),
    (["a", "b", "c", "d", "e", "f"], [0, 0, 0, 0, 0, 1], 2, "class 1 has 1 patients, fewer than n_folds=2"),
])
def test_fewer_patients_than_folds(tmp_path, cli, images, patients, labels, folds, needle):
    m = _manifest_patients(tmp_path, images, patients, labels)
    run = tmp_path / "run"
    code, _, err = cli(["-q", "cv", "--set", f"data.manifest={m}", "--set", f"cv.n_folds={folds}",
                        "--set", f"decomposition.store={tmp_path / 'store'}", *CV_TINY, "--out", run])
    assert_one_line_error(code, err, needle)
    assert not run.exists()


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("text, needles", [
    ("train:\n  epochz: 3\n", ["bad.yaml", "config field 'train.epochz'", "unknown key", "epochs"]),
    ("train:\n  epochs: three\n", ["bad.yaml", "config field 'train.epochs'", "three"]),
    ("cv:\n  n_folds: 1\n", ["bad.yaml", "config field 'cv.n_folds'"]),
    ("surprise: 1\n", ["bad.yaml", "config field 'surprise'", "unknown key"]),
    ("train: [1, 2\n", ["bad.yaml", "not valid YAML"]),
])
def test_config_unknown_keys_or_wrong_types(tmp_path, cli, text, needles):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    run = tmp_path / "run"
    code, _, err = cli(["-q", "cv", "--config", cfg, "--out", run])
    assert_one_line_error(code, err, *needles)
    assert not run.exists()


# --------------------------------------------------------------------------- versions
def test_run_directory_of_another_version(tmp_path, cli):
    from mammodecomp.config import dump_config, resolve_config
    from mammodecomp.io import write_json
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(resolve_config(recipe="small")))
    write_json(run / "run.json", {"format": 99, "version": "9.9.9"})
    for name in ("manifest.parquet", "splits.csv", "oof.csv"):
        (run / name).write_bytes(b"")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir())
    code, _, err = cli(["-q", "cv", "--recipe", "small", "--out", run])
    assert_one_line_error(code, err, str(run), "9.9.9", "format 99")
    for cmd in (["diagnose", run, "-p", "0"], ["report", run, "-p", "0"]):
        code, _, err = cli(["-q", *cmd])
        assert_one_line_error(code, err, str(run), "run format 99")
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir()) == before


def test_store_of_another_version(tmp_path, cli, images):
    store = tmp_path / "store"
    store.mkdir()
    (store / "store.json").write_text('{"format": 42, "version": "0.0.1"}')
    code, _, err = cli(decompose_args(manifest_for(tmp_path, images[:1]), store))
    assert_one_line_error(code, err, "store", "0.0.1", "store format 42")
    assert sorted(p.name for p in store.iterdir()) == ["store.json"]


# --------------------------------------------------------------------------- --debug
def test_debug_shows_the_traceback(tmp_path, images, monkeypatch):
    from mammodecomp.cli import main
    monkeypatch.delenv("MAMMODECOMP_DEBUG", raising=False)  # the --debug callback sets it
    from mammodecomp.errors import InputError
    m = manifest_for(tmp_path, images, labels=[0, 1, 7, 0])
    with pytest.raises(InputError, match="row 3"):
        main(["--debug", *map(str, decompose_args(m, tmp_path / "store"))])


def test_cv_on_a_corrupt_image_leaves_no_run_directory(tmp_path, cli, images):
    images[2].write_bytes(images[2].read_bytes()[:30])
    m = _manifest_patients(tmp_path, images, ["a", "b", "c", "d"], [0, 1, 0, 1])
    run = tmp_path / "run"
    code, _, err = cli(["-q", "cv", "--set", f"data.manifest={m}", "--set", "cv.n_folds=2",
                        "--set", f"decomposition.store={tmp_path / 'store'}", *CV_TINY, "--out", run])
    assert_one_line_error(code, err, "i2.png", "cannot decode image")
    assert not run.exists()
