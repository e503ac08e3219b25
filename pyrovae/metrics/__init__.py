"""Evaluation metrics that work on any model/guide pair."""

from .likelihood import (
    elbo,
    importance_sampling,
    log_likelihood,
    log_weight_chunks,
    summary,
)

__all__ = ["elbo", "importance_sampling", "log_likelihood", "log_weight_chunks", "summary"]
