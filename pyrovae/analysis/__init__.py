"""Posterior analysis: ArviZ export, per-data-point PSIS diagnostics, model comparison,
generic reconstructions and samples, figures."""

from .codebook import plot_code_usage
from .compare import compare, elpd
from .inference_data import (
    import_arviz,
    load_inference_data,
    save_inference_data,
    to_inference_data,
)
from .latent_plots import (
    decode_codes,
    plot_kl_per_dimension,
    plot_matrix,
    plot_mi_matrix,
    plot_traversals,
    traverse,
)
from .plots import (
    image_grid,
    is_vector_data,
    plot_history,
    plot_latent,
    plot_reconstructions,
    plot_samples,
    plot_vector_reconstructions,
    plot_vector_samples,
)
from .posterior_plots import (
    plot_khat,
    plot_khat_distributions,
    plot_khat_vs_recon,
    plot_latent_map,
    plot_posterior,
    plot_posterior_predictive,
    plot_worst_inputs,
)
from .predictive import latent_means, prior_predictive_mean, prior_predictive_sample, reconstruct
from .psis import good_khat, importance_log_weights, psis, psis_diagnostics

__all__ = [
    "compare",
    "decode_codes",
    "elpd",
    "good_khat",
    "image_grid",
    "import_arviz",
    "importance_log_weights",
    "is_vector_data",
    "latent_means",
    "load_inference_data",
    "plot_code_usage",
    "plot_history",
    "plot_khat",
    "plot_khat_distributions",
    "plot_khat_vs_recon",
    "plot_kl_per_dimension",
    "plot_latent",
    "plot_latent_map",
    "plot_matrix",
    "plot_mi_matrix",
    "plot_posterior",
    "plot_posterior_predictive",
    "plot_reconstructions",
    "plot_samples",
    "plot_traversals",
    "plot_vector_reconstructions",
    "plot_vector_samples",
    "plot_worst_inputs",
    "prior_predictive_mean",
    "prior_predictive_sample",
    "psis",
    "psis_diagnostics",
    "reconstruct",
    "save_inference_data",
    "to_inference_data",
    "traverse",
]
