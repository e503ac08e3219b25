"""Evaluation metrics that work on any model/guide pair, and disentanglement scores."""

from .codebook import (
    bits_per_dim,
    code_counts,
    codebook_usage,
    reconstruction_mse,
    usage_summary,
)
from .disentanglement import (
    dci,
    discretize,
    factor_vae_score,
    mig,
    mig_histogram,
    posterior_mean_fn,
)
from .gradients import GradientMoments, gradient_variance
from .latents import active_units, per_dimension_kl, posterior_moments
from .likelihood import (
    elbo,
    importance_sampling,
    log_likelihood,
    log_weight_chunks,
    summary,
)

__all__ = [
    "GradientMoments",
    "active_units",
    "bits_per_dim",
    "code_counts",
    "codebook_usage",
    "dci",
    "discretize",
    "elbo",
    "factor_vae_score",
    "gradient_variance",
    "importance_sampling",
    "log_likelihood",
    "log_weight_chunks",
    "mig",
    "mig_histogram",
    "per_dimension_kl",
    "posterior_mean_fn",
    "posterior_moments",
    "reconstruction_mse",
    "summary",
    "usage_summary",
]
