"""Evaluation metrics that work on any model/guide pair."""

from .codebook import (
    bits_per_dim,
    code_counts,
    codebook_usage,
    reconstruction_mse,
    usage_summary,
)
from .likelihood import elbo, importance_sampling, log_likelihood, summary

__all__ = ["bits_per_dim", "code_counts", "codebook_usage", "elbo", "importance_sampling",
           "log_likelihood", "reconstruction_mse", "summary", "usage_summary"]
