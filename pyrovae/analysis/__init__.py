"""Posterior analysis: ArviZ export, generic reconstructions and samples, figures."""

from .inference_data import import_arviz, to_inference_data
from .latent_plots import (
    decode_codes,
    plot_kl_per_dimension,
    plot_matrix,
    plot_mi_matrix,
    plot_traversals,
    traverse,
)
from .plots import image_grid, plot_history, plot_latent, plot_reconstructions, plot_samples
from .predictive import latent_means, prior_predictive_mean, reconstruct

__all__ = ["decode_codes", "image_grid", "import_arviz", "latent_means", "plot_history",
           "plot_kl_per_dimension", "plot_latent", "plot_matrix", "plot_mi_matrix",
           "plot_reconstructions", "plot_samples", "plot_traversals", "prior_predictive_mean",
           "reconstruct", "to_inference_data", "traverse"]
