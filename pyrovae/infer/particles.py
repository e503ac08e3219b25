"""Vectorised importance sampling for any model/guide pair, per data point.

:class:`ParticleTracer` runs the guide under an extra ``pyro.plate`` of ``P`` particles (left of
every plate the program declares), replays the model against it, and reduces each site's
log-density to a ``(P, B)`` tensor: one value per particle and data point. From these come the
importance weights :math:`\\log w = \\log p(x, z) - \\log q(z \\mid x)` used by
:func:`pyrovae.metrics.log_likelihood`, and the draws exported to ArviZ.

The data plate is the plate of size ``B`` that holds the observation (the one named ``"data"``
when several qualify, or the one given). Per-data-point estimates need every latent site inside
it; a global latent site makes log p(x_i) non-separable and is refused with its name, unless
``global_latents=True``: then global sites (theta) are kept apart, :meth:`log_weights` gives the
local weights :math:`\\log p(x_i, z_i \\mid \\theta) - \\log q(z_i \\mid x_i, \\theta)` given each
particle's theta, and :meth:`global_log_weights` the remaining
:math:`\\log p(\\theta) - \\log q(\\theta)` per particle.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from .traces import guide_model_traces

_PARTICLES = "_pyrovae_particles"


@dataclass
class SiteInfo:
    name: str
    observed: bool
    event_dim: int


class ParticleTracer:
    """Structure of a model/guide pair learnt from one un-vectorised run on ``kwargs``.

    ``plate`` names the data plate when the automatic choice is ambiguous. ``global_latents``
    keeps latent sites outside the data plate (listed in ``global_latent``) instead of refusing
    them.
    """

    def __init__(self, model, guide, kwargs: dict, batch_size: int, plate: str | None = None,
                 *, global_latents: bool = False):
        self.model, self.guide = model, guide
        model_tr, guide_tr = guide_model_traces(model, guide, kwargs)
        dims, frames = [], {}
        for tr in (model_tr, guide_tr):
            for site in tr.nodes.values():
                if site["type"] == "sample":
                    for f in site["cond_indep_stack"]:
                        if f.vectorized:
                            dims.append(f.dim)
                            frames[f.name] = f
        self.max_plate_nesting = -min(dims) if dims else 0
        self.latent = [
            SiteInfo(n, False, s["fn"].event_dim) for n, s in guide_tr.nodes.items()
            if s["type"] == "sample" and not s["is_observed"]
        ]
        self.observed = [
            SiteInfo(n, True, s["fn"].event_dim) for n, s in model_tr.nodes.items()
            if s["type"] == "sample" and s["is_observed"]
            and not s["infer"].get("_deterministic")
        ]
        if not self.observed:
            raise ValueError("model: no observed sample site (pyro.sample(..., obs=x)) was found")
        obs_site = model_tr.nodes[self.observed[0].name]
        candidates = [f for f in obs_site["cond_indep_stack"]
                      if f.vectorized and f.size == batch_size]
        if plate is not None:
            candidates = [f for f in candidates if f.name == plate]
            if not candidates:
                raise ValueError(f"plate: the observed site {obs_site['name']!r} is not inside a "
                                 f"plate named {plate!r} of size {batch_size}")
        elif len(candidates) > 1:
            named = [f for f in candidates if f.name == "data"]
            if len(named) != 1:
                raise ValueError(
                    f"plate: several plates of size {batch_size} hold the observation "
                    f"({[f.name for f in candidates]}); pass plate= to pick the data plate"
                )
            candidates = named
        if not candidates:
            raise ValueError(
                f"model: the observed site {obs_site['name']!r} is not inside a plate of the "
                f"batch size {batch_size}; per-data-point estimates need pyro.plate over the data"
            )
        self.plate = candidates[0].name
        self.plate_dim = candidates[0].dim
        pairs = [(i, guide_tr) for i in self.latent] + [(i, model_tr) for i in self.observed]
        self.global_latent = []
        for info, tr in pairs:
            if self.plate not in [f.name for f in tr.nodes[info.name]["cond_indep_stack"]]:
                if global_latents and not info.observed:
                    self.global_latent.append(info)
                    continue
                raise ValueError(
                    f"site {info.name!r} is outside the data plate {self.plate!r}: it is a "
                    f"global variable, so log p(x_i) does not factorise over data points"
                )
        self.global_names = {s.name for s in self.global_latent}
        self.latent = [s for s in self.latent if s.name not in self.global_names]
        self.latent_names = [s.name for s in self.latent]

    def traces(self, kwargs: dict, num_particles: int):
        """Guide and replayed model traces with ``num_particles`` particles in a plate at dim
        ``-(max_plate_nesting + 1)``, log-densities computed."""
        plate = pyro.plate(_PARTICLES, num_particles, dim=-(self.max_plate_nesting + 1))
        guide_tr = poutine.trace(plate(self.guide)).get_trace(**kwargs)
        model_tr = poutine.trace(
            poutine.replay(plate(self.model), trace=guide_tr)
        ).get_trace(**kwargs)
        guide_tr, model_tr = prune_subsample_sites(guide_tr), prune_subsample_sites(model_tr)
        guide_tr.compute_log_prob()
        model_tr.compute_log_prob()
        return model_tr, guide_tr

    def per_datum(self, log_prob: torch.Tensor, num_particles: int, batch_size: int):
        """Sums a site's batch-shaped log-density over every dim except particles and data:
        ``(..., P?, ..., B?, ...) -> (P, B)``."""
        n = self.max_plate_nesting + 1
        if log_prob.dim() > n:
            raise ValueError(f"log_prob of shape {tuple(log_prob.shape)} has more batch dims "
                             f"than the {n} plates (particles included)")
        lp = log_prob.reshape((1,) * (n - log_prob.dim()) + tuple(log_prob.shape))
        data_axis = n + self.plate_dim
        others = [i for i in range(1, n) if i != data_axis]
        if others:
            lp = lp.sum(others)
        return lp.expand(num_particles, batch_size)

    def log_weights(self, model_tr, guide_tr, num_particles: int, batch_size: int):
        """``(P, B)`` log importance weights ``log p(x, z) - log q(z | x)`` (given each
        particle's global latents, when there are any)."""
        total = 0.0
        for name, site in model_tr.nodes.items():
            if site["type"] == "sample" and name not in self.global_names:
                total = total + self.per_datum(site["log_prob"], num_particles, batch_size)
        for name, site in guide_tr.nodes.items():
            if site["type"] == "sample" and not site["is_observed"] \
                    and name not in self.global_names:
                total = total - self.per_datum(site["log_prob"], num_particles, batch_size)
        if not torch.is_tensor(total):
            total = torch.zeros(num_particles, batch_size)
        return total

    def global_log_weights(self, model_tr, guide_tr, num_particles: int) -> torch.Tensor:
        """``(P,)`` log weights of the global latents, ``log p(theta) - log q(theta)``
        (zeros when there are none)."""
        total = torch.zeros(num_particles)
        for name in self.global_names:
            for tr, sign in ((model_tr, 1.0), (guide_tr, -1.0)):
                if name not in tr.nodes:
                    continue
                lp = tr.nodes[name]["log_prob"]
                n = self.max_plate_nesting + 1
                lp = lp.reshape((1,) * (n - lp.dim()) + tuple(lp.shape))  # (P?, plates...)
                lp = lp.sum(tuple(range(1, n))).expand(num_particles)
                total = total.to(lp.device) + sign * lp
        return total
