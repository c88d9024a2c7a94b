"""timm backbones with K component channels and a pooled one-logit head.

``timm:<name>`` builds ``timm.create_model(name, pretrained=False,
num_classes=0, in_chans=K)`` (global-average-pooled features) followed by our
head: dropout and a linear layer to one logit. ``seed-resnet50`` is
``timm:resnet50`` from random init without head dropout, the seed
question's ResNet50.

Pretrained weights are loaded by us, never by timm (no download): see
:mod:`mammodecomp.models.weights` for the sources and
:mod:`mammodecomp.models.stems` for how the 3-channel first layer becomes a
K-channel one.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn

from ..errors import InputError
from .stems import OffsetConv2d, STEM_INITS, adapt_stem_weight, get_submodule, set_submodule
from .weights import load_state_dict_file, resolve_pretrained

__all__ = ["TimmClassifier", "build_timm"]


def _pretrained_cfg(name: str) -> dict[str, Any]:
    import timm
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - untagged or unknown tag
        cfg = None
    return cfg.to_dict() if cfg is not None else {}


class TimmClassifier(nn.Module):
    """A timm backbone (``num_classes=0``) + dropout + linear -> one logit per image.

    Parameters
    ----------
    timm_name : str
        Any ``timm.list_models()`` name, optionally with a pretrained tag.
    in_chans : int
        K, the number of component channels.
    dropout : float
        Dropout before the linear head.
    **timm_kwargs
        Passed to ``timm.create_model`` (e.g. ``drop_path_rate``).

    Notes
    -----
    ``forward_features`` returns timm's unpooled features (N, C, h, w) for
    CNNs (tokens for transformers); ``forward_head`` pools them with the
    backbone's own pooling, then dropout and linear. Output shape (N,).

    Examples
    --------
    >>> import torch
    >>> m = TimmClassifier("resnet10t", in_chans=2).eval()
    >>> m(torch.zeros(1, 2, 32, 32)).shape
    torch.Size([1])
    """

    def __init__(self, timm_name: str, in_chans: int, dropout: float = 0.2, **timm_kwargs: Any):
        super().__init__()
        import timm
        arch = timm_name.split(".")[0]
        if not timm.is_model(arch):
            raise InputError(f"unknown timm model '{timm_name}'; see timm.list_models()")
        self.timm_name = timm_name
        self.backbone = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=in_chans,
                                          **timm_kwargs)
        self.num_features = self.backbone.num_features
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(self.num_features, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.backbone.forward_head(feats, pre_logits=True)
        if pre_logits:
            return pooled
        return self.fc(self.drop(pooled)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _first_conv_name(model: TimmClassifier) -> str | None:
    cfg = getattr(model.backbone, "pretrained_cfg", {}) or {}
    fc = cfg.get("first_conv")
    if isinstance(fc, (list, tuple)):
        fc = fc[0] if fc else None
    return fc


def _wrap_offset(model: TimmClassifier, first_conv: str, offset: torch.Tensor) -> None:
    conv = get_submodule(model.backbone, first_conv)
    set_submodule(model.backbone, first_conv, OffsetConv2d(conv, offset))


def build_timm(timm_name: str, in_chans: int, pretrained: bool = False,
               weights: str | os.PathLike | None = None, stem_init: str = "sum-preserving",
               input_size: int | tuple[int, int] = 320, dropout: float = 0.2,
               stem_offset: bool | None = None, registry_name: str | None = None,
               weights_mean: tuple[float, float, float] | None = None,
               weights_std: tuple[float, float, float] | None = None,
               **timm_kwargs: Any) -> TimmClassifier:
    """Build a :class:`TimmClassifier`, optionally with offline pretrained weights.

    Parameters
    ----------
    timm_name : str
        timm model name (optionally ``arch.tag``).
    in_chans : int
        K.
    pretrained : bool
        Load 3-channel ImageNet weights (``weights`` file, the offline
        EfficientNet-Lite0 package for ``tf_efficientnet_lite0``, or the timm
        cache) and adapt the first conv with ``stem_init``. The classifier
        is dropped; our head stays random.
    weights : path-like, optional
        Implies ``pretrained``. A 3-channel backbone state dict (timm key
        names), or a full checkpoint of this wrapper (keys ``backbone.*``,
        ``fc.*``), loaded as is.
    stem_init : {'sum-preserving', 'timm', 'zero-extra', 'random'}
        First-layer adaptation (see :mod:`mammodecomp.models.stems`).
    input_size : int or (int, int)
        Recorded in ``data_config``.
    dropout : float
        Head dropout.
    stem_offset : bool, optional
        Build the :class:`~mammodecomp.models.stems.OffsetConv2d` stem even
        without pretrained weights (to rebuild a sum-preserving checkpoint
        offline). Default: only for pretrained ``sum-preserving``.
    registry_name : str, optional
        The name recorded in ``data_config['model']``.
    weights_mean, weights_std : 3 floats, optional
        RGB input normalisation (on a [0, 1] scale) the pretrained weights
        were trained with, used by ``sum-preserving``; default: timm's
        pretrained config for ``timm_name`` (e.g. ImageNet mean/std, or 0.5/0.5
        for ``tf_efficientnet_lite0``).

    Returns
    -------
    TimmClassifier

    Examples
    --------
    >>> m = build_timm("resnet10t", 3)
    >>> m.data_config["normalization"], m.data_config["first_conv"]
    ('fold', 'backbone.conv1.0')
    """
    if stem_init not in STEM_INITS:
        raise InputError(f"unknown stem_init '{stem_init}'; expected one of: {', '.join(STEM_INITS)}")
    model = TimmClassifier(timm_name, in_chans, dropout=dropout, **timm_kwargs)
    first_conv = _first_conv_name(model)
    pretrained = bool(pretrained or weights is not None)
    source = None
    folded = False
    if pretrained:
        sd, source = resolve_pretrained(timm_name, weights)
        if any(k.startswith("backbone.") for k in sd):
            if first_conv and f"backbone.{first_conv}.offset" in sd:
                _wrap_offset(model, first_conv, sd[f"backbone.{first_conv}.offset"])
                folded = True
            _load_strict(model, sd, source)
        else:
            folded = _load_backbone(model, sd, in_chans, stem_init, first_conv, source,
                                    weights_mean, weights_std)
    elif stem_offset:
        if not first_conv:
            raise InputError(f"timm model '{timm_name}' names no first conv; cannot build an offset stem")
        conv = get_submodule(model.backbone, first_conv)
        _wrap_offset(model, first_conv, torch.zeros(conv.out_channels, 1, *conv.weight.shape[2:]))
        folded = True
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    conv_path = (f"backbone.{first_conv}.conv" if folded else f"backbone.{first_conv}") if first_conv else None
    model.data_config = {
        "model": registry_name or f"timm:{timm_name}",
        "in_chans": in_chans,
        "input_size": (in_chans, *size),
        "mean": (0.0,) * in_chans if folded else None,
        "std": (1.0,) * in_chans if folded else None,
        "normalization": "folded-into-stem" if folded else "fold",
        "first_conv": conv_path,
        "stem_init": stem_init if pretrained else "random",
        "pretrained": source,
        "create_kwargs": {"stem_offset": folded, "dropout": dropout, **timm_kwargs},
    }
    return model


def _load_strict(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        msg = str(exc).splitlines()[0]
        raise InputError(f"checkpoint does not match the model: {msg}", path=source) from None


def _load_backbone(model: TimmClassifier, sd: dict[str, torch.Tensor], in_chans: int, stem_init: str,
                   first_conv: str | None, source: str, mean=None, std=None) -> bool:
    """Load a 3-channel backbone state dict; adapt the stem. Returns True if the offset stem was built."""
    backbone = model.backbone
    cfg = backbone.pretrained_cfg or {}
    tagged = _pretrained_cfg(model.timm_name)
    mean = mean if mean is not None else tagged.get("mean", cfg.get("mean"))
    std = std if std is not None else tagged.get("std", cfg.get("std"))
    sd = dict(sd)
    clf = cfg.get("classifier")
    for name in ([clf] if isinstance(clf, str) else list(clf or [])):
        for k in [k for k in sd if k == name or k.startswith(name + ".")]:
            del sd[k]
    if not first_conv:
        raise InputError(f"timm model '{model.timm_name}' names no first conv; cannot adapt it to "
                         f"{in_chans} channels")
    wkey = f"{first_conv}.weight"
    if wkey not in sd:
        raise InputError(f"pretrained weights have no '{wkey}'; expected a state dict of timm "
                         f"'{model.timm_name}'", path=source)
    new_w, offset = adapt_stem_weight(sd[wkey], in_chans, stem_init, mean, std)
    if new_w is None:
        del sd[wkey]
        bkey = f"{first_conv}.bias"
        sd.pop(bkey, None)
    else:
        sd[wkey] = new_w
    try:
        missing, unexpected = backbone.load_state_dict(sd, strict=False)
    except RuntimeError as exc:  # shape mismatches
        msg = " ".join(str(exc).split())[:300]
        raise InputError(f"pretrained weights do not match timm '{model.timm_name}': {msg}",
                         path=source) from None
    allowed_missing = {wkey, f"{first_conv}.bias"} if new_w is None else set()
    bad_missing = [k for k in missing if k not in allowed_missing]
    if bad_missing or unexpected:
        raise InputError(f"pretrained weights do not match timm '{model.timm_name}': missing "
                         f"{bad_missing[:5]}, unexpected {list(unexpected)[:5]}", path=source)
    if offset is not None:
        _wrap_offset(model, first_conv, offset)
        return True
    return False
