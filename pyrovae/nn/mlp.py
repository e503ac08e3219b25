"""Fully connected networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import activation, as_shape, flatten_leading, numel


class MLP(nn.Module):
    """Fully connected network from tensors of shape ``in_shape`` to tensors of ``out_shape``.

    ``x: (..., *in_shape) -> (..., *out_shape)``: trailing dims are flattened, leading batch dims
    are kept. Hidden layers are ``Linear -> [BatchNorm1d] -> activation``; the last layer is
    linear. Burda et al. (2016, §5) use ``hidden=(200, 200)`` with tanh for MNIST.
    """

    def __init__(
        self,
        in_shape: int | Sequence[int],
        out_shape: int | Sequence[int],
        hidden: Sequence[int] = (200, 200),
        activation_name: str = "tanh",
        batch_norm: bool = False,
    ):
        super().__init__()
        self.in_shape = as_shape(in_shape, "MLP in_shape")
        self.out_shape = as_shape(out_shape, "MLP out_shape")
        widths = [numel(self.in_shape), *[int(h) for h in hidden]]
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers.append(nn.Linear(w_in, w_out))
            if batch_norm:
                layers.append(nn.BatchNorm1d(w_out))
            layers.append(activation(activation_name))
        layers.append(nn.Linear(widths[-1], numel(self.out_shape)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, lead = flatten_leading(x, len(self.in_shape))  # (M, *in_shape)
        h = self.net(h.reshape(h.shape[0], -1))  # (M, prod(out_shape))
        return h.reshape(*lead, *self.out_shape)
