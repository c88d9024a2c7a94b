"""Optional experiment tracking: a finished run directory logged to MLflow.

Off unless asked (``mammodecomp cv --track``, or ``mammodecomp runs track
RUN`` afterwards); needs the ``track`` extra (``pip install
'mammodecomp[track]'``). The store is a local SQLite file, by default
``mlflow.db`` beside the run directory, with its artefacts in ``mlartifacts/``
next to it; no server. ``mlflow ui --backend-store-uri sqlite:///PATH/mlflow.db``
shows what was logged.

What is logged, all read from the run directory (which stays the source of
truth; the MLflow run is a copy):

* parameters: the resolved config, flattened to dotted keys
  (``train.lr``), plus ``run.version`` and ``run.manifest_hash``;
* per-epoch metrics of every fold: ``r{R}f{F}/<history column>`` at
  step = epoch;
* summary metrics: pooled out-of-fold ``auc`` with ``auc_ci_low`` and
  ``auc_ci_high``, the per-lesion AUC and its CI when the run has lesions,
  fold and repeat means and SDs, final train/validation AUC, the pooled
  metrics at 0.5 (``oof_<name>``) and times;
* artefacts: ``config.yaml``, ``run.json``, ``summary.json``, ``oof.csv``,
  and, when present, ``diagnosis.json``, ``report.html`` and every
  ``MODEL_CARD.md`` under the run (``mammodecomp export`` writes one).

The MLflow run id is written to ``RUN/mlflow.json``; logging the same run
directory again (after ``report`` or ``export``) adds the new artefacts and
any parameter or metric not yet logged to that same MLflow run.

MLflow's usage telemetry is switched off before it is imported (the
project's promise: nothing but ``data fetch`` touches the network).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from .errors import InputError
from .io import read_json, write_json

__all__ = ["log_run", "require_mlflow", "tracking_uri", "DB_FILE", "TRACK_FILE"]

DB_FILE = "mlflow.db"
TRACK_FILE = "mlflow.json"
ARTIFACTS = ["config.yaml", "run.json", "summary.json", "oof.csv", "diagnosis.json", "report.html"]


def _mlflow():
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"   # no usage reports leave the machine
    try:
        import mlflow
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise InputError("MLflow tracking needs the optional extra: pip install 'mammodecomp[track]'") from None
    return mlflow, MlflowClient


def require_mlflow() -> None:
    """InputError (naming the extra to install) when MLflow is not installed."""
    _mlflow()


def tracking_uri(store: str | Path) -> str:
    """``sqlite:///ABS/PATH`` for a file path; a string with ``://`` is used as given."""
    s = str(store)
    if "://" in s:
        return s
    return "sqlite:///" + str(Path(s).expanduser().resolve())


def _flat(d, prefix="") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict) and v and k not in ("params", "kwargs"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = "None" if v is None else str(v)
    return out


def _num(v):
    from .runs import finite_or_none
    return finite_or_none(v)


def _summary_metrics(s: dict) -> dict:
    m = {}
    for k in ("auc", "fold_auc_mean", "fold_auc_sd", "repeat_auc_mean", "repeat_auc_sd", "final_train_auc_mean",
              "final_val_auc_mean", "elapsed_s", "train_seconds", "n_rois", "n_patients"):
        m[k] = _num(s.get(k))
    ci = s.get("auc_ci") or [None, None]
    m["auc_ci_low"], m["auc_ci_high"] = _num(ci[0]), _num(ci[1])
    les = s.get("lesion") or {}
    if les:
        lci = les.get("auc_ci") or [None, None]
        m.update({"lesion_auc": _num(les.get("auc")), "lesion_auc_ci_low": _num(lci[0]),
                  "lesion_auc_ci_high": _num(lci[1]), "n_lesions": _num(les.get("n_lesions"))})
    for k, v in (s.get("metrics") or {}).items():
        m[f"oof_{k}"] = _num(v)
    return {k: v for k, v in m.items() if v is not None}


def _read(run_dir: Path):
    from .runs import read_run    # the one reader of run directories outside the run's owner
    return read_run(run_dir)


def log_run(run_dir: str | Path, store: str | Path | None = None, *, experiment: str = "mammodecomp") -> str:
    """Log a finished run directory to MLflow; return the MLflow run id.

    Parameters
    ----------
    run_dir : a finished run directory (``mammodecomp cv``).
    store : SQLite file (default ``RUN/../mlflow.db``) or a tracking URI.
    experiment : MLflow experiment name.
    """
    run_dir = Path(run_dir)
    run = _read(run_dir)
    store = Path(run_dir).resolve().parent / DB_FILE if store is None else store
    uri = tracking_uri(store)
    mlflow, MlflowClient = _mlflow()
    from mlflow.entities import Metric, Param, RunTag
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        art = (Path(str(store)).expanduser().resolve().parent / "mlartifacts").as_uri() if "://" not in str(store) \
            else None
        exp_id = client.create_experiment(experiment, artifact_location=art)
    else:
        exp_id = exp.experiment_id
    prev = read_json(run_dir / TRACK_FILE) if (run_dir / TRACK_FILE).is_file() else {}
    run_id = None
    if prev.get("tracking_uri") == uri and prev.get("run_id"):
        try:
            if client.get_run(prev["run_id"]).info.experiment_id == exp_id:
                run_id = prev["run_id"]
        except Exception:  # noqa: BLE001 - the store was deleted or replaced: a new MLflow run
            run_id = None
    if run_id is None:
        tags = {"mammodecomp.run_dir": str(run_dir.resolve()), "mammodecomp.recipe": run.recipe,
                "mlflow.runName": run_dir.name}
        run_id = client.create_run(exp_id, tags=tags, run_name=run_dir.name).info.run_id
    have = client.get_run(run_id).data
    params = _flat(run.config_dict)
    params["run.version"] = str(run.info.get("version"))
    params["run.manifest_hash"] = str(run.info.get("manifest_hash"))
    new_params = [Param(k, v[:6000]) for k, v in params.items() if k not in have.params]
    now = int(time.time() * 1000)
    metrics = []
    for (r, f), h in sorted(run.histories.items()):
        steps = h["epoch"].to_numpy() if "epoch" in h.columns else range(1, len(h) + 1)
        for col in h.columns:
            key = f"r{r}f{f}/{col}"
            if col == "epoch" or key in have.metrics:
                continue
            for step, v in zip(steps, h[col].to_numpy()):
                v = _num(v)
                if v is not None:
                    metrics.append(Metric(key, v, now, int(step)))
    metrics += [Metric(k, v, now, 0) for k, v in _summary_metrics(run.summary or {}).items()
                if k not in have.metrics]
    for i in range(0, max(len(new_params), len(metrics)), 100):
        client.log_batch(run_id, metrics=metrics[i:i + 100], params=new_params[i:i + 100],
                         tags=[RunTag("mammodecomp.logged", str(now))] if i == 0 else [])
    for name in ARTIFACTS:
        if (run_dir / name).is_file():
            client.log_artifact(run_id, str(run_dir / name))
    for card in sorted(run_dir.rglob("MODEL_CARD.md")):
        rel = card.parent.relative_to(run_dir)
        client.log_artifact(run_id, str(card), artifact_path=str(rel) if str(rel) != "." else None)
    client.set_terminated(run_id, "FINISHED")
    write_json(run_dir / TRACK_FILE, {"tracking_uri": uri, "experiment": experiment, "experiment_id": exp_id,
                                      "run_id": run_id})
    return run_id
