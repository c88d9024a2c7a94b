"""``folder``: one sub-folder per class, one image per ROI.

Layout::

    ROOT/benign/*.png     ROOT/malignant/*.png      (or 0/ and 1/,
                                                      normal/ and abnormal/,
                                                      negative/ and positive/)

Images may sit in nested folders below a class folder. The patient id comes
from ``patient_regex`` applied to the file name (its named group
``patient``, else its first group, else the whole match); without a regex
each file is its own patient, which is only honest when every patient has
one image. With ``patient_from_dicom`` the patient is the DICOM
``PatientID``, replaced by its salted pseudonym
(:func:`mammodecomp.privacy.dicom_patient_id`): the tag's value never
reaches the manifest.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..errors import InputError
from . import SOURCES
from ._common import check_task, list_images, require_dir

CLASS_DIRS = {"benign": 0, "malignant": 1, "0": 0, "1": 1, "normal": 0, "abnormal": 1,
              "negative": 0, "positive": 1}
NAMES = {"benign-malignant": ("benign", "malignant"), "normal-abnormal": ("normal", "abnormal")}


def patient_from_name(name: str, pattern: re.Pattern) -> str | None:
    """Patient id in a file name, or None when the pattern does not match.

    >>> patient_from_name("P_00012_LEFT_CC.png", re.compile(r"(?P<patient>P_\\d+)"))
    'P_00012'
    >>> patient_from_name("case7-a.png", re.compile(r"case(\\d+)"))
    '7'
    """
    m = pattern.search(name)
    if m is None:
        return None
    if "patient" in m.groupdict():
        return m.group("patient")
    return m.group(1) if m.groups() else m.group(0)


@SOURCES.register("folder")
def folder_source(root: str | Path, task: str = "benign-malignant", *,
                  patient_regex: str | None = None, patient_from_dicom: bool = False,
                  salt: str | None = None) -> pd.DataFrame:
    """Manifest from class sub-folders (see the module docstring).

    Parameters
    ----------
    root : folder holding one sub-folder per class.
    task : ``benign-malignant`` or ``normal-abnormal`` (names the labels).
    patient_regex : regular expression finding the patient id in a file name.
    patient_from_dicom : group by the DICOM ``PatientID`` of each file,
        pseudonymised with *salt* (required then).
    salt : the project's salt (:func:`mammodecomp.privacy.load_or_create_salt`).
    """
    check_task("folder", task, tuple(NAMES))
    root = require_dir(root, "class-per-sub-folder image")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in subdirs if p.name.lower() not in CLASS_DIRS]
    if unknown:
        raise InputError(f"sub-folder(s) {unknown} are not class names; expected benign/ and malignant/ "
                         "(or 0/ 1/, normal/ abnormal/, negative/ positive/)", path=root)
    labels = {}
    for p in subdirs:
        lab = CLASS_DIRS[p.name.lower()]
        if lab in labels:
            raise InputError(f"sub-folders '{labels[lab].name}' and '{p.name}' both mean class {lab}", path=root)
        labels[lab] = p
    if not labels:
        raise InputError("no class sub-folders; expected benign/ and malignant/ (or 0/ and 1/)", path=root)
    if patient_from_dicom and patient_regex:
        raise InputError("give either patient_regex or patient_from_dicom, not both")
    if patient_from_dicom and not salt:
        raise InputError("patient_from_dicom needs the project's salt (mammodecomp.privacy.load_or_create_salt)")
    pattern = re.compile(patient_regex) if patient_regex else None
    rows = []
    for lab, d in sorted(labels.items()):
        files = list_images(d)
        if not files:
            raise InputError("class folder holds no images", path=d)
        for f in files:
            rel = f.relative_to(root).as_posix()
            if patient_from_dicom:
                from ..privacy import dicom_patient_id
                pid = dicom_patient_id(f, salt)
            elif pattern is not None:
                pid = patient_from_name(f.name, pattern)
                if pid is None:
                    raise InputError(f"file name does not match patient_regex '{patient_regex}'", path=f)
            else:
                pid = rel
            rows.append({"roi_id": rel, "patient_id": pid, "label": lab, "label_name": NAMES[task][lab],
                         "image_path": str(f), "source": "folder"})
    df = pd.DataFrame(rows)
    df.attrs["dataset"] = {"images": int(len(df)), "class_folders": {str(k): v.name for k, v in labels.items()}}
    df.attrs["dropped"] = {}
    return df
