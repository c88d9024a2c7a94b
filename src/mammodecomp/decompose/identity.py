"""The ROI itself as one channel (the no-decomposition baseline)."""
from __future__ import annotations

import torch

from ..errors import InputError
from . import METHODS, _check_params


@METHODS.register("identity")
def identity(x: torch.Tensor, k: int, **params):
    """Return the ROI as a single channel; ``k`` must be 1."""
    _check_params("identity", params)
    if k != 1:
        raise InputError(f"method 'identity' gives 1 channel, got k={k}; use k=1 "
                         "(or append_raw=True with another method)")
    return x[:, None].clone(), {}
