"""Channel-consistent augmentation of decomposed ROIs.

Contract: input ``x`` is a float tensor (B, K, H, W), channels first, K
components of one ROI per sample, H == W. Every random draw is made once per
*sample* and applied to all K channels alike, so the components stay aligned
and keep adding up to the (transformed) ROI. One ``torch.Generator`` per
:class:`Augment` instance; nothing touches the global RNG.

>>> import torch
>>> aug = Augment(seed=0)
>>> x = torch.rand(4, 3, 16, 16)
>>> y = aug(x)
>>> y.shape
torch.Size([4, 3, 16, 16])
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class Augment:
    """Dihedral flips/rotations, a small affine warp and one photometric scale.

    Parameters
    ----------
    seed : seeds this instance's generator.
    dihedral : random 90-degree rotations and flips (exact: no resampling).
    max_rotate_deg, max_scale, max_shift : the small affine warp (bilinear,
        reflection padding), one matrix per sample shared by its channels.
    max_gain : photometric gain, one factor per sample applied to every
        channel (a gain on the ROI is the same gain on each component).
    """

    def __init__(self, seed: int = 0, *, dihedral: bool = True, max_rotate_deg: float = 10.0,
                 max_scale: float = 0.1, max_shift: float = 0.05, max_gain: float = 0.1):
        self.gen = torch.Generator().manual_seed(int(seed))
        self.dihedral = dihedral
        self.max_rotate = math.radians(max_rotate_deg)
        self.max_scale = max_scale
        self.max_shift = max_shift
        self.max_gain = max_gain

    def _u(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self.gen) * 2 - 1

    def state(self) -> torch.Tensor:
        return self.gen.get_state()

    def set_state(self, s: torch.Tensor) -> None:
        self.gen.set_state(s)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        if x.shape[-1] != x.shape[-2]:
            raise ValueError("Augment expects square ROIs (H == W)")
        out = x
        if self.dihedral:
            rot = torch.randint(0, 4, (B,), generator=self.gen)
            flip = torch.randint(0, 2, (B,), generator=self.gen)
            out = torch.empty_like(x)
            for r in range(4):
                for f in range(2):
                    m = (rot == r) & (flip == f)
                    if m.any():
                        xs = x[m.to(x.device)]
                        if f:
                            xs = xs.flip(-1)
                        out[m.to(x.device)] = torch.rot90(xs, r, (-2, -1))
        if self.max_rotate > 0 or self.max_scale > 0 or self.max_shift > 0:
            a = self._u(B) * self.max_rotate
            s = 1 + self._u(B) * self.max_scale
            tx, ty = self._u(B) * self.max_shift * 2, self._u(B) * self.max_shift * 2
            cos, sin = torch.cos(a) / s, torch.sin(a) / s
            theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
            grid = F.affine_grid(theta.to(out.device, out.dtype), list(out.shape), align_corners=False)
            out = F.grid_sample(out, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if self.max_gain > 0:
            g = 1 + self._u(B) * self.max_gain
            out = out * g.to(out.device, out.dtype).view(B, 1, 1, 1)
        return out
