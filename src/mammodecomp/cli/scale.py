"""`mammodecomp scale ...`: decomposition on Ray, cross-validation on Ray or torchrun."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import _options as o
from . import app

scale_app = typer.Typer(no_args_is_help=True,
                        help="Scale out: decompose with Ray; folds as Ray tasks or data-parallel with torchrun.")
app.add_typer(scale_app, name="scale")

_ADDRESS = typer.Option(None, "--address", help="Ray cluster address ('auto' on a cluster node, ray://host:10001); default: start a local Ray.")


@scale_app.command("decompose")
def decompose_cmd(
    config: Optional[Path] = o.CONFIG,
    recipe: Optional[str] = o.RECIPE,
    set_: List[str] = o.SET,
    out: Path = typer.Option(Path("runs/cv"), "--out", "-o", help="The run directory the study will use (locates the default store)."),
    address: Optional[str] = _ADDRESS,
    engine: str = typer.Option("data", "--engine", help="data (Ray Data map_batches) | tasks (plain Ray tasks)."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="GPUs per decomposition worker (0: CPU workers; 0.5: two per GPU)."),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", help="CPUs per worker."),
    chunk_rows: int = typer.Option(256, "--chunk-rows", help="Manifest rows per ROI-cutting task."),
):
    """Cut ROIs and decompose them on Ray workers into the store a `cv` run reads.

    Example: mammodecomp scale decompose --config study.yaml --out runs/big --address auto --gpus-per-worker 1
    """
    from ..config import resolve_config
    from ..errors import InputError
    from ..scale.ray_decompose import ray_prepare_store
    if engine not in ("data", "tasks"):
        raise InputError(f"--engine must be data or tasks, got {engine!r}")
    cfg = resolve_config(config, recipe=recipe, overrides=set_)
    path = ray_prepare_store(cfg, out, engine=engine, num_gpus_per_worker=gpus_per_worker,
                             num_cpus_per_worker=cpus_per_worker, chunk_rows=chunk_rows, address=address)
    typer.echo(f"store entry {path}; next: mammodecomp scale cv ... --out {out}")


@scale_app.command("cv")
def cv_cmd(
    config: Optional[Path] = o.CONFIG,
    recipe: Optional[str] = o.RECIPE,
    set_: List[str] = o.SET,
    out: Path = o.out_option("runs/cv", "Run directory (resumed if it exists with the same config)."),
    runner: str = typer.Option("ray", "--runner", help="ray (one task per fold) | torchrun (each fold data-parallel on this machine) | serial | prepare (write the run directory, train nothing, print one torchrun command per pending fold)."),
    address: Optional[str] = _ADDRESS,
    gpus_per_fold: Optional[float] = typer.Option(None, "--gpus-per-fold", help="Ray: GPUs per fold (default 1 if the cluster has GPUs, else 0; 0.25 packs four folds on a GPU)."),
    cpus_per_fold: float = typer.Option(1.0, "--cpus-per-fold", help="Ray: CPUs per fold."),
    nproc_per_node: int = typer.Option(2, "--nproc-per-node", help="torchrun: processes (GPUs) per fold."),
    overwrite: bool = o.OVERWRITE,
):
    """Cross-validate with the folds on a Ray cluster or each fold under torchrun.

    The run directory is the one `mammodecomp cv` writes.

    Example: mammodecomp scale cv --config study.yaml --runner ray --address auto --out runs/big
    """
    from ..config import resolve_config
    from ..errors import InputError
    from ..train import cross_validate, prepare_run
    from .cv import print_summary
    cfg = resolve_config(config, recipe=recipe, overrides=set_)
    if runner == "ray":
        from ..scale.ray_cv import RayFoldRunner
        fold_runner = RayFoldRunner(address=address, num_gpus_per_fold=gpus_per_fold,
                                    num_cpus_per_fold=cpus_per_fold)
    elif runner == "torchrun":
        from ..scale.ddp import TorchrunFoldRunner
        fold_runner = TorchrunFoldRunner(nproc_per_node=nproc_per_node)
    elif runner in ("serial", "prepare"):
        fold_runner = None
    else:
        raise InputError(f"--runner must be ray, torchrun, serial or prepare, got {runner!r}")
    if runner == "prepare":
        prep, lock = prepare_run(cfg, out, overwrite=overwrite)
        lock.release()
        typer.echo(f"run directory {out} prepared; {len(prep.tasks)} fold(s) to train, e.g. on each node:")
        for t in prep.tasks:
            typer.echo(f"  torchrun --nnodes NNODES --nproc_per_node {nproc_per_node} --rdzv_backend c10d "
                       f"--rdzv_endpoint HEAD:29400 -m mammodecomp.scale.ddp {out} --repeat {t.repeat} --fold {t.fold}")
        typer.echo(f"then gather: mammodecomp scale cv <same options> --runner serial --out {out}")
        return
    run = cross_validate(cfg, out, overwrite=overwrite, fold_runner=fold_runner)
    print_summary(cfg, run, note=runner)
