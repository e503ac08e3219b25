"""Evaluation metrics that work on any model/guide pair."""

from .gradients import GradientMoments, gradient_variance
from .likelihood import (
    elbo,
    importance_sampling,
    log_likelihood,
    log_weight_chunks,
    summary,
)

__all__ = ["GradientMoments", "elbo", "gradient_variance", "importance_sampling",
           "log_likelihood", "log_weight_chunks", "summary"]
