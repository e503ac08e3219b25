"""Convolutional encoders and decoders that keep a spatial map, for discrete (VQ) latents.

The shape follows van den Oord et al. (2017, §4.1): stride-2 convolutions with 4x4 windows,
then residual blocks (ReLU, 3x3 conv, ReLU, 1x1 conv); the decoder mirrors it with transposed
convolutions. Each stride-2 layer halves the side (28 -> 14 -> 7 for MNIST with two).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import checks
from .layers import flatten_leading


class ResidualStack(nn.Module):
    """``blocks`` residual blocks ``h + conv1x1(relu(conv3x3(relu(h))))``, then a ReLU;
    ``(N, C, H, W) -> (N, C, H, W)``."""

    def __init__(self, channels: int, hidden: int, blocks: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(hidden, channels, 1))
            for _ in range(blocks)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h = h + block(h)
        return torch.relu(h)


class ConvMapEncoder(nn.Module):
    """``x: (..., C_in, H, W) -> (..., C_out, H / 2**downsample, W / 2**downsample)``.

    ``downsample`` stride-2 convs (4x4, padding 1; widths ``hidden // 2`` ... ``hidden``), a 3x3
    conv, a :class:`ResidualStack`, and a 1x1 conv to ``out_channels`` (the code size).
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 64,
                 downsample: int = 2, res_blocks: int = 2, res_hidden: int = 32):
        super().__init__()
        for v, n in ((downsample, "downsample"), (res_blocks, "res_blocks")):
            checks.int_at_least(v, n, 0)
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(downsample):
            c_out = hidden if i == downsample - 1 else max(hidden // 2, 1)
            layers += [nn.Conv2d(c, c_out, 4, stride=2, padding=1), nn.ReLU()]
            c = c_out
        layers += [nn.Conv2d(c, hidden, 3, padding=1), ResidualStack(hidden, res_hidden,
                                                                     res_blocks),
                   nn.Conv2d(hidden, out_channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, lead = flatten_leading(x, 3)  # (M, C, H, W)
        out = self.net(h)
        return out.reshape(*lead, *out.shape[1:])


class ConvMapDecoder(nn.Module):
    """``z: (..., C_in, h, w) -> (..., C_out, h * 2**upsample, w * 2**upsample)``: a 3x3 conv,
    a :class:`ResidualStack`, then ``upsample`` stride-2 transposed convs (4x4, padding 1);
    the output has no activation (a likelihood's parameters)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 64,
                 upsample: int = 2, res_blocks: int = 2, res_hidden: int = 32):
        super().__init__()
        for v, n in ((upsample, "upsample"), (res_blocks, "res_blocks")):
            checks.int_at_least(v, n, 0)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1),
                                   ResidualStack(hidden, res_hidden, res_blocks)]
        c = hidden
        for i in range(upsample):
            last = i == upsample - 1
            c_out = out_channels if last else max(hidden // 2, 1)
            layers.append(nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1))
            if not last:
                layers.append(nn.ReLU())
            c = c_out
        if upsample == 0:
            layers.append(nn.Conv2d(hidden, out_channels, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h, lead = flatten_leading(z, 3)  # (M, C, h, w)
        out = self.net(h)
        return out.reshape(*lead, *out.shape[1:])
