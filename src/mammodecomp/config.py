"""One validated configuration for every stage.

A study is described by a :class:`Config` (pydantic, unknown keys refused).
It starts from a named *recipe* (``seed``, ``small``, ``finetune``, ``probe``)
whose values are defaults that a YAML file and ``--set key=value`` overrides
replace. The resolved config, every default spelled out, is written to the
run directory.

>>> cfg = resolve_config(recipe="small", overrides=["train.epochs=3", "cv.n_folds=3"])
>>> cfg.train.epochs, cfg.cv.n_folds, cfg.model.name
(3, 3, 'small')
>>> resolve_config(overrides=["train.epoch=3"])
Traceback (most recent call last):
...
mammodecomp.errors.InputError: config field 'train.epoch': unknown key (did you mean 'train.epochs'?); expected one of: ...
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InputError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SynthConfig(_Strict):
    n_patients: int = Field(150, ge=4)
    seed: int = 0
    difficulty: float = Field(0.5, ge=0, le=1)
    label_noise: float = Field(0.0, ge=0, le=0.5)
    prevalence: float = Field(0.5, gt=0, lt=1)
    size: int = Field(128, ge=32)
    label_ordered: bool = False  # sort the manifest by label, as many exported tables are


class DataConfig(_Strict):
    source: str = "synthetic"
    root: str | None = None          # data set folder (or synthetic output folder)
    manifest: str | None = None      # a manifest file instead of a source
    task: Literal["benign-malignant", "normal-abnormal"] = "benign-malignant"
    roi_size: int = Field(64, ge=16, le=1024)
    crop_mode: Literal["context", "fixed"] = "context"
    fov_mm: float | None = Field(None, gt=0)
    synth: SynthConfig = SynthConfig()
    # a null run: labels permuted between patients (each patient keeps one label pattern)
    permute_labels: bool = False
    permute_seed: int = 0


class DecompositionConfig(_Strict):
    method: str = "starlet"
    k: int = Field(5, ge=1, le=16)
    params: dict[str, Any] = {}
    variant: Literal["components", "raw", "components+raw"] = "components"
    store: str | None = None          # cache folder; default: <out>/../.store


class ModelConfig(_Strict):
    name: str = "small"
    pretrained: bool = False
    weights: str | None = None
    stem_init: Literal["timm", "zero-extra", "random", "sum-preserving"] = "sum-preserving"
    kwargs: dict[str, Any] = {}


class TrainConfig(_Strict):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_epochs: int = Field(1, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    early_stopping: int | None = Field(8, ge=1)  # patience in epochs on inner-val loss; None = off
    select: Literal["best_val_loss", "last"] = "best_val_loss"
    normalize: Literal["fold", "none"] = "fold"
    augment: bool = True
    balance: Literal["pos_weight", "sampler", "none"] = "pos_weight"
    amp: Literal["off", "bf16"] = "off"
    channels_last: bool = False
    device_resident: bool = False  # copy the inputs to the device once (float16); batches indexed there
    compile: bool = False         # torch.compile the model (the checkpoint keeps plain module names)
    cudnn_benchmark: bool = False  # cuDNN autotuner while a fold trains (CUDA only; restored after)
    device: str = "auto"
    seed: int = 0
    threads: int | None = None
    keras_l2: bool = False        # add the seed model's L2 penalty on its dense kernels
    # exponential moving average of the weights (decay per optimiser step, e.g. 0.99); when set,
    # the averaged model is the one evaluated each epoch, early-stopped on and checkpointed
    ema: float | None = Field(None, gt=0, lt=1)
    probe_C: float = Field(1.0, gt=0)  # probe recipe: inverse L2 strength (centre of the C grid)
    # probe recipe: which frozen features. None: the backbone's pooled head features; a list of
    # stage indices (timm ``forward_intermediates``): the spatial mean and std of those stages
    probe_stages: list[int] | None = None
    probe_tta: Literal["none", "dihedral"] = "none"   # average features over the 8 flips/rotations
    # how C is chosen: on the inner validation split (model fit on the training part), or by a
    # patient-grouped 5-fold CV over training + inner validation (model refit on both)
    probe_select: Literal["val", "inner-cv"] = "val"


class CVConfig(_Strict):
    scheme: Literal["grouped", "contiguous"] = "grouped"
    n_folds: int = Field(5, ge=2)
    n_repeats: int = Field(1, ge=1)
    seed: int = 0
    inner_fraction: float = Field(0.2, gt=0, lt=0.5)
    n_boot: int = Field(1000, ge=10)


class Config(_Strict):
    recipe: Literal["seed", "small", "finetune", "probe"] = "small"
    data: DataConfig = DataConfig()
    decomposition: DecompositionConfig = DecompositionConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    cv: CVConfig = CVConfig()


#: Each recipe is a set of defaults on top of the Config defaults.
RECIPES: dict[str, dict] = {
    # The question's protocol: its VGG from scratch (reduced-scale copy on CPU), Adam 1e-3,
    # batch 32, 50 epochs, no early stopping, the last epoch kept, no normalisation, no
    # augmentation, Keras L2 on the dense kernels, contiguous unshuffled folds validated on
    # the test fold.
    "seed": {
        "model": {"name": "seed-vgg", "kwargs": {"width": 0.125}},
        "train": {"epochs": 50, "batch_size": 32, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
                  "schedule": "constant", "warmup_epochs": 0, "early_stopping": None, "select": "last",
                  "normalize": "none", "augment": False, "balance": "none", "keras_l2": True},
        "cv": {"scheme": "contiguous"},
    },
    # A compact CNN from scratch, trained right: grouped folds, inner validation, early stopping.
    "small": {
        "model": {"name": "small"},
        "train": {"epochs": 30, "optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4,
                  "schedule": "cosine", "warmup_epochs": 1, "early_stopping": 8, "augment": True},
    },
    # A pretrained backbone with the sum-preserving stem, fine-tuned.
    "finetune": {
        "model": {"name": "timm:tf_efficientnet_lite0", "pretrained": True, "stem_init": "sum-preserving"},
        "train": {"epochs": 30, "optimizer": "adamw", "lr": 3e-4, "weight_decay": 1e-2, "schedule": "cosine",
                  "warmup_epochs": 2, "label_smoothing": 0.1, "early_stopping": 8, "normalize": "none",
                  "augment": True},
        "data": {"roi_size": 224},
    },
    # Frozen pretrained features + L2 logistic regression per fold: mean and std of three
    # mid-level stages, averaged over the 8 flips/rotations, C by patient-grouped inner CV.
    "probe": {
        "model": {"name": "timm:tf_efficientnet_lite0", "pretrained": True},
        "train": {"epochs": 1, "normalize": "none", "augment": False, "probe_stages": [1, 2, 3],
                  "probe_tta": "dihedral", "probe_select": "inner-cv"},
        "data": {"roi_size": 224},
    },
}


def _deep_update(base: dict, upd: dict) -> dict:
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and k not in ("params", "kwargs"):
            _deep_update(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def _parse_value(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _set_dotted(d: dict, key: str, value) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        if not isinstance(cur.get(p), dict):
            cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value


def _first_error(e: ValidationError, where: str | None) -> InputError:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    if err["type"] == "extra_forbidden":
        parent = err["loc"][:-1]
        model: type[BaseModel] = Config
        for p in parent:
            ann = model.model_fields[str(p)].annotation
            model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else model
        known = ", ".join(model.model_fields)
        import difflib
        close = difflib.get_close_matches(str(err["loc"][-1]), list(model.model_fields), n=1, cutoff=0.75)
        hint = f" (did you mean '{'.'.join([*map(str, parent), close[0]])}'?)" if close else ""
        return InputError(f"config field '{loc}': unknown key{hint}; expected one of: {known}", path=where)
    return InputError(f"config field '{loc}': {err['msg']} (got {err.get('input')!r})", path=where)


def resolve_config(path: str | Path | None = None, *, recipe: str | None = None,
                   overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Recipe defaults <- YAML file <- overrides, validated.

    Parameters
    ----------
    path : optional YAML file.
    recipe : recipe name; else the file's ``recipe`` key; else ``small``.
    overrides : ``["train.epochs=5", ...]`` (values parsed as YAML scalars, as
        ``--set`` does), or a mapping of dotted keys to Python values
        (``{"train.epochs": 5, "data.manifest": Path("m.parquet")}``).

    Examples
    --------
    >>> resolve_config(recipe="small", overrides={"train.epochs": 5, "model.kwargs": {"width": 8}}).train.epochs
    5
    """
    user: dict = {}
    where = str(path) if path is not None else None
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError("config file not found", path=p)
        try:
            user = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise InputError(f"not valid YAML ({str(e).splitlines()[0]})", path=p) from None
        if not isinstance(user, dict):
            raise InputError("config must be a mapping of sections", path=p)
    ov: dict = {}
    if isinstance(overrides, dict):
        for k, v in overrides.items():
            _set_dotted(ov, str(k).strip(), str(v) if isinstance(v, Path) else copy.deepcopy(v))
    for item in (overrides or []) if not isinstance(overrides, dict) else []:
        if "=" not in item:
            raise InputError(f"override '{item}' is not key=value (e.g. train.epochs=10)")
        k, v = item.split("=", 1)
        _set_dotted(ov, k.strip(), _parse_value(v.strip()))
    name = recipe or ov.get("recipe") or user.get("recipe") or "small"
    if name not in RECIPES:
        raise InputError(f"unknown recipe '{name}'; expected one of: {', '.join(RECIPES)}")
    merged = _deep_update(copy.deepcopy(RECIPES[name]), user)
    merged = _deep_update(merged, ov)
    merged["recipe"] = name
    try:
        return Config.model_validate(merged)
    except ValidationError as e:
        raise _first_error(e, where) from None


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def load_config(path: str | Path) -> Config:
    """Read a resolved config written into a run directory."""
    p = Path(path)
    if not p.is_file():
        raise InputError("config.yaml not found; is this a run directory?", path=p)
    try:
        return Config.model_validate(yaml.safe_load(p.read_text()))
    except ValidationError as e:
        raise _first_error(e, str(p)) from None
