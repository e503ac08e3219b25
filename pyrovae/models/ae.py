"""The deterministic auto-encoder, the baseline VAEs are compared against."""

from __future__ import annotations

import pyro
import torch
from pyro.nn import pyro_method

from ..protocol import register_model
from .vae import _Autoencoder, full_precision


@register_model("ae")
class AE(_Autoencoder):
    r"""Deterministic auto-encoder on the same networks and likelihood as :class:`VAE`.

    Code :math:`z = f_\phi(x)`; the model scores :math:`\log p_\theta(x \mid f_\phi(x))`, so with
    an empty guide any Pyro ELBO reduces to the reconstruction log-likelihood (squared error
    for a fixed-scale Gaussian, cross-entropy for a Bernoulli). There is no latent
    distribution: no prior to sample from and no log p(x) to estimate. The code is recorded as
    the deterministic site ``"z"``.
    """

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.deterministic("z", self.encode(x), event_dim=1)  # (B, L)
            pyro.sample("x", self.likelihood(self.decode(z)), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        pass

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code ``(..., latent_dim)``."""
        return full_precision(self.encoder(x))

    def _code(self, x):
        return self.encode(x)
