"""Several runs on the same data and folds, side by side (a *study*).

A study directory holds one run directory per arm (``STUDY/<arm>/``) and
``study.json`` listing them. Arms differ by recipe or by input variant
(raw ROI, components, components + raw); the grouped split plan depends only
on the manifest and the CV seed, so grouped arms share their folds exactly
and paired tests (DeLong) on their out-of-fold predictions are valid.
"""
from __future__ import annotations

from pathlib import Path

from .config import Config
from .io import read_json, write_json
from .train import cross_validate

#: arm name -> (recipe, overrides)
DEFAULT_ARMS = {
    "small": ("small", []),
    "seed": ("seed", []),
    "raw": ("small", ["decomposition.variant=raw"]),
    "components+raw": ("small", ["decomposition.variant=components+raw"]),
}


def run_study(base: Config, out: str | Path, arms: dict[str, tuple[str, list[str]]] | None = None, *,
              progress_bars: bool = True) -> Path:
    """Run each arm (recipe + overrides on top of ``base``'s data/decomposition/cv).

    ``base`` supplies the data, decomposition and CV sections; each arm starts
    from its recipe, takes those sections from ``base`` (except what the arm
    overrides), then its own overrides.
    """
    from .config import resolve_config
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arms = arms or DEFAULT_ARMS
    listing = read_json(out / "study.json") if (out / "study.json").is_file() else {"arms": {}}
    for name, (recipe, overrides) in arms.items():
        shared = [f"data={_flow(base.data.model_dump(mode='json'))}",
                  f"decomposition={_flow(base.decomposition.model_dump(mode='json'))}"]
        cfg = resolve_config(recipe=recipe, overrides=shared + _cv_overrides(base, recipe) + list(overrides))
        run = cross_validate(cfg, out / name, progress_bars=progress_bars)
        listing["arms"][name] = {"recipe": recipe, "overrides": list(overrides), "path": run.name}
        write_json(out / "study.json", listing)
    return out


def _cv_overrides(base: Config, recipe: str) -> list[str]:
    cv = base.cv.model_dump(mode="json")
    if recipe == "seed":
        cv.pop("scheme")      # the seed recipe keeps its contiguous folds
    return [f"cv.{k}={v}" for k, v in cv.items()]


def _flow(d: dict) -> str:
    import yaml
    return yaml.safe_dump(d, default_flow_style=True, width=10_000).strip()
