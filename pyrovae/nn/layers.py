"""Small shared pieces: activations by name and leading-dimension handling."""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def activation(name: str) -> nn.Module:
    """Returns a fresh activation module for ``name`` (one of :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"activation: expected one of {sorted(ACTIVATIONS)}, got {name!r}"
        ) from None


def as_shape(shape, name: str) -> tuple[int, ...]:
    """Normalises an int or sequence of positive ints to a tuple, naming ``name`` on failure."""
    if isinstance(shape, int):
        shape = (shape,)
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a sequence of positive ints, got {shape!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"{name}: expected a non-empty sequence of positive ints, got {shape!r}")
    return shape


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def flatten_leading(x: torch.Tensor, event_dims: int) -> tuple[torch.Tensor, torch.Size]:
    """Folds every dim left of the last ``event_dims`` into one batch dim.

    Networks here accept any number of leading batch dims, e.g. ``(particles, batch, *event)``
    when Pyro vectorises over particles; layers such as Conv2d and BatchNorm take exactly one.
    Returns the folded tensor ``(prod(leading), *event)`` and the leading shape to restore.
    """
    if x.dim() < event_dims:
        raise ValueError(
            f"input: expected at least {event_dims} dims (..., event), got shape {tuple(x.shape)}"
        )
    lead = x.shape[: x.dim() - event_dims]
    return x.reshape(-1, *x.shape[x.dim() - event_dims :]), lead
