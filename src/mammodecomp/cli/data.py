"""``mammodecomp data``: summarise a data set and build its manifest.

``data summary --source mias --root DIR [--task T] [--json]`` prints the
counts of :func:`mammodecomp.sources.summarize`; ``data build --source ...
--root ... --out manifest.parquet`` writes the validated manifest
(Parquet, or CSV by suffix) atomically.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import data_app


def summary_line(s: dict) -> str:
    """One human line of a :func:`~mammodecomp.sources.summarize` dict.

    >>> summary_line({"rois": 3, "classes": {"benign": 1, "malignant": 2}, "patients": 2,
    ...               "films": 2, "located_rois": 3, "patients_with_rois": 2,
    ...               "dataset": {"films": 5, "patients": 4}})
    '5 films, 4 patients; 3 ROIs (3 located) = 1 benign + 2 malignant from 2 patients'
    """
    ds = s.get("dataset", {})
    films, patients = ds.get("films", s["films"]), ds.get("patients", s["patients"])
    classes = " + ".join(f"{n} {name}" for name, n in s["classes"].items())
    return (f"{films} films, {patients} patients; {s['rois']} ROIs ({s['located_rois']} located) = {classes} "
            f"from {s['patients']} patients")


def _patient_kw(source: str, patient_from_dicom: bool, salt_file: Path | None, folder: Path | None) -> dict:
    """Source keywords for DICOM patient pseudonyms; the salt is read or made here.

    Without *salt_file* and *folder* (``data summary``: counts only) a
    throw-away salt is used.
    """
    from ..errors import InputError
    if not patient_from_dicom:
        if salt_file is not None:
            raise InputError("--salt-file is used with --patient-from-dicom only")
        return {}
    if source != "folder":
        raise InputError(f"--patient-from-dicom is for --source folder; source '{source}' takes its patient ids "
                         "from its own annotation files")
    import secrets

    from ..privacy import load_or_create_salt, salt_path
    if salt_file is None and folder is None:
        return {"patient_from_dicom": True, "salt": secrets.token_hex(32)}
    return {"patient_from_dicom": True,
            "salt": load_or_create_salt(salt_file if salt_file is not None else salt_path(folder))}


@data_app.command("summary")
def summary(source: str = typer.Option(..., "--source", help="mias, cbis-ddsm, vindr-mammo, csv, folder, synthetic"),
            root: Path = typer.Option(..., "--root", help="the data set's folder (csv: the CSV file)"),
            task: str = typer.Option("benign-malignant", "--task", help="e.g. benign-malignant, normal-abnormal"),
            as_json: bool = typer.Option(False, "--json", help="print the full summary as JSON"),
            patient_from_dicom: bool = typer.Option(
                False, "--patient-from-dicom",
                help="folder source: count patients by DICOM PatientID (hashed with a throw-away salt)")) -> None:
    """Count films, patients, ROIs and classes of a data set.

    Example: mammodecomp data summary --source mias --root ../shared/data/mini-mias
    """
    from ..sources import build_manifest, summarize

    s = summarize(build_manifest(source, root, task=task, **_patient_kw(source, patient_from_dicom, None, None)))
    if as_json:
        typer.echo(json.dumps(s, indent=2, default=str))
        return
    typer.echo(f"{s['source']} ({s['task']}): {summary_line(s)}")
    if s["dropped"]:
        typer.echo("dropped: " + ", ".join(f"{k}: {v}" for k, v in s["dropped"].items()))


@data_app.command("build")
def build(source: str = typer.Option(..., "--source", help="mias, cbis-ddsm, vindr-mammo, csv, folder, synthetic"),
          root: Path = typer.Option(..., "--root", help="the data set's folder (csv: the CSV file)"),
          out: Path = typer.Option(..., "--out", help="manifest file to write (.parquet or .csv)"),
          task: str = typer.Option("benign-malignant", "--task", help="e.g. benign-malignant, normal-abnormal"),
          seed: int = typer.Option(0, "--seed", help="seed for drawn patches (mias normal-abnormal)"),
          patient_from_dicom: bool = typer.Option(
              False, "--patient-from-dicom",
              help="folder source: patient = salted hash of each DICOM's PatientID (never the ID itself)"),
          salt_file: Optional[Path] = typer.Option(
              None, "--salt-file",
              help="salt for --patient-from-dicom (default: .mammodecomp-salt beside --out, made with mode "
                   "0600 if missing, reused if present)")) -> None:
    """Build and validate a manifest, and write it atomically.

    Example: mammodecomp data build --source mias --root ../shared/data/mini-mias --out manifest.parquet
    """
    from ..manifest import save_manifest
    from ..sources import build_manifest, summarize

    kw = {"seed": seed} if source == "mias" else {}
    kw.update(_patient_kw(source, patient_from_dicom, salt_file, out.parent))
    df = build_manifest(source, root, task=task, **kw)
    save_manifest(df, out)
    typer.echo(f"wrote {out} ({summary_line(summarize(df))})")
