"""Observation models p(x | decoder output).

A likelihood is an ``nn.Module`` that turns the decoder's raw output into a Pyro distribution
whose event shape is one datum. It owns any parameters of its own (a learned noise scale), tells
the decoder how many numbers it needs per observed value (:attr:`Likelihood.num_params`), and
checks data against its support once, at the boundary, so the training loop need not.

Registered by name in :data:`LIKELIHOODS` for configs and the CLI.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ..nn.layers import as_shape


class Likelihood(nn.Module):
    """Base class. ``forward(params) -> Distribution`` with ``event_shape == self.event_shape``.

    ``params`` has shape ``(..., num_params * C, *rest)`` for an event ``(C, *rest)``: the
    likelihood's parameter blocks are stacked along the first event dim.
    """

    num_params: int = 1
    #: short description of the support, for error messages
    support_text: str = "real numbers"

    def __init__(self, event_shape):
        super().__init__()
        self.event_shape = as_shape(event_shape, "likelihood event_shape")

    @property
    def param_shape(self) -> tuple[int, ...]:
        """Shape of the decoder output for one datum."""
        return (self.num_params * self.event_shape[0], *self.event_shape[1:])

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return params.chunk(self.num_params, dim=params.dim() - len(self.event_shape))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x | params], shape ``(..., *event_shape)``."""
        return self(params).mean

    def outside_support(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean mask of entries of ``x`` outside the support."""
        return ~torch.isfinite(x)

    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        """Raises ``ValueError`` naming ``name`` if this likelihood cannot observe ``x``."""
        shape = tuple(x.shape[-len(self.event_shape):]) if x.dim() else ()
        if x.dim() <= len(self.event_shape) - 1 or shape != self.event_shape:
            raise ValueError(
                f"{name}: expected shape (N, {', '.join(map(str, self.event_shape))}) for a "
                f"{type(self).__name__} likelihood over events of shape {self.event_shape}, "
                f"got {tuple(x.shape)}"
            )
        bad = self.outside_support(x)
        if bool(bad.any()):
            i = int(bad.reshape(-1).nonzero()[0])
            raise ValueError(
                f"{name}: a {type(self).__name__} likelihood needs {self.support_text}; "
                f"{int(bad.sum())} value(s) are outside it, e.g. {x.reshape(-1)[i].item()!r}"
            )


class Bernoulli(Likelihood):
    """x ~ Bernoulli(sigmoid(logits)) independently per element; decoder outputs logits."""

    support_text = "values in {0, 1} (binarise the data first)"

    def forward(self, params):
        return dist.Bernoulli(logits=params).to_event(len(self.event_shape))

    def mean(self, params):
        return torch.sigmoid(params)

    def outside_support(self, x):
        return (x != 0) & (x != 1)


class Gaussian(Likelihood):
    """x ~ Normal(loc, scale) independently per element.

    ``scale`` is a fixed positive float, ``"learned"`` (one shared scale, as in probabilistic
    PCA), ``"learned_per_dim"`` (one per element of the event), or ``"predicted"`` (the decoder
    outputs ``(loc, raw scale)``). Learned and predicted scales are ``softplus(raw) + min_scale``.
    """

    _MODES = ("learned", "learned_per_dim", "predicted")

    def __init__(self, event_shape, scale: float | str = 1.0, min_scale: float = 1e-3,
                 init_scale: float = 1.0):
        super().__init__(event_shape)
        if isinstance(scale, str):
            if scale not in self._MODES:
                raise ValueError(
                    f"Gaussian scale: expected a positive float or one of {self._MODES}, "
                    f"got {scale!r}"
                )
        elif not (isinstance(scale, (int, float)) and scale > 0 and math.isfinite(scale)):
            raise ValueError(f"Gaussian scale: expected a positive finite float, got {scale!r}")
        self.mode = scale if isinstance(scale, str) else "fixed"
        self.min_scale = float(min_scale)
        self.num_params = 2 if self.mode == "predicted" else 1
        # softplus^{-1}(init_scale - min_scale): the learned scale starts at init_scale
        raw = math.log(math.expm1(max(init_scale - self.min_scale, 1e-6)))
        if self.mode == "learned":
            self.raw_scale = nn.Parameter(torch.tensor(raw))
        elif self.mode == "learned_per_dim":
            self.raw_scale = nn.Parameter(torch.full(self.event_shape, raw))
        elif self.mode == "fixed":
            self.register_buffer("fixed_scale", torch.tensor(float(scale)))

    def _loc_scale(self, params):
        if self.mode == "predicted":
            loc, raw = self._split(params)
            return loc, F.softplus(raw) + self.min_scale
        if self.mode == "fixed":
            return params, self.fixed_scale.expand_as(params)
        return params, (F.softplus(self.raw_scale) + self.min_scale).expand_as(params)

    def forward(self, params):
        loc, scale = self._loc_scale(params)
        return dist.Normal(loc, scale).to_event(len(self.event_shape))

    def mean(self, params):
        return self._loc_scale(params)[0]


from .logistic import (  # noqa: E402  (they subclass Likelihood, defined above)
    CoupledLogisticMixture,
    DiscretizedLogistic,
    DiscretizedLogisticDistribution,
    DiscretizedLogisticMixture,
)

LIKELIHOODS = {
    "bernoulli": Bernoulli,
    "gaussian": Gaussian,
    "discretized_logistic": DiscretizedLogistic,
    "discretized_logistic_mixture": DiscretizedLogisticMixture,
}


def likelihood(name: str, event_shape, **kwargs) -> Likelihood:
    """Builds the likelihood registered as ``name`` for events of shape ``event_shape``."""
    try:
        cls = LIKELIHOODS[name]
    except KeyError:
        raise ValueError(
            f"likelihood: expected one of {sorted(LIKELIHOODS)}, got {name!r}") from None
    try:
        return cls(event_shape, **kwargs)
    except TypeError as e:
        raise ValueError(f"likelihood {name!r}: bad arguments {kwargs}: {e}") from None


__all__ = [
    "LIKELIHOODS",
    "Bernoulli",
    "CoupledLogisticMixture",
    "DiscretizedLogistic",
    "DiscretizedLogisticDistribution",
    "DiscretizedLogisticMixture",
    "Gaussian",
    "Likelihood",
    "likelihood",
]
