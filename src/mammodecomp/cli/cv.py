"""`mammodecomp cv` and `mammodecomp study`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import app


@app.command("cv")
def cv_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (sections data, decomposition, model, train, cv)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help="seed | small | finetune | probe (default: the config's, else small)."),
    set_: List[str] = typer.Option([], "--set", "-s", help="Override a config key, e.g. --set train.epochs=10 (repeatable)."),
    out: Path = typer.Option(Path("runs/cv"), "--out", "-o", help="Run directory (resumed if it exists with the same config)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing run directory first."),
    track: bool = typer.Option(False, "--track", help="Also log the run to MLflow (SQLite store beside the run; needs the track extra)."),
    track_store: Optional[Path] = typer.Option(None, "--track-store", help="MLflow SQLite file (default OUT/../mlflow.db) or tracking URI."),
):
    """Cross-validate a recipe into a run directory (resumable).

    Example: mammodecomp cv --recipe small --set data.synth.n_patients=100 --set train.epochs=10 --out runs/small
    """
    from ..config import resolve_config
    from ..io import read_json
    from ..train import cross_validate
    cfg = resolve_config(config, recipe=recipe, overrides=set_)
    if track:   # fail before training, not after, when the track extra is missing
        from ..track import require_mlflow
        require_mlflow()
    run = cross_validate(cfg, out, overwrite=overwrite)
    s = read_json(run / "summary.json")
    lo, hi = s.get("auc_ci", [None, None])
    ci = f" (95% CI {lo:.3f}-{hi:.3f})" if lo is not None else ""
    typer.echo(f"{cfg.recipe}: out-of-fold AUC {s['auc']:.3f}{ci} over {s['n_rois']} ROIs; run in {run}")
    if "lesion" in s:   # several views of one lesion: their mean log-odds, one score per lesion
        les = s["lesion"]
        typer.echo(f"{cfg.recipe}: lesion-level AUC {les['auc']:.3f} (95% CI {les['auc_ci'][0]:.3f}-"
                   f"{les['auc_ci'][1]:.3f}) over {les['n_lesions']} lesions (views' mean log-odds)")
    if track:   # issue 19: experiment tracking, read from the finished run directory
        from ..track import log_run
        typer.echo(f"{cfg.recipe}: logged to MLflow as run {log_run(run, track_store)}")


@app.command("study")
def study_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config for the shared data/decomposition/cv sections."),
    set_: List[str] = typer.Option([], "--set", "-s", help="Override a config key (repeatable); data.*, decomposition.* and cv.* are shared, train.* and model.* go to every arm."),
    arms: str = typer.Option("small,seed,raw,components+raw", "--arms", help="Comma-separated arms: small, seed, raw, components+raw, finetune, probe."),
    out: Path = typer.Option(Path("runs/study"), "--out", "-o", help="Study directory (one run directory per arm)."),
):
    """Run several recipes / input variants on the same folds, side by side.

    Example: mammodecomp study --arms small,seed,raw --set data.synth.n_patients=100 --out runs/study
    """
    from ..config import resolve_config
    from ..errors import InputError
    from ..study import DEFAULT_ARMS, run_study
    base = resolve_config(config, recipe="small", overrides=set_)
    # train.* and model.* overrides apply to every arm (on top of its recipe)
    per_arm = [s for s in set_ if s.split("=", 1)[0].strip().split(".")[0] in ("train", "model")]
    known = dict(DEFAULT_ARMS, finetune=("finetune", []), probe=("probe", []))
    chosen = {}
    for a in [a.strip() for a in arms.split(",") if a.strip()]:
        if a not in known:
            raise InputError(f"unknown arm '{a}'; expected some of: {', '.join(known)}")
        chosen[a] = (known[a][0], list(known[a][1]) + per_arm)
    run_study(base, out, chosen)
    typer.echo(f"study written to {out}; next: mammodecomp report {out}")
