"""The runs a diagnosis reads, through :mod:`mammodecomp.rundir` (the run directory's one owner).

``RunFiles`` is :class:`mammodecomp.rundir.Run`; ``load_run_files`` reads a
finished run; ``load_study`` a run or a study of sibling runs.
"""
from __future__ import annotations

from ..rundir import Run as RunFiles
from ..rundir import Study, is_run_dir, load_study
from ..rundir import read_run as load_run_files

__all__ = ["RunFiles", "Study", "is_run_dir", "load_run_files", "load_study"]
