"""Page weight of the report's case browser per 1000 out-of-fold ROIs.

Usage: python bench/browser_weight.py [--rois 1000] [--size 64] [--k 5]

Synthetic ROIs (mammodecomp.synth) decomposed with starlet, a run directory
fabricated around them (tests/diagnose_support.make_run: real split
plan, random OOF probabilities), then the browser section built as the
report builds it; prints its size in MB per 1000 ROIs and the build time.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rois", type=int, default=1000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--k", type=int, default=5)
    a = ap.parse_args()
    from test_diagnose_support import make_manifest, make_run

    from mammodecomp.decompose import decompose
    from mammodecomp.diagnose._run import load_run_files
    from mammodecomp.report.browser import case_browser_section
    from mammodecomp.synth import generate
    imgs, _ = generate(n_patients=a.rois // 2, size=a.size, seed=0)
    df, _ = make_manifest(a.rois // 2, 0, size=a.size)
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        make_run(run, recipe="small", manifest=(df, imgs[: len(df)].astype(np.float32)))
        comps = decompose(imgs[: len(df)].astype(np.float32), "starlet", k=a.k)
        np.save(run / "components.npy", comps.astype(np.float16))
        info = json.loads((run / "run.json").read_text())
        info["channels"] = [f"starlet{i}" for i in range(a.k)]
        (run / "run.json").write_text(json.dumps(info))
        rf = load_run_files(run)
        t0 = time.perf_counter()
        html = case_browser_section(rf)
        dt = time.perf_counter() - t0
    mb = len(html.encode()) / 1e6
    print(f"{len(df)} ROIs at {a.size} px, K={a.k}: browser section {mb:.2f} MB "
          f"({mb * 1000 / len(df):.2f} MB per 1000 ROIs), built in {dt:.1f} s")


if __name__ == "__main__":
    main()
