"""Why does a recipe over-fit? Evidence, findings and a ranked verdict.

:func:`diagnose` reads a finished run directory (or a study directory of
sibling runs, see :mod:`mammodecomp.study`), gathers evidence in families,
one module each:

========================  ==================================================
``split``                 class balance, shared patients, near duplicates,
                          manifest order / contiguous folds
``metric``                batch-averaged f1_m vs whole-fold F1
``curves``                generalisation gap, best epoch, oscillation
``capacity``              parameters (per training ROI), FLOPs, largest layer
``features``              shortcuts, permutation null, chance, texture baseline
``ablation``              raw vs components vs both; recipe comparisons
``attribution``           channel occlusion, Grad-CAM examples
``verdict``               explicit rules -> ranked causes
========================  ==================================================

and writes ``diagnosis.json`` (atomically) beside the run, plus
``diagnosis_cams.npz`` with the Grad-CAM maps the report draws.

Invariants
----------
* Nothing is evaluated on data its model was trained on: occlusion and
  Grad-CAM use each fold's model on that fold's test ROIs.
* Baselines, shortcuts, the null and the ablation use the run's own folds.
* One failing evidence step becomes a finding saying so; the rest still runs.
"""
from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path

import numpy as np

from ..io import atomic_write, write_json
from ..rundir import INPUT_KEYS
from ._common import SEVERITIES, finding, jsonable
from ._run import RunFiles, Study, load_run_files, load_study
from .attribution import MAX_ATTR_ROIS
from .verdict import rank_causes

__all__ = ["diagnose", "load_study", "load_run_files", "RunFiles", "Study", "SEVERITIES",
           "DIAGNOSIS_FILE", "CAMS_FILE"]

DIAGNOSIS_FILE = "diagnosis.json"
CAMS_FILE = "diagnosis_cams.npz"
FORMAT = 1


def _step(name: str, fn, timings: dict, errors: list, family: str):
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001 - one step failing must not hide the others
        errors.append({"step": name, "error": f"{type(e).__name__}: {e}"})
        out = [finding(f"{family}.error", family, f"{name}: not measured", "info",
                       f"this step failed: {type(e).__name__}: {e}", values={"skipped": True})]
    timings[name] = round(time.perf_counter() - t0, 3)
    return out


def _headline(run: RunFiles, head: dict) -> dict:
    m = run.manifest
    return jsonable({
        **head, "recipe": run.recipe, "model": run.cfg("model.name"),
        "pretrained": bool(run.cfg("model.pretrained", False)),
        "decomposition": run.cfg("decomposition.method"), "k": run.cfg("decomposition.k"),
        "variant": run.cfg("decomposition.variant"), "channels": run.info.get("channels"),
        "roi_size": run.cfg("data.roi_size"), "source": run.cfg("data.source"),
        "cv_scheme": run.cfg("cv.scheme"), "n_folds": run.cfg("cv.n_folds"),
        "n_repeats": run.cfg("cv.n_repeats"), "epochs": run.cfg("train.epochs"),
        "batch_size": run.cfg("train.batch_size"), "lr": run.cfg("train.lr"),
        "n_manifest": int(len(m)), "n_patients_manifest": int(m["patient_id"].nunique()),
        "class_counts": {str(k): int(v) for k, v in m["label"].value_counts().sort_index().items()},
    })


def diagnose(run_or_study_dir: str | Path, n_permutations: int = 100, seed: int = 0, *,
             max_model_rois: int = MAX_ATTR_ROIS, load_model=None, store: str | Path | None = None) -> dict:
    """Diagnose a finished run (or a study's primary run) and write ``diagnosis.json``.

    Parameters
    ----------
    run_or_study_dir : a run directory written by ``train.cross_validate``, or
        a study directory (``study.json`` + one run directory per arm); the
        study's primary run is its ``seed`` arm when there is one.
    n_permutations : label permutations for the null of the feature baseline
        (0 skips it; it dominates the run time).
    seed : seed of the permutations and of the subsamples.
    max_model_rois : at most this many OOF ROIs for channel occlusion.
    load_model : ``(run_dir, repeat, fold) -> nn.Module`` on raw components;
        ``fit.load_fold_model`` by default (tests pass a stand-in).
    store : the folder of the runs' decomposition store, when the runs were
        moved without it (the paths run.json records lead nowhere).

    Returns
    -------
    dict
        ``{"format", "created", "path", "primary", "is_study", "siblings",
        "headline", "verdict", "findings", "comparisons", "errors",
        "timings"}`` -- the content of ``diagnosis.json``.

    Notes
    -----
    Every finding carries what was measured, the figure showing it, a
    severity and the fix; the verdict's rules are documented in
    :mod:`mammodecomp.diagnose.verdict`.
    """
    from . import ablation as ab
    from . import attribution as at
    from . import capacity as cap
    from . import curves as cu
    from . import features as fe
    from . import metric as me
    from . import split as sp

    path = Path(run_or_study_dir)
    study = load_study(path, store=store)
    run = study.primary
    for r in (run, *study.siblings.values()):   # a missing input is one line now, not "not measured" later
        for key in INPUT_KEYS:
            r.input_path(key)
    timings: dict = {}
    errors: list = []
    findings: list[dict] = []
    findings += _step("split", lambda: sp.run_split_checks(run), timings, errors, "split")
    findings += _step("metric", lambda: [me.batch_vs_whole(run)], timings, errors, "metric")
    findings += _step("curves", lambda: cu.learning_curves(run), timings, errors, "training")
    findings += _step("capacity", lambda: [cap.capacity(run, load_model)], timings, errors, "capacity")

    from ._common import safe_auc
    head = {"auc": safe_auc(run.pooled["label"], run.pooled["prob"]), "ci_low": None, "ci_high": None}
    try:
        head = fe.headline(run)
    except Exception as e:  # noqa: BLE001
        errors.append({"step": "headline", "error": f"{type(e).__name__}: {e}"})
    feats = fe.FeatureCache(run)
    findings += _step("shortcuts", lambda: [fe.shortcuts(run, head["auc"])], timings, errors, "shortcut")
    findings += _step("null", lambda: fe.null_findings(run, feats, head, n_permutations, seed),
                      timings, errors, "null")
    probs_box: dict = {}

    def _baseline():
        f, probs = fe.baseline_comparison(run, feats)
        probs_box.update(probs)
        return [f]
    findings += _step("baseline", _baseline, timings, errors, "baseline")
    findings += _step("ablation", lambda: [ab.ablation(study, probs_box, feats)], timings, errors, "ablation")
    comparisons: list = []
    try:
        comparisons = ab.recipe_comparisons(study)
    except Exception as e:  # noqa: BLE001
        errors.append({"step": "recipe_comparisons", "error": f"{type(e).__name__}: {e}"})
    cams: dict = {}

    def _attr():
        fs, c = at.attribution(run, max_rois=max_model_rois, seed=seed, load_model=load_model)
        cams.update(c)
        return fs
    findings += _step("attribution", _attr, timings, errors, "attribution")

    causes = rank_causes(findings, comparisons)
    out = jsonable({
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "path": str(path.resolve()), "primary": run.name, "primary_path": str(run.path.resolve()),
        "is_study": study.is_study, "siblings": sorted(study.siblings),
        "headline": _headline(run, head), "verdict": causes, "findings": findings,
        "comparisons": comparisons, "errors": errors, "timings": timings,
        "settings": {"n_permutations": n_permutations, "seed": seed, "max_model_rois": max_model_rois},
    })
    if cams:
        with atomic_write(path / CAMS_FILE, "wb") as f:
            np.savez_compressed(f, **cams)
    elif (path / CAMS_FILE).exists():
        (path / CAMS_FILE).unlink()
    write_json(path / DIAGNOSIS_FILE, out)
    return out


from .._callable import make_callable  # noqa: E402

make_callable(__name__)
