"""The embedded end-to-end study: synthetic ROIs -> decomposition -> recipes -> diagnosis -> report."""
from __future__ import annotations

from pathlib import Path


def run_demo(out: str | Path, *, patients: int = 100, roi_size: int = 64, epochs_small: int = 15,
             epochs_seed: int = 40, difficulty: float = 0.2, arms: tuple[str, ...] = ("small", "seed"),
             permutations: int = 100, progress_bars: bool = True) -> Path:
    """Synthetic ROIs in patient pairs -> decomposition -> small and seed recipes
    on the same data -> diagnosis -> report. Returns the report's path.

    Add ``"raw"`` and ``"components+raw"`` to ``arms`` for the network ablation
    (the diagnosis runs a feature-baseline ablation either way). The store
    lies in ``out/.store`` and the runs record it relative to themselves, so
    the study directory can be moved as a whole.
    """
    from .config import resolve_config
    from .diagnose import diagnose
    from .report import write_report
    from .study import resolve_arms, run_study
    out = Path(out)
    base = resolve_config(recipe="small", overrides=[
        f"data.synth.n_patients={patients}", f"data.synth.size={max(160, roi_size)}",
        f"data.synth.difficulty={difficulty}",
        f"data.roi_size={roi_size}", "cv.n_folds=5", f"decomposition.store={out / '.store'}"])
    # the question ran 33 Adam steps per epoch (1042 training ROIs, batch 32); on the demo's
    # 160 training ROIs batch 8 keeps a comparable number of steps, so the copy can memorise
    per_arm = {a: [f"train.epochs={epochs_small}"] for a in arms}
    per_arm["seed"] = [f"train.epochs={epochs_seed}", "train.batch_size=8"]
    run_study(base, out, resolve_arms(arms, per_arm=per_arm), progress_bars=progress_bars)
    diagnose(out, n_permutations=permutations)
    return write_report(out)
