"""Patient identifiers never leave the DICOM header, and nothing reaches the network.

Tiny DICOMs carry fake identifiers (PatientName ``DOE^JANE``, PatientID
``MRN-12345N``, PatientBirthDate ``19600101``). ``data build
--patient-from-dicom`` groups them by patient through salted pseudonyms;
``cv``, ``predict``, ``diagnose``, ``report`` and ``export`` then run on the
manifest, in-process, with ``socket.socket`` replaced by a function that
raises. Every byte of every output file (parquet, npy, safetensors, onnx,
html, csv, json) and every line printed is scanned for the identifiers.
"""
from __future__ import annotations

import base64
import re
import socket
import stat

import numpy as np
import pandas as pd
import pytest

from relhelp import run_cli_plain, write_dicom

pytestmark = pytest.mark.xdist_group("train")

N_PATIENTS, PER_PATIENT, SIDE = 10, 2, 32
SECRETS = [b"DOE^JANE", b"JANE", b"MRN-12345", b"19600101", b"ST ELSEWHERE"]


class NetworkUsed(OSError):
    pass


ATTEMPTS: list = []


def _no_socket(*args, **kwargs):
    ATTEMPTS.append(args)  # recorded even when the caller swallows the error
    raise NetworkUsed("a socket was opened")


def _write_dicoms(root):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    blob = np.exp(-((yy - SIDE / 2) ** 2 + (xx - SIDE / 2) ** 2) / 30.0)
    for p in range(N_PATIENTS):
        label = p % 2
        for v in range(PER_PATIENT):
            img = 0.3 + 0.1 * rng.standard_normal((SIDE, SIDE)) + (0.4 if label else 0.1) * blob
            arr = (np.clip(img, 0, 1) * 4095).astype(np.uint16)
            write_dicom(root / ("malignant" if label else "benign") / f"img{p:02d}{v}.dcm", arr, bits_stored=12,
                        PatientName="DOE^JANE", PatientID=f"MRN-12345{p}", PatientBirthDate="19600101",
                        InstitutionName="ST ELSEWHERE")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run build, cv, predict, diagnose, report and export once; return folders and printed text."""
    base = tmp_path_factory.mktemp("privacy")
    data, proj = base / "dicoms", base / "project"
    _write_dicoms(data)
    manifest = proj / "manifest.parquet"
    run, store = proj / "run", proj / "store"
    tiny = ["--set", f"data.manifest={manifest}", "--set", "data.roi_size=32", "--set", "decomposition.k=3",
            "--set", f"decomposition.store={store}", "--set", "train.epochs=1", "--set", "train.batch_size=8",
            "--set", "cv.n_folds=2", "--set", "cv.n_boot=20", "--set", "cv.inner_fraction=0.34",
            "--set", "train.threads=1", "--set", "train.augment=false"]
    steps = {
        "build": ["data", "build", "--source", "folder", "--root", data, "--out", manifest, "--patient-from-dicom"],
        "cv": ["-q", "cv", "--recipe", "small", *tiny, "--out", run],
        "predict": ["-q", "predict", run, data / "benign", "--out", proj / "pred.csv"],
        "diagnose": ["-q", "diagnose", run, "--permutations", "0", "--model-rois", "8"],
        "report": ["-q", "report", run, "--permutations", "0"],
        "export": ["-q", "export", run, "--out", proj / "export"],
    }
    results = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "socket", _no_socket)
        mp.setattr(socket, "create_connection", _no_socket)
        mp.setattr(socket, "getaddrinfo", _no_socket)
        for name, args in steps.items():
            results[name] = run_cli_plain(args)
    return {"data": data, "proj": proj, "manifest": manifest, "run": run, "results": results}


@pytest.mark.parametrize("step", ["build", "cv", "predict", "diagnose", "report", "export"])
def test_each_step_succeeds_without_network(pipeline, step):
    code, out, err = pipeline["results"][step]
    assert code == 0, f"{step}: {err[-3000:]}"


def test_no_socket_was_even_tried(pipeline):
    assert ATTEMPTS == []


def test_outputs_exist(pipeline):
    run, proj = pipeline["run"], pipeline["proj"]
    for rel in ("oof.csv", "summary.json", "diagnosis.json", "report.html", "manifest.parquet"):
        assert (run / rel).is_file(), rel
    assert list((proj / "export").glob("*.onnx")) and (proj / "pred.csv").is_file()
    assert list(run.glob("folds/*/model.safetensors")) and list((proj / "store").glob("*.npy"))


def test_no_identifier_in_any_output_or_log(pipeline):
    files = [p for p in pipeline["proj"].rglob("*") if p.is_file()]
    assert len(files) > 20
    leaks = []
    for p in files:
        data = p.read_bytes()
        if p.suffix == ".html":
            # embedded base64 images are random letters: a 4-letter name turns up in ~1 MB of them by
            # chance; an identifier would sit in the text, so scan the page with data: URIs cut out,
            # and the images themselves decoded
            uris = re.findall(rb"data:image/(?:png|jpeg);base64,([A-Za-z0-9+/=]+)", data)
            data = re.sub(rb"data:image/(?:png|jpeg);base64,[A-Za-z0-9+/=]+", b"data:", data)
            data += b"".join(base64.b64decode(u) for u in uris)
        leaks += [(str(p), s.decode()) for s in SECRETS if s in data]
    for name, (code, out, err) in pipeline["results"].items():
        leaks += [(f"{name} output", s.decode()) for s in SECRETS if s.decode() in out + err]
    assert not leaks, leaks
    # the scan can fail: the identifiers are in the inputs, readable as bytes
    assert all(any(s in p.read_bytes() for p in pipeline["data"].rglob("*.dcm")) for s in SECRETS)


def test_patients_are_salted_pseudonyms_grouped_right(pipeline):
    df = pd.read_parquet(pipeline["manifest"])
    assert df["patient_id"].nunique() == N_PATIENTS
    assert (df.groupby("patient_id").size() == PER_PATIENT).all()
    assert all(re.fullmatch(r"pid-[0-9a-f]{16}", p) for p in df["patient_id"])
    # both images of one patient (img{p}{v}) share the pseudonym
    stem = df["image_path"].map(lambda s: s.rsplit("/", 1)[-1][3:5])
    assert (df.groupby(stem)["patient_id"].nunique() == 1).all()
    salt = pipeline["manifest"].parent / ".mammodecomp-salt"
    assert stat.S_IMODE(salt.stat().st_mode) == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}", salt.read_text().strip())


def test_salt_reused_and_project_specific(pipeline, tmp_path):
    from mammodecomp.privacy import SALT_FILE
    first = pd.read_parquet(pipeline["manifest"])
    again = tmp_path / "same" / "m.parquet"
    again.parent.mkdir()
    (again.parent / SALT_FILE).write_text((pipeline["manifest"].parent / SALT_FILE).read_text())
    code, _, err = run_cli_plain(["data", "build", "--source", "folder", "--root", pipeline["data"],
                                  "--out", again, "--patient-from-dicom"])
    assert code == 0, err
    assert pd.read_parquet(again)["patient_id"].tolist() == first["patient_id"].tolist()
    other = tmp_path / "other" / "m.parquet"
    code, _, err = run_cli_plain(["data", "build", "--source", "folder", "--root", pipeline["data"],
                                  "--out", other, "--patient-from-dicom"])
    assert code == 0, err
    assert not set(pd.read_parquet(other)["patient_id"]) & set(first["patient_id"])


def test_dicom_without_patient_id_is_refused_without_leaking(tmp_path):
    write_dicom(tmp_path / "d" / "benign" / "a.dcm", np.zeros((8, 8), np.uint16), PatientName="DOE^JANE")
    write_dicom(tmp_path / "d" / "malignant" / "b.dcm", np.zeros((8, 8), np.uint16), PatientID="MRN-123456")
    code, _, err = run_cli_plain(["data", "build", "--source", "folder", "--root", tmp_path / "d",
                                  "--out", tmp_path / "m.parquet", "--patient-from-dicom"])
    assert code == 2 and "a.dcm" in err and "PatientID" in err and "DOE" not in err
    assert not (tmp_path / "m.parquet").exists()


def test_only_the_privacy_module_reads_patient_tags():
    """Static guard: code that reads a patient tag (``ds.PatientID``, ``ds.get("PatientName")``,
    ``specific_tags=["PatientID"]``, tag numbers 0010,xxxx) lives in mammodecomp.privacy only."""
    from pathlib import Path
    import mammodecomp
    src = Path(mammodecomp.__file__).parent
    read = re.compile(r"\.(Patient|OtherPatient)[A-Z]\w*|[\[(,]\s*['\"](Patient|OtherPatient)[A-Z]\w*['\"]|"
                      r"0x0010[0-9a-fA-F]{4}|\(\s*0x0010\s*,")
    readers = {p.relative_to(src).as_posix() for p in src.rglob("*.py") if read.search(p.read_text())}
    assert readers == {"privacy.py"}, readers  # privacy.py itself must match: the guard can fail


def test_patient_from_dicom_options_are_checked(tmp_path):
    code, _, err = run_cli_plain(["data", "build", "--source", "csv", "--root", tmp_path / "x.csv",
                                  "--out", tmp_path / "m.parquet", "--patient-from-dicom"])
    assert code == 2 and "--patient-from-dicom is for --source folder" in err
    code, _, err = run_cli_plain(["data", "build", "--source", "folder", "--root", tmp_path,
                                  "--out", tmp_path / "m.parquet", "--salt-file", tmp_path / "s"])
    assert code == 2 and "--salt-file is used with --patient-from-dicom only" in err
    bad = tmp_path / "bad-salt"
    bad.write_text("not a salt")
    write_dicom(tmp_path / "d" / "benign" / "a.dcm", np.zeros((8, 8), np.uint16), PatientID="MRN-123456")
    code, _, err = run_cli_plain(["data", "build", "--source", "folder", "--root", tmp_path / "d",
                                  "--out", tmp_path / "m.parquet", "--patient-from-dicom", "--salt-file", bad])
    assert code == 2 and "bad-salt" in err and "hex" in err
    assert not (tmp_path / "m.parquet").exists() and not (tmp_path / ".mammodecomp-salt").exists()
