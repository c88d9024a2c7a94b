"""`mammodecomp data fetch`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import data_app


@data_app.command("fetch")
def fetch_cmd(
    dataset: str = typer.Argument(..., help="Data set to fetch: mias."),
    dest: Path = typer.Option(..., "--dest", help="Folder to create (left untouched if it already holds the data)."),
    url: Optional[str] = typer.Option(None, "--url", help="Archive URL (default: the official one)."),
    archive: Optional[Path] = typer.Option(None, "--archive", help="Use a local copy instead of downloading: the archive, or a folder of its unpacked files."),
    sha256: Optional[str] = typer.Option(None, "--sha256", help="Expected SHA-256 of the archive."),
    size: Optional[int] = typer.Option(None, "--size", help="Expected size of the archive in bytes."),
):
    """Download the official archive (when the network allows), check it, unpack it.

    Every film's decoded pixels are checked against the SHA-256 table shipped
    with mammodecomp; a missing or altered film refuses the archive.

    Example: mammodecomp data fetch mias --dest data/mini-mias
    """
    from ..errors import InputError
    from ..fetch import MIAS_URL, fetch_mias
    if dataset != "mias":
        raise InputError(f"unknown data set '{dataset}'; expected mias (CBIS-DDSM and VinDr-Mammo need a "
                         "registered download from their hosts: use `data build` on your copy)")
    path = fetch_mias(dest, url=url or MIAS_URL, archive=archive, sha256=sha256, size=size)
    typer.echo(f"mini-MIAS ready in {path}; next: mammodecomp data summary --source mias --root {path}")
