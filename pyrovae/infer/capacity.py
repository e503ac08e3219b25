r"""Capacity-annealed β-VAE (Burgess et al. 2018, eq. 2).

Instead of weighting the KL, the objective holds it near a target capacity C (nats per data
point) that grows during training, so the code takes on information gradually:

.. math::

   \mathcal L = \mathbb E_{q(z \mid x)}[\log p_\theta(x \mid z)]
                - \gamma\, \bigl|\mathrm{KL}(q(z \mid x) \,\|\, p(z)) - C\bigr|,

with C raised linearly from 0 to :math:`C_\max` (the paper: γ = 1000, C_max = 25 nats over
100,000 iterations on dSprites). The KL is the batch's mean per data point, analytic where
Pyro's ``kl_divergence`` knows the pair (the paper's Gaussian case) and a one-sample
Monte-Carlo estimate otherwise; as a Pyro loss (summed over the batch of n points) that is
:math:`-\sum_i \log p(x_i \mid z_i) + \gamma\, |\sum_i \mathrm{KL}_i - nC|`.

The loss follows the optimiser step: under :func:`pyrovae.fit` it is also a callback (fit adds
it), so C is exact across resumes; under Pyro's ``SVI`` it counts its own calls.

Reference: Burgess, Higgins, Pal, Matthey, Watters, Desjardins and Lerchner (2018)
Understanding disentangling in β-VAE, arXiv:1804.03599.
"""

from __future__ import annotations

import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import torch_item

from .. import checks
from ..callbacks import StepFollower
from ._sites import data_size
from .registry import register_loss
from .schedules import Schedule, as_schedule
from .terms import ReportsTerms


def observed_log_prob(model_trace):
    r""":math:`\sum \log p(x \mid z)` over the model's observed sites (scaled and masked)."""
    total = 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample" and site["is_observed"] \
                and not site["infer"].get("_deterministic"):
            total = total + site["log_prob_sum"]
    return total


def latent_kl(model_trace, guide_trace, analytic: bool = True) -> torch.Tensor:
    """Sum over latent sites of KL(q || p), scaled and masked as the sites are, as Pyro's own
    estimators compute it: the part of ``TraceMeanField_ELBO``'s particle loss (``analytic``:
    closed form where ``kl_divergence`` knows the pair, else ``log q - log p`` at the draw) or
    ``Trace_ELBO``'s (Monte Carlo) that is not the likelihood."""
    for name, g in guide_trace.nodes.items():
        if g["type"] != "sample" or g["is_observed"]:
            continue
        if name not in model_trace.nodes:
            raise ValueError(f"guide site {name!r} has no counterpart in the model")
        if not g["fn"].has_rsample:
            raise ValueError(f"TraceCapacity_ELBO: latent site {name!r} must be reparametrised "
                             f"(its {type(g['fn']).__name__} has no rsample)")
    estimator = TraceMeanField_ELBO if analytic else Trace_ELBO
    _, negative_elbo = estimator._differentiable_loss_particle(None, model_trace, guide_trace)
    return negative_elbo + observed_log_prob(model_trace)


@register_loss("capacity_elbo")
class TraceCapacity_ELBO(ReportsTerms, Trace_ELBO, StepFollower):
    r"""Burgess et al. (2018, eq. 2) as a Pyro loss for any model/guide pair with reparametrised
    latent sites.

    :param capacity: :math:`C_\max`, the final target KL in nats per data point, or a schedule
        ``step -> C`` (then ``steps`` and ``start`` are ignored).
    :param gamma: γ, the weight of :math:`|KL - C|`.
    :param steps: optimiser steps over which C rises linearly from ``start`` to ``capacity``.
    :param analytic: use the analytic KL when available (else Monte Carlo).
    :param plate: the data plate's name (used to count data points when there are several).

    With ``gamma=1`` and a capacity of 0 it is :class:`~pyro.infer.TraceMeanField_ELBO`
    (``analytic=True``) in value and gradient; so is it :class:`~pyro.infer.Trace_ELBO`
    (``analytic=False``) whenever the batch's Monte-Carlo KL is positive. ``last_terms``:
    ``capacity`` (C used) and ``kl_gap`` (KL - C, per data point).
    """

    def __init__(self, capacity=25.0, gamma: float = 1000.0, steps: int = 100000, *,
                 start: float = 0.0, analytic: bool = True, plate: str = "data", **kwargs):
        checks.finite_number(gamma, "gamma", positive=True)
        if kwargs.get("vectorize_particles"):
            raise ValueError("vectorize_particles: not supported (|KL - C| is taken per "
                             "particle); use num_particles with vectorize_particles=False")
        super().__init__(**kwargs)
        if callable(capacity):
            self.schedule = capacity
        else:
            as_schedule(capacity)  # checks it is a number >= 0
            self.schedule = Schedule(start, float(capacity), steps, shape="linear")
        self.gamma, self.analytic, self.plate = float(gamma), bool(analytic), plate
        self.step = 0
        self.last_terms: dict[str, float] = {}

    @property
    def capacity(self) -> float:
        """C at the current step (nats per data point)."""
        return float(self.schedule(self.step))

    def _particle(self, model_trace, guide_trace):
        recon = observed_log_prob(model_trace)
        kl = latent_kl(model_trace, guide_trace, self.analytic)
        n = data_size(model_trace, plate=self.plate)
        c = self.capacity
        loss = -recon + self.gamma * (kl - n * c).abs()
        guide_trace.capacity_terms = {"capacity": c, "kl_gap": torch_item(kl.detach()) / n - c}
        return loss

    def step_terms(self, model_trace, guide_trace) -> dict[str, float]:
        return guide_trace.capacity_terms

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            total = sum(torch_item(self._particle(m, g))
                        for m, g in self._get_traces(model, guide, args, kwargs))
        return total / self.num_particles

    def differentiable_loss(self, model, guide, *args, **kwargs):
        total = 0.0
        for m, g in self._get_traces(model, guide, args, kwargs):
            total = total + self._particle(m, g) / self.num_particles
        self.advance()
        return total

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return torch_item(loss)
