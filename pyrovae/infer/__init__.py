"""Objectives and inference helpers that work on Pyro traces, so on any model/guide pair.

:func:`make_loss` builds a loss from a name (as the CLI takes it); new objectives register in
:data:`LOSSES`.
"""

from __future__ import annotations

import pyro.infer as pi

from .concrete import TraceConcrete_ELBO
from .enum import TraceEnumGuide_ELBO
from .particles import ParticleTracer
from .score import TraceScore_ELBO
from .terms import elbo_terms
from .vq_elbo import TraceVQ_ELBO, vq_terms

# isort: off
# These import pyrovae.train (for Callback), which imports elbo_terms from here: keep them below.
from .capacity import TraceCapacity_ELBO
from .mmd import TraceMMD_ELBO, mmd2
from .nvae_elbo import TraceNVAE_ELBO
from .proximal import ProximalGroupLasso, group_soft_threshold
from .schedules import (
    Beta,
    KLWarmup,
    LatentScaleMessenger,
    LatentScaleSchedule,
    ScaledLatentELBO,
    Schedule,
    scale_latents,
)
from .tc import TraceTC_ELBO
# isort: on


def _iwae(num_particles: int = 50, **kw):
    # IWAE bound (Burda et al. 2016, eq. 8) is the Renyi bound at alpha = 0 (Li and Turner 2016).
    return pi.RenyiELBO(alpha=0.0, num_particles=num_particles, **kw)


def _beta_elbo(beta: float = 4.0, base: str = "trace_elbo", **kw):
    # beta-VAE (Higgins et al. 2017): any registered ELBO on beta-scaled latent sites.
    return ScaledLatentELBO(make_loss(base, **kw), beta)


def _warmup_elbo(
    steps: int = 10000,
    shape: str = "linear",
    start: float = 0.0,
    end: float = 1.0,
    delay: int = 0,
    base: str = "trace_elbo",
    **kw,
):
    # KL warm-up (Sonderby et al. 2016): the latent sites' weight follows a Schedule.
    return ScaledLatentELBO(
        make_loss(base, **kw), Schedule(start, end, steps, shape=shape, delay=delay)
    )


LOSSES = {
    "trace_elbo": pi.Trace_ELBO,
    "meanfield_elbo": pi.TraceMeanField_ELBO,
    "tracegraph_elbo": pi.TraceGraph_ELBO,
    "renyi_elbo": pi.RenyiELBO,
    "iwae": _iwae,
    "score_elbo": TraceScore_ELBO,
    "concrete_elbo": TraceConcrete_ELBO,
    "enum_elbo": TraceEnumGuide_ELBO,
    "vq_elbo": TraceVQ_ELBO,  # Trace_ELBO that also logs codebook/commitment/perplexity
    "beta_elbo": _beta_elbo,
    "warmup_elbo": _warmup_elbo,
    "capacity_elbo": TraceCapacity_ELBO,
    "tc_elbo": TraceTC_ELBO,
    "mmd_elbo": TraceMMD_ELBO,
    "nvae_elbo": TraceNVAE_ELBO,  # NVAE: spectral/BN regularisers, KL warm-up and balancing
}


def make_loss(name: str = "trace_elbo", **kwargs):
    """The loss registered as ``name``, built with ``kwargs`` (e.g. ``num_particles=5``)."""
    try:
        factory = LOSSES[name]
    except KeyError:
        raise ValueError(f"loss: expected one of {sorted(LOSSES)}, got {name!r}") from None
    try:
        return factory(**kwargs)
    except TypeError as e:
        raise ValueError(f"loss {name!r}: bad arguments {kwargs}: {e}") from None


__all__ = [
    "Beta",
    "KLWarmup",
    "LOSSES",
    "LatentScaleMessenger",
    "LatentScaleSchedule",
    "ParticleTracer",
    "ProximalGroupLasso",
    "ScaledLatentELBO",
    "Schedule",
    "TraceCapacity_ELBO",
    "TraceConcrete_ELBO",
    "TraceEnumGuide_ELBO",
    "TraceMMD_ELBO",
    "TraceNVAE_ELBO",
    "TraceScore_ELBO",
    "TraceTC_ELBO",
    "TraceVQ_ELBO",
    "elbo_terms",
    "group_soft_threshold",
    "make_loss",
    "mmd2",
    "scale_latents",
    "vq_terms",
]
