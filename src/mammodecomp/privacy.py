"""Patient identifiers: salted pseudonyms, never the DICOM tags themselves.

A DICOM header can carry the patient's name, ID, birth date and more. The
only code in mammodecomp that reads a patient tag is :func:`dicom_patient_id`,
and it returns a keyed hash (HMAC-SHA256) of ``PatientID`` under a per-project
*salt*, never the value itself. The salt is a random secret
(:func:`secrets.token_hex`) written beside the manifest as
``.mammodecomp-salt`` with mode 0600 and reused when present, so the same
patient gets the same pseudonym across rebuilds of one project (patient
grouping stays stable) while pseudonyms from two projects cannot be linked,
and a pseudonym cannot be reversed by hashing a list of MRNs without the salt.

Sources whose patient ids are already pseudonyms are left alone: CBIS-DDSM's
``P_00001`` comes from the file path and VinDr-Mammo's patient is the
anonymised ``study_id``; neither reads a DICOM patient tag.

Examples
--------
>>> pseudonymize("MRN-1", "00" * 16) == pseudonymize("MRN-1", "00" * 16)
True
>>> pseudonymize("MRN-1", "00" * 16) != pseudonymize("MRN-1", "11" * 16)
True
>>> pseudonymize("MRN-1", "00" * 16).startswith("pid-")
True
"""
from __future__ import annotations

import contextlib
import hmac
import os
import re
import secrets
import tempfile
from hashlib import sha256
from pathlib import Path

from .errors import InputError

#: the salt's file name, beside the manifest (or in the run directory)
SALT_FILE = ".mammodecomp-salt"
_HEX = re.compile(r"^[0-9a-f]{32,}$")


def salt_path(folder: str | Path) -> Path:
    """The salt file of a project folder (the manifest's folder).

    >>> salt_path("/data/project").name
    '.mammodecomp-salt'
    """
    return Path(folder) / SALT_FILE


def read_salt(path: str | Path) -> str:
    """Read and check a salt file (at least 32 lowercase hex digits).

    Raises
    ------
    InputError
        The file is missing or does not hold a hex salt.
    """
    path = Path(path)
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise InputError("salt file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read salt file ({type(e).__name__})", path=path) from None
    if not _HEX.match(text):
        raise InputError("salt file does not hold a salt; expected at least 32 lowercase hex digits "
                         "(delete it to make a new one: pseudonyms will change)", path=path)
    return text


def load_or_create_salt(path: str | Path) -> str:
    """The project's salt from *path* (a salt file), made with mode 0600 if it does not exist.

    Creation is atomic and never overwrites: the salt is written to a private
    temporary file and hard-linked onto *path*; if another process made the
    file first, its salt is used.

    Parameters
    ----------
    path : str or Path
        The salt file, e.g. ``manifest_dir / ".mammodecomp-salt"``.

    Returns
    -------
    str
        64 hex digits (256 random bits) for a new salt.

    Examples
    --------
    >>> import tempfile, pathlib, stat
    >>> p = pathlib.Path(tempfile.mkdtemp()) / SALT_FILE
    >>> s = load_or_create_salt(p)
    >>> len(s), load_or_create_salt(p) == s, oct(stat.S_IMODE(p.stat().st_mode))
    (64, True, '0o600')
    """
    path = Path(path)
    if path.exists():
        return read_salt(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    salt = secrets.token_hex(32)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(salt + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return read_salt(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return salt


def pseudonymize(value: str, salt: str) -> str:
    """``pid-`` + the first 16 hex digits of HMAC-SHA256(salt, value).

    Parameters
    ----------
    value : str
        An identifier (e.g. a DICOM PatientID), stripped of surrounding blanks.
    salt : str
        The project's salt (:func:`load_or_create_salt`).
    """
    if not salt:
        raise InputError("a salt is required to pseudonymise patient ids")
    digest = hmac.new(salt.encode(), str(value).strip().encode("utf-8"), sha256).hexdigest()
    return f"pid-{digest[:16]}"


def dicom_patient_id(path: str | Path, salt: str) -> str:
    """The salted pseudonym of a DICOM file's ``PatientID`` (the tag itself is never returned).

    Only the header is read (``stop_before_pixels``). The value is hashed
    here, so no caller ever holds it.

    Raises
    ------
    InputError
        Not a readable DICOM, or ``PatientID`` absent or empty; the message
        names the file, never the tag's value.
    """
    path = Path(path)
    try:
        import pydicom
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
        value = ds.get("PatientID")
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad input
        raise InputError(f"cannot read the DICOM header for a patient id ({type(e).__name__}); expected a DICOM "
                         "file", path=path) from None
    value = "" if value is None else str(value).strip()
    if not value:
        raise InputError("DICOM has no PatientID; cannot group its images by patient (use a patient "
                         "regex on the file names instead)", path=path, field="PatientID")
    return pseudonymize(value, salt)
