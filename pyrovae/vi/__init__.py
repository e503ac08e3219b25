"""Classic variational inference beside the VAE: CAVI, EM, natural-gradient and stochastic VI.

These work on specific conjugate-exponential models in closed form (CAVI, EM) or on Gaussian
variational families (the natural-gradient optimiser), so they live apart from
:mod:`pyrovae.infer`, whose objectives work on any Pyro model/guide pair. The Pyro programs
here (:class:`ConjugateGaussian`, :class:`GaussianMixtureSVI`) have global latents and
subsample their data plate, for :func:`pyrovae.fit` with mini-batches.

- :func:`cavi` with :class:`GaussianMixture` (Blei et al. 2017, §3) or :class:`NormalGamma`;
  subclass :class:`MeanFieldModel` for another conditionally conjugate model.
- :func:`em_gaussian_mixture`: EM, and hard EM (k-means) as its limit.
- :class:`NaturalGradient` / :func:`natural_gradient`: Fisher-preconditioned steps for
  mean-field Gaussian guides, as a ``torch.optim`` optimiser ``fit`` accepts.
"""

from .cavi import CAVIResult, GaussianMixture, MeanFieldModel, NormalGamma, cavi
from .conjugate import ConjugateGaussian
from .em import EMResult, em_gaussian_mixture, kmeans_objective
from .mixture import GaussianMixtureSVI
from .natural_gradient import NaturalGradient, natural_gradient

__all__ = [
    "CAVIResult",
    "ConjugateGaussian",
    "EMResult",
    "GaussianMixture",
    "GaussianMixtureSVI",
    "MeanFieldModel",
    "NaturalGradient",
    "NormalGamma",
    "cavi",
    "em_gaussian_mixture",
    "kmeans_objective",
    "natural_gradient",
]
