r"""Distributions of latent variables that the models and objectives share.

:class:`ResidualNormal` is NVAE's posterior parametrised relative to its prior (Vahdat and
Kautz 2020, eq. 2), with its closed-form KL :func:`residual_normal_kl`; both live below the
models so that objectives (:class:`pyrovae.infer.TraceNVAE_ELBO`) use them without importing a
model family.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.distributions.utils import broadcast_all


class ResidualNormal(dist.Normal):
    r""":math:`\mathcal N(\mu_p + \Delta\mu, (\sigma_p\Delta\sigma)^2)`: a Normal parametrised
    relative to a prior :math:`\mathcal N(\mu_p, \sigma_p^2)` (NVAE eq. 2). Behaves as the
    Normal it equals; keeps ``prior_loc``, ``prior_scale``, ``delta_loc``, ``delta_scale`` so
    the KL to the prior can be computed from the residuals (:func:`residual_normal_kl`)."""

    def __init__(self, prior_loc, prior_scale, delta_loc, delta_scale, validate_args=None):
        self.prior_loc, self.prior_scale, self.delta_loc, self.delta_scale = broadcast_all(
            prior_loc, prior_scale, delta_loc, delta_scale)
        super().__init__(self.prior_loc + self.delta_loc, self.prior_scale * self.delta_scale,
                         validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        return ResidualNormal(self.prior_loc.expand(shape), self.prior_scale.expand(shape),
                              self.delta_loc.expand(shape), self.delta_scale.expand(shape),
                              validate_args=self.__dict__.get("_validate_args"))


def residual_normal_kl(delta_loc: torch.Tensor, delta_scale: torch.Tensor,
                       prior_scale: torch.Tensor) -> torch.Tensor:
    r"""Elementwise :math:`\mathrm{KL}(\mathcal N(\mu_p + \Delta\mu, \sigma_p^2\Delta\sigma^2)
    \,\|\, \mathcal N(\mu_p, \sigma_p^2)) = \frac12\big(\Delta\mu^2/\sigma_p^2 + \Delta\sigma^2
    - 1\big) - \log\Delta\sigma` (Vahdat and Kautz 2020, eq. 2). It does not depend on
    :math:`\mu_p`, and the posterior's own scale enters only through :math:`\Delta\sigma`."""
    return 0.5 * ((delta_loc / prior_scale).pow(2) + delta_scale.pow(2) - 1.0) \
        - delta_scale.log()
