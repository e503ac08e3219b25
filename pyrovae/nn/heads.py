"""Output heads: map a network's raw features to distribution parameters."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SCALES = ("softplus", "exp")


class NormalHead(nn.Module):
    """Splits ``h: (..., 2 * D)`` into a location and a positive scale, each ``(..., D)``.

    ``scale="softplus"`` (default): ``scale = softplus(raw) + min_scale``; softplus grows
    linearly rather than exponentially, so a large pre-activation cannot overflow the scale, and
    ``min_scale`` keeps ``log scale`` finite. ``scale="exp"``: ``raw`` is the log standard
    deviation, ``scale = exp(raw) + min_scale`` (the parametrisation of Kingma and Welling 2014
    and most reference implementations; ``min_scale=0`` gives it exactly).
    """

    def __init__(self, min_scale: float = 1e-4, scale: str = "softplus"):
        super().__init__()
        if not min_scale >= 0:
            raise ValueError(f"NormalHead min_scale: expected >= 0, got {min_scale!r}")
        if scale not in SCALES:
            raise ValueError(f"NormalHead scale: expected one of {SCALES}, got {scale!r}")
        self.min_scale = float(min_scale)
        self.scale = scale

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if h.shape[-1] % 2:
            raise ValueError(f"NormalHead: expected an even last dim (loc, scale), got {h.shape}")
        loc, raw = h.chunk(2, dim=-1)
        positive = raw.exp() if self.scale == "exp" else F.softplus(raw)
        return loc, positive + self.min_scale
