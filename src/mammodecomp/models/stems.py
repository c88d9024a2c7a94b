"""First-layer initialisation from 3-channel (RGB) pretrained weights for K component channels.

Four strategies (``STEM_INITS``):

``timm``
    timm's ``adapt_input_conv``: the RGB filter repeated over the K channels
    and scaled by 3/K (K = 1: RGB summed).
``zero-extra``
    fastai: RGB filters copied into the first 3 channels, zeros in the others
    (K < 3: the first K RGB filters).
``random``
    MONAI: a new randomly initialised first layer (the module's own
    ``reset_parameters``); the rest of the network is pretrained.
``sum-preserving``
    Every component channel receives the grey-level filter
    ``W_grey = sum_c W_c / s_c`` (RGB filters divided by the ImageNet std and
    summed), and the mean term ``-sum_c W_c m_c / s_c`` is applied by an
    :class:`OffsetConv2d` wrapper as a fixed map (the same kernel convolved
    with a ones image under the conv's own padding, so borders are exact
    too). Because the components ``c_k`` add up to the grey ROI ``x``,
    ``sum_k W_grey * c_k = W_grey * x``: at initialisation the network's
    output on the *raw* components equals the pretrained network's output on
    the grey ROI replicated to RGB and ImageNet-normalised.

Notes
-----
With ``sum-preserving`` the network takes raw components on the [0, 1] scale
of the ROI: the input normalisation is folded into the stem, so the trainer's
fold-fitted per-channel normalisation must be switched off for such a model
(``model.data_config['normalization'] == 'folded-into-stem'``; mean 0 and
std 1 per channel). A per-channel standardisation would break the identity
``sum_k c_k = x`` the stem relies on.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from torch.func import functional_call

from ..errors import InputError

__all__ = ["STEM_INITS", "adapt_stem_weight", "OffsetConv2d", "get_submodule", "set_submodule"]

STEM_INITS = ("sum-preserving", "timm", "zero-extra", "random")


def adapt_stem_weight(weight: torch.Tensor, in_chans: int, mode: str,
                      mean: Sequence[float] | None = None,
                      std: Sequence[float] | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Turn a 3-channel first-conv weight into a K-channel one.

    Parameters
    ----------
    weight : Tensor, shape (O, 3, kh, kw)
        Pretrained RGB filters.
    in_chans : int
        K, the number of component channels.
    mode : {'sum-preserving', 'timm', 'zero-extra', 'random'}
        See the module docstring.
    mean, std : sequence of 3 floats, optional
        The pretrained network's input normalisation on a [0, 1] scale;
        required by ``sum-preserving``.

    Returns
    -------
    (new_weight, offset_kernel)
        ``new_weight`` of shape (O, K, kh, kw), or ``None`` for ``random``
        (keep the fresh random layer). ``offset_kernel`` of shape
        (O, 1, kh, kw) is ``-sum_c W_c m_c / s_c`` for ``sum-preserving``,
        else ``None``.

    Raises
    ------
    InputError
        Unknown mode, a weight that is not 3-channel, or missing mean/std.

    Examples
    --------
    >>> import torch
    >>> w = torch.ones(2, 3, 1, 1)
    >>> new, off = adapt_stem_weight(w, 5, "sum-preserving", (0.5,) * 3, (0.5,) * 3)
    >>> new[0, :, 0, 0].tolist(), off[0, 0, 0, 0].item()
    ([6.0, 6.0, 6.0, 6.0, 6.0], -3.0)
    >>> adapt_stem_weight(w, 5, "zero-extra")[0][0, :, 0, 0].tolist()
    [1.0, 1.0, 1.0, 0.0, 0.0]
    """
    if mode not in STEM_INITS:
        raise InputError(f"unknown stem_init '{mode}'; expected one of: {', '.join(STEM_INITS)}")
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise InputError(f"stem_init '{mode}' needs a 3-channel pretrained first conv; got weight "
                         f"of shape {tuple(weight.shape)}")
    if in_chans < 1:
        raise InputError(f"in_chans must be >= 1; got {in_chans}")
    w = weight.float()
    if mode == "random":
        return None, None
    if mode == "timm":
        from timm.models import adapt_input_conv
        return adapt_input_conv(in_chans, w.clone()).to(weight.dtype), None
    if mode == "zero-extra":
        if in_chans <= 3:
            return w[:, :in_chans].clone().to(weight.dtype), None
        new = torch.zeros(w.shape[0], in_chans, *w.shape[2:], dtype=w.dtype)
        new[:, :3] = w
        return new.to(weight.dtype), None
    if mean is None or std is None or len(mean) != 3 or len(std) != 3:
        raise InputError("stem_init 'sum-preserving' needs the pretrained network's RGB mean and std "
                         f"(3 values each); got mean={mean}, std={std}")
    m = torch.tensor([float(v) for v in mean], dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor([float(v) for v in std], dtype=torch.float64).view(1, 3, 1, 1)
    w64 = weight.double()
    grey = (w64 / s).sum(dim=1, keepdim=True)
    offset = -(w64 * m / s).sum(dim=1, keepdim=True)
    new = grey.expand(-1, in_chans, -1, -1).contiguous()
    return new.to(weight.dtype), offset.to(weight.dtype)


class OffsetConv2d(nn.Module):
    """A conv plus a fixed map: ``conv(x) + conv_nobias(ones_like(x[:, :1]), offset)``.

    The second term convolves a ones image with ``offset`` using the wrapped
    conv's own padding (zero or TF 'same'), stride and dilation, so it equals
    what a per-channel input shift inside the image, zero outside, would give:
    the exact effect of ImageNet normalisation before a zero-padded conv.

    Parameters
    ----------
    conv : nn.Conv2d
        The K-channel conv (any subclass whose ``forward`` reads ``weight`` and
        ``bias``, e.g. timm's ``Conv2dSame``), kept as ``self.conv``.
    offset : Tensor, shape (O, 1, kh, kw)
        Fixed kernel, stored as a buffer (saved in the state dict, not trained).

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> conv = nn.Conv2d(2, 1, 3, padding=1, bias=False)
    >>> _ = nn.init.zeros_(conv.weight)
    >>> m = OffsetConv2d(conv, torch.ones(1, 1, 3, 3))
    >>> m(torch.zeros(1, 2, 3, 3))[0, 0].tolist()
    [[4.0, 6.0, 4.0], [6.0, 9.0, 6.0], [4.0, 6.0, 4.0]]
    """

    def __init__(self, conv: nn.Conv2d, offset: torch.Tensor):
        super().__init__()
        if conv.groups != 1:
            raise ValueError("OffsetConv2d supports groups=1 convs only")
        if offset.shape != (conv.out_channels, 1, *conv.weight.shape[2:]):
            raise ValueError(f"offset shape {tuple(offset.shape)} does not match conv "
                             f"{tuple(conv.weight.shape)}")
        self.conv = conv
        self.register_buffer("offset", offset.detach().clone())

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    @property
    def in_channels(self) -> int:
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ones = torch.ones_like(x[:, :1, :, :])
        params = {"weight": self.offset.to(dtype=ones.dtype)}
        if self.conv.bias is not None:
            params["bias"] = torch.zeros_like(self.conv.bias, dtype=ones.dtype)
        shift = functional_call(self.conv, params, (ones,))
        return self.conv(x) + shift


def get_submodule(model: nn.Module, name: str) -> nn.Module:
    """``model.get_submodule(name)`` with an :class:`InputError` when absent.

    Examples
    --------
    >>> import torch.nn as nn
    >>> type(get_submodule(nn.Sequential(nn.Conv2d(1, 1, 1)), "0")).__name__
    'Conv2d'
    """
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise InputError(f"model has no module '{name}' (its first conv)") from None


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` by ``module``.

    Examples
    --------
    >>> import torch.nn as nn
    >>> m = nn.Sequential(nn.Sequential(nn.Conv2d(1, 1, 1)))
    >>> set_submodule(m, "0.0", nn.Identity())
    >>> type(m[0][0]).__name__
    'Identity'
    """
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
