"""Reconstructions, prior samples and latent means of any model/guide pair: defined in
:mod:`pyrovae.infer.predictive` (metrics use them too), shown here beside the figures."""

from ..infer.predictive import (
    _observed_site,
    latent_means,
    prior_predictive_mean,
    prior_predictive_sample,
    reconstruct,
)

__all__ = ["_observed_site", "latent_means", "prior_predictive_mean", "prior_predictive_sample",
           "reconstruct"]
