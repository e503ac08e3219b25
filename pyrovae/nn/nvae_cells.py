r"""NVAE's residual cells (Vahdat and Kautz 2020, §3.1 and Fig. 3), plain ``torch.nn``.

All take and return image tensors ``(..., C, H, W)`` with any number of leading batch dims
(Pyro's particle dim included): they are flattened into one for the convolutions.

- :class:`EncoderCell`: :math:`x + 0.1\cdot\mathrm{SE}(\mathrm{conv}_{3\times3}(\mathrm{Swish}(
  \mathrm{BN}(\mathrm{conv}_{3\times3}(\mathrm{Swish}(\mathrm{BN}(x)))))))`;
- :class:`DecoderCell`: BN, 1×1 conv expanding the channels ``expand`` times, BN, Swish,
  depthwise 5×5 conv, BN, Swish, 1×1 conv back, BN, squeeze-and-excitation (Hu et al. 2018),
  added to its input with weight 0.1.

The residual branch is scaled by a fixed gain of 0.1 so that a deep stack starts near the
identity map (our choice for stability at initialisation).
"""

from __future__ import annotations

import torch
from torch import nn


def apply_images(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Runs ``module`` on ``x: (..., C, H, W)``, flattening the leading dims into one."""
    lead = x.shape[:-3]
    y = module(x.reshape(-1, *x.shape[-3:]))  # (M, C', H', W')
    return y.reshape(*lead, *y.shape[-3:])


class SqueezeExcite(nn.Module):
    """Channel gating (Hu et al. 2018): ``x * sigmoid(W2 relu(W1 mean_hw(x)))``."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.net = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(),
                                 nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x):  # (M, C, H, W)
        return x * self.net(x.mean((-2, -1)))[..., None, None]


class EncoderCell(nn.Module):
    """Residual cell BN-Swish-conv3-BN-Swish-conv3-SE (NVAE Fig. 3b), channels unchanged."""

    def __init__(self, channels: int):
        super().__init__()
        self.branch = nn.Sequential(
            nn.BatchNorm2d(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            SqueezeExcite(channels))

    def forward(self, x):
        return x + 0.1 * apply_images(self.branch, x)


class DecoderCell(nn.Module):
    """Residual cell BN-conv1(expand)-BN-Swish-dwconv5-BN-Swish-conv1-BN-SE (NVAE Fig. 3a)."""

    def __init__(self, channels: int, expand: int = 3):
        super().__init__()
        wide = channels * expand
        self.branch = nn.Sequential(
            nn.BatchNorm2d(channels), nn.Conv2d(channels, wide, 1),
            nn.BatchNorm2d(wide), nn.SiLU(),
            nn.Conv2d(wide, wide, 5, padding=2, groups=wide),
            nn.BatchNorm2d(wide), nn.SiLU(), nn.Conv2d(wide, channels, 1),
            nn.BatchNorm2d(channels), SqueezeExcite(channels))

    def forward(self, x):
        return x + 0.1 * apply_images(self.branch, x)
