"""Evaluation metrics that work on any model/guide pair, and disentanglement scores."""

from .disentanglement import (
    dci,
    discretize,
    factor_vae_score,
    mig,
    mig_histogram,
    posterior_mean_fn,
)
from .latents import active_units, per_dimension_kl, posterior_moments
from .likelihood import elbo, importance_sampling, log_likelihood, summary

__all__ = ["active_units", "dci", "discretize", "elbo", "factor_vae_score", "importance_sampling",
           "log_likelihood", "mig", "mig_histogram", "per_dimension_kl", "posterior_mean_fn",
           "posterior_moments", "summary"]
