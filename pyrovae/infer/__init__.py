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


def _iwae(num_particles: int = 50, **kw):
    # IWAE bound (Burda et al. 2016, eq. 8) is the Renyi bound at alpha = 0 (Li and Turner 2016).
    return pi.RenyiELBO(alpha=0.0, num_particles=num_particles, **kw)


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


__all__ = ["LOSSES", "ParticleTracer", "TraceConcrete_ELBO", "TraceEnumGuide_ELBO",
           "TraceScore_ELBO", "TraceVQ_ELBO", "elbo_terms", "make_loss", "vq_terms"]
