"""Benchmark of the synthetic ROI generator; writes its BENCHMARKS.md section and the montage.

Usage (from the repository root)::

    .venv/bin/python bench/synth.py                 # timings + montage + BENCHMARKS.md section
    .venv/bin/python bench/synth.py --no-write      # print only
    .venv/bin/python bench/synth.py --montage-only  # docs/figures/synth_montage.png only

Measures, on this machine:

* ``generate`` of 500 patients x 2 views = 1000 ROIs of 320x320 (the issue's
  target: under 30 s on 2 cores), all FFT workers and one worker;
* ``write_synthetic`` of the CLI default (200 patients, 400 ROIs, 16-bit PNG);
* the oracle AUC at difficulty 0, 0.5, 1 (4000 patients, no pixels).

The "Synthetic generator" section of BENCHMARKS.md is replaced (or appended)
atomically; the other sections are kept.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mammodecomp import synth  # noqa: E402
from mammodecomp.io import atomic_write  # noqa: E402

SECTION = "## Synthetic generator"


def _timed(fn):
    """(wall seconds, process CPU seconds, result) of one call."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def montage(path: Path, seed: int = 0) -> Path:
    """2 x 6 montage: benign (top) and malignant (bottom), 3 masses + 3 calcifications each, CC views.

    Within a class and type the examples sit at the 15th, 40th and 65th percentile of
    the oracle probability (clear to ambiguous), not hand picked.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x, m = synth.generate(n_patients=60, size=320, seed=seed)
    fig, axes = plt.subplots(2, 6, figsize=(15, 6.6))
    for r, lab in enumerate((0, 1)):
        picks = []
        for lt in ("mass", "calcification"):
            sel = m[(m["label"] == lab) & (m["lesion_type"] == lt) & (m["view"] == "CC")]
            # from clear to ambiguous: the class's own 15th, 40th and 65th percentile of oracle p
            sel = sel.sort_values("oracle_prob", ascending=(lab == 0))
            picks += [sel.index[int(q * (len(sel) - 1))] for q in (0.15, 0.4, 0.65)]
        for c, i in enumerate(picks):
            ax = axes[r, c]
            ax.imshow(x[i], cmap="gray", vmin=0.0, vmax=1.0, interpolation="lanczos")
            ax.set_xticks([])
            ax.set_yticks([])
            row = m.loc[i]
            ax.set_title(f"{row['label_name']} {row['lesion_type']}\noracle p={row['oracle_prob']:.2f}",
                         fontsize=10, color="#1a5e20" if lab == 0 else "#8b0000")
    fig.suptitle(f"mammodecomp.synth defaults (320 px, difficulty 0.5, seed {seed}): "
                 "benign (top) vs malignant (bottom), each from clear to ambiguous", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97), h_pad=2.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=80)
    plt.close(fig)
    os.chmod(path, 0o644)
    return path


def run() -> dict:
    synth.generate(n_patients=4, size=320, seed=99)          # warm-up (imports, FFT plans)
    ncpu = os.cpu_count() or 1
    t_all, c_all, (x, m) = _timed(lambda: synth.generate(n_patients=500, size=320, seed=0, workers=ncpu))
    t_one, c_one, _ = _timed(lambda: synth.generate(n_patients=500, size=320, seed=0, workers=1))
    tmp = Path(tempfile.mkdtemp())
    try:
        t_write, c_write, _ = _timed(lambda: synth.write_synthetic(tmp / "s", n_patients=200, size=320, seed=0))
        mb = sum(p.stat().st_size for p in (tmp / "s").rglob("*") if p.is_file()) / 2 ** 20
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    aucs = {d: synth.oracle_auc(synth.sample_manifest(4000, seed=0, difficulty=d, views=("CC",)))
            for d in (0.0, 0.5, 1.0)}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return dict(load=load, ncpu=ncpu, t_all=t_all, t_one=t_one, t_write=t_write,
                c_all=c_all, c_one=c_one, c_write=c_write, mb=mb, aucs=aucs,
                oracle_1000=synth.oracle_auc(m), n=len(x))


def section(r: dict) -> str:
    import torch  # only for the version line
    machine = (f"cpu2: this container, {r['ncpu']} CPU cores ({platform.machine()}), "
               f"Python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}; "
               f"1-min load average {r['load']:.1f} at the end: other jobs shared the cores")
    a = r["aucs"]
    return "\n".join([
        SECTION,
        "",
        "Command: `.venv/bin/python bench/synth.py` (machine: " + machine + ").",
        "",
        "| what | wall time | process CPU time |",
        "| --- | --- | --- |",
        f"| `generate(n_patients=500)`: {r['n']} ROIs of 320x320, FFT workers={r['ncpu']} "
        f"| {r['t_all']:.1f} s ({1000 * r['t_all'] / r['n']:.1f} ms/ROI) | {r['c_all']:.1f} s |",
        f"| same, FFT workers=1 | {r['t_one']:.1f} s | {r['c_one']:.1f} s |",
        f"| `write_synthetic(n_patients=200)` (CLI default: 400 16-bit PNG + manifest, {r['mb']:.0f} MiB) "
        f"| {r['t_write']:.1f} s | {r['c_write']:.1f} s |",
        "",
        f"Target from the issue: 1000 ROIs of 320x320 in under 30 s on 2 cores. "
        f"Oracle AUC of that 1000-ROI set: {r['oracle_1000']:.3f}.",
        f"Oracle AUC by difficulty (4000 patients, no label noise): 0 -> {a[0.0]:.3f}, "
        f"0.5 -> {a[0.5]:.3f}, 1 -> {a[1.0]:.3f} (closed form Phi(d/sqrt 2): "
        f"{synth.expected_oracle_auc(0):.3f}, {synth.expected_oracle_auc(0.5):.3f}, "
        f"{synth.expected_oracle_auc(1):.3f}).",
        "Montage: docs/figures/synth_montage.png.",
        "",
    ])


def write_section(path: Path, text: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import write_section as _write
    _write(text, "Synthetic generator", path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", action="store_true", help="print the section, write nothing")
    ap.add_argument("--montage-only", action="store_true", help="only make docs/figures/synth_montage.png")
    a = ap.parse_args(argv)
    if not a.no_write:
        print("montage:", montage(ROOT / "docs" / "figures" / "synth_montage.png"))
    if a.montage_only:
        return
    text = section(run())
    print(text)
    if not a.no_write:
        write_section(ROOT / "BENCHMARKS.md", text)


if __name__ == "__main__":
    main()
