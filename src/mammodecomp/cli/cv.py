"""`mammodecomp cv` and `mammodecomp study`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import _options as o
from . import app


def print_summary(cfg, run: Path, note: str | None = None) -> None:
    """The lines every cross-validating command prints about a finished run."""
    from ..io import read_json
    from ..rundir import SUMMARY
    s = read_json(Path(run) / SUMMARY)
    lo, hi = s.get("auc_ci") or [None, None]
    ci = f" (95% CI {lo:.3f}-{hi:.3f})" if lo is not None and hi is not None else ""
    sd = f", SD over repeats {s['auc_sd_repeats']:.3f}" if s.get("auc_sd_repeats") is not None else ""
    how = ", ".join(x for x in (s.get("auc_definition", "pooled"), note) if x)
    typer.echo(f"{cfg.recipe}: out-of-fold AUC {s['auc']:.3f}{ci}{sd} over {s['n_rois']} ROIs ({how}); run in {run}")
    if "lesion" in s:   # several views of one lesion: their mean log-odds, one score per lesion
        les = s["lesion"]
        typer.echo(f"{cfg.recipe}: lesion-level AUC {les['auc']:.3f} (95% CI {les['auc_ci'][0]:.3f}-"
                   f"{les['auc_ci'][1]:.3f}) over {les['n_lesions']} lesions (views' mean log-odds)")


@app.command("cv")
def cv_cmd(
    config: Optional[Path] = o.CONFIG,
    recipe: Optional[str] = o.RECIPE,
    set_: List[str] = o.SET,
    out: Path = o.out_option("runs/cv", "Run directory (resumed if it exists with the same config)."),
    overwrite: bool = o.OVERWRITE,
    track: bool = typer.Option(False, "--track", help="Also log the run to MLflow (SQLite store beside the run; needs the track extra)."),
    track_store: Optional[Path] = typer.Option(None, "--track-store", help="MLflow SQLite file (default OUT/../mlflow.db) or tracking URI."),
):
    """Cross-validate a recipe into a run directory (resumable).

    Example: mammodecomp cv --recipe small --set data.synth.n_patients=100 --set train.epochs=10 --out runs/small
    """
    from ..config import resolve_config
    from ..train import cross_validate
    cfg = resolve_config(config, recipe=recipe, overrides=set_)
    if track:   # fail before training, not after, when the track extra is missing
        from ..track import require_mlflow
        require_mlflow()
    run = cross_validate(cfg, out, overwrite=overwrite)
    print_summary(cfg, run)
    if track:   # experiment tracking, read from the finished run directory
        from ..track import log_run
        typer.echo(f"{cfg.recipe}: logged to MLflow as run {log_run(run, track_store)}")


@app.command("study")
def study_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config for the shared data/decomposition/cv sections."),
    set_: List[str] = typer.Option([], "--set", "-s", help="Override a config key (repeatable); data.*, decomposition.* and cv.* are shared, train.* and model.* go to every arm."),
    arms: str = typer.Option("small,seed,raw,components+raw", "--arms", help="Comma-separated arms: small, seed, raw, components+raw, finetune, probe."),
    out: Path = o.out_option("runs/study", "Study directory (one run directory per arm)."),
):
    """Run several recipes / input variants on the same folds, side by side.

    Example: mammodecomp study --arms small,seed,raw --set data.synth.n_patients=100 --out runs/study
    """
    from ..config import resolve_config
    from ..study import resolve_arms, run_study
    base = resolve_config(config, recipe="small", overrides=set_)
    run_study(base, out, resolve_arms(arms.split(","), set_))
    typer.echo(f"study written to {out}; next: mammodecomp report {out}")
