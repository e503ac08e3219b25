"""Posterior analysis: ArviZ export, generic reconstructions and samples, figures."""

from .codebook import plot_code_usage
from .inference_data import import_arviz, to_inference_data
from .plots import image_grid, plot_history, plot_latent, plot_reconstructions, plot_samples
from .predictive import latent_means, prior_predictive_mean, reconstruct

__all__ = ["image_grid", "import_arviz", "latent_means", "plot_code_usage", "plot_history",
           "plot_latent", "plot_reconstructions", "plot_samples", "prior_predictive_mean",
           "reconstruct", "to_inference_data"]
