"""Objectives and inference helpers that work on Pyro traces, so on any model/guide pair.

Every loss registers itself beside its class (:func:`register_loss`); :func:`make_loss` builds
one from a registered name or an import path ``module:Name``, as the CLI takes it.
"""

from __future__ import annotations

from .capacity import TraceCapacity_ELBO
from .concrete import TraceConcrete_ELBO
from .enum import TraceEnumGuide_ELBO
from .lean import lean_elbo
from .mmd import TraceMMD_ELBO, mmd2
from .nvae_elbo import TraceNVAE_ELBO
from .particles import ParticleTracer
from .predictive import latent_means, prior_predictive_mean, reconstruct
from .proximal import ProximalGroupLasso, group_soft_threshold
from .registry import LOSSES, iwae, loss_arguments, make_loss, register_loss, resolve_loss
from .schedules import (
    Beta,
    KLWarmup,
    LatentScaleMessenger,
    LatentScaleSchedule,
    ScaledLatentELBO,
    Schedule,
    beta_elbo,
    scale_latents,
    warmup_elbo,
)
from .score import TraceScore_ELBO
from .tc import TraceTC_ELBO
from .terms import ReportsTerms, elbo_terms, trace_terms
from .traces import guide_model_traces
from .vq_elbo import TraceVQ_ELBO, vq_terms

__all__ = [
    "Beta",
    "KLWarmup",
    "LOSSES",
    "LatentScaleMessenger",
    "LatentScaleSchedule",
    "ParticleTracer",
    "ProximalGroupLasso",
    "ReportsTerms",
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
    "beta_elbo",
    "elbo_terms",
    "group_soft_threshold",
    "guide_model_traces",
    "iwae",
    "latent_means",
    "lean_elbo",
    "loss_arguments",
    "make_loss",
    "mmd2",
    "prior_predictive_mean",
    "reconstruct",
    "register_loss",
    "resolve_loss",
    "scale_latents",
    "trace_terms",
    "vq_terms",
    "warmup_elbo",
]
