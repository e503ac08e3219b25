"""Evaluation metrics that work on any model/guide pair."""

from .codebook import (
    bits_per_dim,
    code_counts,
    codebook_usage,
    reconstruction_mse,
    usage_summary,
)
from .gradients import GradientMoments, gradient_variance
from .likelihood import (
    elbo,
    importance_sampling,
    log_likelihood,
    log_weight_chunks,
    summary,
)

__all__ = ["GradientMoments", "bits_per_dim", "code_counts", "codebook_usage", "elbo",
           "gradient_variance", "importance_sampling", "log_likelihood", "log_weight_chunks",
           "reconstruction_mse", "summary", "usage_summary"]
