"""Plain ``torch.nn`` building blocks: no Pyro, no losses.

:func:`encoder` and :func:`decoder` build a network family by name (``"mlp"``, ``"conv"``) so
that model configs stay serialisable; a new family is one entry in :data:`ARCHITECTURES`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .attention import CausalSelfAttention
from .conv import ConvDecoder, ConvEncoder, default_channels
from .heads import NormalHead
from .layers import ACTIVATIONS, activation, flatten_leading
from .mlp import MLP
from .pixelcnn import GatedPixelCNN
from .resnet import ConvMapDecoder, ConvMapEncoder, ResidualStack


def _mlp_encoder(in_shape, out_features, hidden, activation_name, channels, batch_norm):
    return MLP(in_shape, out_features, hidden, activation_name, batch_norm)


def _mlp_decoder(in_features, out_shape, hidden, activation_name, channels, batch_norm):
    return MLP(in_features, out_shape, tuple(hidden)[::-1], activation_name, batch_norm)


def _conv_encoder(in_shape, out_features, hidden, activation_name, channels, batch_norm):
    return ConvEncoder(in_shape, out_features, channels, hidden, activation_name)


def _conv_decoder(in_features, out_shape, hidden, activation_name, channels, batch_norm):
    return ConvDecoder(in_features, out_shape, channels, tuple(hidden)[::-1], activation_name)


# name -> (encoder builder, decoder builder)
ARCHITECTURES = {
    "mlp": (_mlp_encoder, _mlp_decoder),
    "conv": (_conv_encoder, _conv_decoder),
}


def _arch(name: str):
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"network: expected one of {sorted(ARCHITECTURES)}, got {name!r}"
        ) from None


def encoder(
    name: str,
    in_shape: Sequence[int],
    out_features: int,
    hidden: Sequence[int] = (200, 200),
    activation_name: str = "tanh",
    channels: Sequence[int] | None = None,
    batch_norm: bool = False,
) -> nn.Module:
    """Network ``(..., *in_shape) -> (..., out_features)`` of family ``name``."""
    return _arch(name)[0](in_shape, out_features, hidden, activation_name, channels, batch_norm)


def decoder(
    name: str,
    in_features: int,
    out_shape: Sequence[int],
    hidden: Sequence[int] = (200, 200),
    activation_name: str = "tanh",
    channels: Sequence[int] | None = None,
    batch_norm: bool = False,
) -> nn.Module:
    """Network ``(..., in_features) -> (..., *out_shape)`` of family ``name``, mirroring
    :func:`encoder` (hidden widths reversed)."""
    return _arch(name)[1](in_features, out_shape, hidden, activation_name, channels, batch_norm)


__all__ = [
    "ACTIVATIONS",
    "ARCHITECTURES",
    "MLP",
    "CausalSelfAttention",
    "ConvDecoder",
    "ConvEncoder",
    "ConvMapDecoder",
    "ConvMapEncoder",
    "GatedPixelCNN",
    "NormalHead",
    "ResidualStack",
    "activation",
    "decoder",
    "default_channels",
    "encoder",
    "flatten_leading",
]
