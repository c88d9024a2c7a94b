"""``small``: a compact CNN from scratch sized for 2 CPU cores.

Four blocks Conv3x3-BN-ReLU with 16-32-64-128 channels (2x2 max-pooling
after the first three), global average pooling, dropout, linear -> one logit.
About 98k parameters at K = 5; ~68M multiply-adds per 128x128 ROI, so an
epoch over ~500 ROIs of 128x128 takes seconds on two cores.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..errors import InputError

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """Compact GAP CNN (one logit per image).

    Parameters
    ----------
    in_chans : int
        K component channels.
    channels : sequence of int
        Output channels of the conv blocks.
    dropout : float
        Dropout before the linear head.

    Notes
    -----
    ``forward_features`` returns the last block's maps at 1/8 of the input
    size (16x16 for 128x128 ROIs) for CAMs; ``forward_head`` averages them.
    Weights use torch's default (Kaiming-uniform) initialisation.

    Examples
    --------
    >>> import torch
    >>> m = SmallCNN(3).eval()
    >>> m.forward_features(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 128, 4, 4])
    >>> m(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2])
    """

    def __init__(self, in_chans: int, channels: Sequence[int] = (16, 32, 64, 128), dropout: float = 0.3):
        super().__init__()
        if in_chans < 1:
            raise InputError(f"in_chans must be >= 1; got {in_chans}")
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1); got {dropout}")
        layers: list[nn.Module] = []
        c_in = in_chans
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c
        self.features = nn.Sequential(*layers)
        self.num_features = c_in
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(c_in, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = feats.mean(dim=(2, 3))
        if pre_logits:
            return pooled
        return self.fc(self.drop(pooled)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
