"""Convolutional encoders and decoders for square images (8x8, 28x28, 32x32, 64x64, ...).

Each stride-2 layer (kernel 4, padding 1) halves the side, so the side must be divisible by
``2 ** len(channels)``. Defaults follow common practice: two layers (32, 64) for 28x28 MNIST
(7x7 feature maps), four layers (32, 32, 64, 64) for 64x64 dSprites as in Burgess et al.
(2018, appendix A.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import activation, as_shape, flatten_leading

DEFAULT_CHANNELS = {8: (32,), 28: (32, 64), 32: (32, 64, 128), 64: (32, 32, 64, 64)}


def default_channels(side: int) -> tuple[int, ...]:
    """The conv channel widths used for a square image of side ``side``."""
    if side in DEFAULT_CHANNELS:
        return DEFAULT_CHANNELS[side]
    layers = 0
    while side % 2 == 0 and side // 2 >= 4 and layers < 4:
        side //= 2
        layers += 1
    return tuple(32 * 2 ** min(i, 2) for i in range(max(layers, 1)))


def _check_image(shape: tuple[int, ...], channels: Sequence[int], who: str) -> tuple[int, int]:
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"{who}: expected a square image shape (C, H, H), got {shape}")
    side = shape[1]
    if side % (2 ** len(channels)):
        raise ValueError(
            f"{who}: image side {side} is not divisible by 2**{len(channels)} "
            f"(one halving per conv layer, channels={tuple(channels)})"
        )
    return side, side // 2 ** len(channels)


class ConvEncoder(nn.Module):
    """``x: (..., C, H, H) -> (..., out_features)``: stride-2 convs, then an MLP head."""

    def __init__(
        self,
        in_shape: Sequence[int],
        out_features: int,
        channels: Sequence[int] | None = None,
        hidden: Sequence[int] = (256,),
        activation_name: str = "relu",
    ):
        super().__init__()
        self.in_shape = as_shape(in_shape, "ConvEncoder in_shape")
        channels = tuple(channels) if channels else default_channels(self.in_shape[-1])
        _, last_side = _check_image(self.in_shape, channels, "ConvEncoder")
        layers: list[nn.Module] = []
        c_in = self.in_shape[0]
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), activation(activation_name)]
            c_in = c_out
        layers.append(nn.Flatten())
        widths = [c_in * last_side * last_side, *hidden]
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(w_in, w_out), activation(activation_name)]
        layers.append(nn.Linear(widths[-1], out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, lead = flatten_leading(x, 3)  # (M, C, H, H)
        return self.net(h).reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """``z: (..., in_features) -> (..., C_out, H, H)``: an MLP, then stride-2 transposed convs.

    Mirrors :class:`ConvEncoder`; the output has no activation (it holds a likelihood's
    parameters, e.g. Bernoulli logits).
    """

    def __init__(
        self,
        in_features: int,
        out_shape: Sequence[int],
        channels: Sequence[int] | None = None,
        hidden: Sequence[int] = (256,),
        activation_name: str = "relu",
    ):
        super().__init__()
        self.out_shape = as_shape(out_shape, "ConvDecoder out_shape")
        channels = tuple(channels) if channels else default_channels(self.out_shape[-1])
        _, first_side = _check_image(self.out_shape, channels, "ConvDecoder")
        rev = channels[::-1]
        widths = [in_features, *hidden, rev[0] * first_side * first_side]
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(w_in, w_out), activation(activation_name)]
        layers.append(nn.Unflatten(1, (rev[0], first_side, first_side)))
        for c_in, c_out in zip(rev[:-1], rev[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1),
                       activation(activation_name)]
        layers.append(nn.ConvTranspose2d(rev[-1], self.out_shape[0], 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h, lead = flatten_leading(z, 1)  # (M, in_features)
        return self.net(h).reshape(*lead, *self.out_shape)
