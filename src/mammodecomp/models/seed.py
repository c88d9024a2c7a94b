"""``seed-vgg``: the seed question's Keras ``MyNet``, reproduced faithfully in PyTorch.

13 conv3x3 (``padding='same'``) in 5 VGG blocks (64-64 | 128-128 |
256x3 | 512x3 | 512x3), each conv followed by ReLU then BatchNormalization
(the Keras code's order), 2x2 max-pooling after each block, Flatten, two
Dense(4096) + ReLU + BatchNormalization with an L2(0.01) kernel regulariser,
and Dense(1) (the sigmoid is left to the loss: the model returns a logit).

Keras defaults the question relies on are kept: glorot-uniform kernels, zero
biases, BatchNormalization momentum 0.99 (torch ``momentum=0.01``) and
epsilon 1e-3. Keras adds ``0.01 * sum(W**2)`` of each regularised kernel to
the loss; :meth:`SeedVGG.l2_penalty` returns that sum and
:meth:`SeedVGG.l2_params` the kernels it covers. The trainer folds the penalty
into Adam's (coupled) weight decay, ``2 * 0.01 * W`` added to those kernels'
gradients, which is the gradient of the loss term itself without three extra
passes over the 210M-parameter kernel per step (see ``train._optimizer``).

The dense head runs in float32 even under bf16 autocast: on a CPU, casting the
210M-parameter kernel to bf16 and its gradient back every step costs more than
the matrix product saves, and float32 is what Keras computes.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn as nn

from ..errors import InputError
from .weights import load_state_dict_file

__all__ = ["SeedVGG", "VGG_BLOCKS", "keras_init_"]

VGG_BLOCKS: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512),
                                           (512, 512, 512))
KERAS_BN = {"momentum": 0.01, "eps": 1e-3}


def keras_init_(module: nn.Module) -> None:
    """Keras defaults: glorot-uniform weights and zero biases for every Conv2d and Linear.

    Examples
    --------
    >>> import torch.nn as nn
    >>> lin = nn.Linear(4, 2)
    >>> keras_init_(lin)
    >>> lin.bias.tolist(), bool(lin.weight.abs().max() <= (6 / 6) ** 0.5)
    ([0.0, 0.0], True)
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _scaled(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


class SeedVGG(nn.Module):
    """The seed question's VGG-like ``MyNet`` (one logit per image).

    Parameters
    ----------
    in_chans : int
        K component channels (5 in the question).
    input_size : int or (int, int)
        Input height and width (320 in the question); sets the Flatten size
        ``(H // 32) * (W // 32) * 512 * width``.
    width : float
        Channel multiplier for every conv and Dense layer (1.0 = the
        question's model; 0.125 gives a copy that trains on a CPU).
    dropout : float
        0 (the question's model) or e.g. 0.5: Dropout after each Dense block's
        BatchNormalization (the question's variant 1).
    l2 : float
        Keras ``l2(regularization_rate)`` on the two Dense(4096) kernels.

    Notes
    -----
    At 320x320x5 and width 1 the model has 241,245,377 trainable
    parameters, 241,270,209 (241.3M) counted as Keras does (BatchNorm moving
    mean and variance included); the first Dense has 209,719,296 (209.7M).
    Flatten runs over torch's (C, H, W) order, Keras's over (H, W, C): the
    same function class, a permutation of the first Dense's rows.
    torch BatchNorm updates its running variance with the unbiased batch
    variance, Keras with the biased one (a factor n/(n-1)).

    Examples
    --------
    >>> import torch
    >>> m = SeedVGG(in_chans=5, input_size=64, width=0.0625).eval()
    >>> m(torch.zeros(2, 5, 64, 64)).shape
    torch.Size([2])
    >>> m.forward_features(torch.zeros(1, 5, 64, 64)).shape
    torch.Size([1, 32, 2, 2])
    """

    def __init__(self, in_chans: int = 5, input_size: int | Sequence[int] = 320, width: float = 1.0,
                 dropout: float = 0.0, l2: float = 0.01):
        super().__init__()
        if in_chans < 1:
            raise InputError(f"in_chans must be >= 1; got {in_chans}")
        if not width > 0:
            raise InputError(f"width must be > 0; got {width}")
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1); got {dropout}")
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        fh, fw = h, w
        for _ in VGG_BLOCKS:
            fh, fw = fh // 2, fw // 2
        if fh < 1 or fw < 1:
            raise InputError(f"input_size {input_size} is too small for 5 max-pools; expected >= 32")
        layers: list[nn.Module] = []
        c_in = in_chans
        for block in VGG_BLOCKS:
            for c in block:
                c_out = _scaled(c, width)
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
                           nn.BatchNorm2d(c_out, **KERAS_BN)]
                c_in = c_out
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        units = _scaled(4096, width)
        self.flatten_dim = c_in * fh * fw
        self.fc1 = nn.Linear(self.flatten_dim, units)
        self.bn1 = nn.BatchNorm1d(units, **KERAS_BN)
        self.drop1 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc2 = nn.Linear(units, units)
        self.bn2 = nn.BatchNorm1d(units, **KERAS_BN)
        self.drop2 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(units, 1)
        self.l2 = float(l2)
        self.num_features = units
        keras_init_(self)

    def l2_penalty(self) -> torch.Tensor:
        """Keras ``l2(0.01)`` loss term: ``l2 * (sum(fc1.weight**2) + sum(fc2.weight**2))``.

        Examples
        --------
        >>> m = SeedVGG(1, input_size=32, width=0.01)
        >>> for p in (m.fc1.weight, m.fc2.weight):
        ...     _ = p.data.fill_(1.0)
        >>> round(m.l2_penalty().item(), 4)  # 0.01 * (5*41 + 41*41)
        18.86
        """
        return self.l2 * sum(torch.linalg.vector_norm(w) ** 2 for w in self.l2_params())

    def l2_params(self) -> list[nn.Parameter]:
        """The kernels under Keras ``l2(self.l2)``: the two Dense(4096) weights."""
        return [self.fc1.weight, self.fc2.weight]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        with torch.autocast(feats.device.type, enabled=False):  # float32 head (module docstring)
            x = torch.flatten(feats, 1).float()
            x = self.drop1(self.bn1(torch.relu(self.fc1(x))))
            x = self.drop2(self.bn2(torch.relu(self.fc2(x))))
            if pre_logits:
                return x
            return self.head(x).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def load_own_weights(model: nn.Module, pretrained: bool, weights: str | os.PathLike | None,
                     name: str) -> str | None:
    """Load a full checkpoint of one of our from-scratch models; no ImageNet weights exist for them.

    Parameters
    ----------
    model : nn.Module
    pretrained : bool
        ``True`` without ``weights`` raises: there is nothing to load.
    weights : path-like, optional
        A state dict of this very model (strict load).
    name : str
        Registry name, for messages.

    Returns
    -------
    str or None
        ``'file:<path>'`` or ``None`` when nothing was loaded.

    Examples
    --------
    >>> import torch.nn as nn
    >>> load_own_weights(nn.Linear(2, 1), False, None, "small") is None
    True
    """
    if weights is None:
        if pretrained:
            raise InputError(f"model '{name}' has no pretrained weights; pass weights=PATH to one of "
                             f"its own checkpoints (.safetensors or torch state dict) or pretrained=False")
        return None
    sd = load_state_dict_file(weights)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        msg = " ".join(str(exc).split())[:300]
        raise InputError(f"checkpoint does not match model '{name}': {msg}", path=weights) from None
    return f"file:{weights}"
