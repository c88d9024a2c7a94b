"""``mammodecomp data``: summarise a data set and build its manifest.

``data summary --source mias --root DIR [--task T] [--json]`` prints the
counts of :func:`mammodecomp.sources.summarize` (and the rows dropped, per
reason); ``--skip-missing``, ``--abnormality`` and ``--split`` keep a partial
download and select CBIS-DDSM/VinDr-Mammo rows, on ``summary`` and ``build`` alike; ``data build --source ...
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

    The data set's own counts come first (what the source read: all films
    and patients, or VinDr-Mammo's images and studies), then the manifest's.

    >>> summary_line({"rois": 4, "classes": {"benign": 2, "malignant": 2}, "patients": 2, "films": 3,
    ...               "located_rois": 4, "patients_with_rois": 2,
    ...               "dataset": {"images": 16, "studies": 4, "finding_rows": 9}})
    '16 images, 4 studies; 4 ROIs (4 located) = 2 benign + 2 malignant from 2 patients'
    """
    ds = s.get("dataset", {})
    if "images" in ds and "studies" in ds:
        head = f"{ds['images']} images, {ds['studies']} studies"
    else:
        head = f"{ds.get('films', s['films'])} films, {ds.get('patients', s['patients'])} patients"
    classes = " + ".join(f"{n} {name}" for name, n in s["classes"].items())
    return (f"{head}; {s['rois']} ROIs ({s['located_rois']} located) = {classes} "
            f"from {s['patients']} patients")


_SELECTION = {  # option -> sources that take it
    "skip_missing": ("cbis-ddsm", "vindr-mammo"),
    "abnormality": ("cbis-ddsm",),
    "split": ("cbis-ddsm", "vindr-mammo"),
}


def _selection_kw(source: str, skip_missing: bool, abnormality: str | None, split: str | None) -> dict:
    """Source keywords for partial downloads and row selection; an option the source lacks is an error."""
    from ..errors import InputError
    given = {"skip_missing": skip_missing or None, "abnormality": abnormality, "split": split}
    kw = {}
    for name, value in given.items():
        if value is None:
            continue
        if source not in _SELECTION[name]:
            raise InputError(f"--{name.replace('_', '-')} is for source(s) {', '.join(_SELECTION[name])}; "
                             f"source '{source}' does not take it")
        kw[name] = value
    if "abnormality" in kw:
        kw["abnormality"] = tuple(a.strip() for a in kw["abnormality"].split(",") if a.strip())
    return kw


def _print_summary(s: dict) -> None:
    typer.echo(f"{s['source']} ({s['task']}): {summary_line(s)}")
    if s["dropped"]:
        typer.echo("dropped: " + ", ".join(f"{k}: {v}" for k, v in s["dropped"].items()))
    ds = s.get("dataset", {})
    if ds.get("masks"):
        typer.echo(f"masks: {ds['masks']}")


_SKIP_HELP = ("cbis-ddsm, vindr-mammo: drop rows whose image or mask file is absent (a partial download), "
              "counted per reason in the summary")
_ABN_HELP = "cbis-ddsm: mass, calc or mass,calc (default both)"
_SPLIT_HELP = "cbis-ddsm: train or test; vindr-mammo: training (train) or test (the official split)"


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
                help="folder source: count patients by DICOM PatientID (hashed with a throw-away salt)"),
            skip_missing: bool = typer.Option(False, "--skip-missing", help=_SKIP_HELP),
            abnormality: Optional[str] = typer.Option(None, "--abnormality", help=_ABN_HELP),
            split: Optional[str] = typer.Option(None, "--split", help=_SPLIT_HELP)) -> None:
    """Count films, patients, ROIs and classes of a data set.

    Example: mammodecomp data summary --source mias --root ../shared/data/mini-mias
    """
    from ..sources import build_manifest, summarize

    kw = _selection_kw(source, skip_missing, abnormality, split)
    kw.update(_patient_kw(source, patient_from_dicom, None, None))
    s = summarize(build_manifest(source, root, task=task, **kw))
    if as_json:
        from ..io import strict_json
        typer.echo(json.dumps(strict_json(s), indent=2, default=str))
        return
    _print_summary(s)


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
                   "0600 if missing, reused if present)"),
          skip_missing: bool = typer.Option(False, "--skip-missing", help=_SKIP_HELP),
          abnormality: Optional[str] = typer.Option(None, "--abnormality", help=_ABN_HELP),
          split: Optional[str] = typer.Option(None, "--split", help=_SPLIT_HELP)) -> None:
    """Build and validate a manifest, and write it atomically.

    Example: mammodecomp data build --source mias --root ../shared/data/mini-mias --out manifest.parquet
    """
    from ..manifest import save_manifest
    from ..sources import build_manifest, summarize

    kw = {"seed": seed} if source == "mias" else {}
    kw.update(_selection_kw(source, skip_missing, abnormality, split))
    kw.update(_patient_kw(source, patient_from_dicom, salt_file, out.parent))
    df = build_manifest(source, root, task=task, **kw)
    save_manifest(df, out)
    s = summarize(df)
    typer.echo(f"wrote {out} ({summary_line(s)})")
    if s["dropped"]:
        typer.echo("dropped: " + ", ".join(f"{k}: {v}" for k, v in s["dropped"].items()))
