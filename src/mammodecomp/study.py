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
from .errors import InputError
from .io import read_json, write_json
from .rundir import STUDY_JSON
from .train import cross_validate

#: every arm a study can run: arm name -> (recipe, overrides)
ARMS = {
    "small": ("small", []),
    "seed": ("seed", []),
    "raw": ("small", ["decomposition.variant=raw"]),
    "components+raw": ("small", ["decomposition.variant=components+raw"]),
    "finetune": ("finetune", []),
    "probe": ("probe", []),
}
#: the arms of a study when none are named
DEFAULT_ARMS = ("small", "seed", "raw", "components+raw")


def resolve_arms(names=DEFAULT_ARMS, overrides=(), per_arm: dict | None = None) -> dict[str, tuple[str, list[str]]]:
    """Arm names -> ``{name: (recipe, overrides)}``, the one place arms are resolved.

    ``overrides`` (``key=value``) whose section is ``train`` or ``model`` go to
    every arm, on top of its recipe (data, decomposition and cv are shared
    through the study's base config); ``per_arm`` adds overrides to one arm.

    >>> resolve_arms(["raw", "seed"], ["train.epochs=3", "data.roi_size=32"])
    {'raw': ('small', ['decomposition.variant=raw', 'train.epochs=3']), 'seed': ('seed', ['train.epochs=3'])}
    >>> resolve_arms(["smal"])
    Traceback (most recent call last):
    ...
    mammodecomp.errors.InputError: unknown arm 'smal'; expected some of: small, seed, raw, components+raw, finetune, probe
    """
    shared = [s for s in overrides if s.split("=", 1)[0].strip().split(".")[0] in ("train", "model")]
    out = {}
    for a in (str(n).strip() for n in names):
        if not a:
            continue
        if a not in ARMS:
            raise InputError(f"unknown arm '{a}'; expected some of: {', '.join(ARMS)}")
        recipe, ov = ARMS[a]
        out[a] = (recipe, list(ov) + shared + list((per_arm or {}).get(a, [])))
    if not out:
        raise InputError(f"no arms given; expected some of: {', '.join(ARMS)}")
    return out


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
    arms = arms or resolve_arms()
    listing = read_json(out / STUDY_JSON) if (out / STUDY_JSON).is_file() else {"arms": {}}
    for name, (recipe, overrides) in arms.items():
        shared = [f"data={_flow(base.data.model_dump(mode='json'))}",
                  f"decomposition={_flow(base.decomposition.model_dump(mode='json'))}"]
        cfg = resolve_config(recipe=recipe, overrides=shared + _cv_overrides(base, recipe) + list(overrides))
        run = cross_validate(cfg, out / name, progress_bars=progress_bars)
        listing["arms"][name] = {"recipe": recipe, "overrides": list(overrides), "path": run.name}
        write_json(out / STUDY_JSON, listing)
    return out


def _cv_overrides(base: Config, recipe: str) -> list[str]:
    cv = base.cv.model_dump(mode="json")
    if recipe == "seed":
        cv.pop("scheme")      # the seed recipe keeps its contiguous folds
    return [f"cv.{k}={v}" for k, v in cv.items()]


def _flow(d: dict) -> str:
    import yaml
    return yaml.safe_dump(d, default_flow_style=True, width=10_000).strip()
