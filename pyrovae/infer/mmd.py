r"""InfoVAE (Zhao et al. 2019): the ELBO plus a divergence between the aggregate posterior and
the prior, here the maximum mean discrepancy (MMD).

InfoVAE maximises (Zhao, Song and Ermon 2019; D = MMD, as in their MMD-VAE)

.. math::

   \mathbb E_{p_D(x)} \mathbb E_{q(z \mid x)}[\log p_\theta(x \mid z)]
   - (1 - \alpha)\, \mathbb E_{p_D(x)} \mathrm{KL}(q(z \mid x) \,\|\, p(z))
   - (\alpha + \lambda - 1)\, \mathrm{MMD}^2(q(z), p(z)),

where :math:`\alpha` sets how much the mutual information between x and z is rewarded
(α = 1 drops the per-sample KL) and λ the weight of the marginal divergence; α = 0, λ = 1 is
the ELBO. The KL weight is applied by scaling the latent sites
(:func:`~pyrovae.infer.schedules.scale_latents`), so any model/guide pair works.

MMD between the batch of posterior samples :math:`z_i \sim q(z \mid x_i)` and as many draws
:math:`y_j \sim p(z)` (taken from the model's prior at that site, so conditional or learned
priors work) is the unbiased U-statistic of Gretton et al. (2012, Lemma 6):

.. math::

   \widehat{\mathrm{MMD}}^2 = \frac{1}{n(n-1)} \sum_{i \ne j} k(z_i, z_j)
     + \frac{1}{m(m-1)} \sum_{i \ne j} k(y_i, y_j) - \frac{2}{nm} \sum_{i, j} k(z_i, y_j).

Kernels: ``"rbf"`` :math:`k(a, b) = \exp(-\|a - b\|^2 / (2\sigma^2))` (default
:math:`\sigma^2 = D`, the latent dimension) and ``"imq"`` (inverse multiquadratic)
:math:`k(a, b) = C / (C + \|a - b\|^2)` (default :math:`C = 2D`, the choice of Tolstikhin et
al. 2018, §4, for a standard normal prior).

References: Zhao, Song and Ermon (2019) InfoVAE: balancing learning and inference in
variational autoencoders, AAAI; Gretton et al. (2012) A kernel two-sample test, JMLR;
Tolstikhin et al. (2018) Wasserstein auto-encoders, ICLR.
"""

from __future__ import annotations

import math

import torch
from pyro.infer import Trace_ELBO
from pyro.infer.util import torch_item

from .. import checks
from ._sites import data_size, pick_latent_site
from .registry import register_loss
from .schedules import scale_latents
from .terms import ReportsTerms

KERNELS = ("rbf", "imq")


def kernel_matrix(a: torch.Tensor, b: torch.Tensor, kernel: str = "rbf",
                  bandwidth: float | None = None) -> torch.Tensor:
    """``k(a_i, b_j)`` for ``a: (..., n, D)``, ``b: (..., m, D)`` -> ``(..., n, m)``."""
    d = a.shape[-1]
    sq = ((a.unsqueeze(-2) - b.unsqueeze(-3)) ** 2).sum(-1)  # (..., n, m); smooth at 0
    if kernel == "rbf":
        s2 = float(d) if bandwidth is None else bandwidth
        return torch.exp(-sq / (2 * s2))
    if kernel == "imq":
        c = 2.0 * d if bandwidth is None else bandwidth
        return c / (c + sq)
    raise ValueError(f"kernel: expected one of {KERNELS}, got {kernel!r}")


def mmd2(x: torch.Tensor, y: torch.Tensor, kernel: str = "rbf",
         bandwidth: float | None = None) -> torch.Tensor:
    """Unbiased estimate of MMD^2 between samples ``x: (..., n, D)`` and ``y: (..., m, D)``
    (Gretton et al. 2012, Lemma 6); shape ``(...)``. May be negative."""
    n, m = x.shape[-2], y.shape[-2]
    if n < 2 or m < 2:
        raise ValueError(f"mmd2: needs at least 2 samples on each side, got {n} and {m}")
    kxx = kernel_matrix(x, x, kernel, bandwidth)
    kyy = kernel_matrix(y, y, kernel, bandwidth)
    kxy = kernel_matrix(x, y, kernel, bandwidth)
    off = lambda k: k.sum((-1, -2)) - k.diagonal(dim1=-2, dim2=-1).sum(-1)  # noqa: E731
    return off(kxx) / (n * (n - 1)) + off(kyy) / (m * (m - 1)) - 2 * kxy.mean((-1, -2))


@register_loss("mmd_elbo")
class TraceMMD_ELBO(ReportsTerms, Trace_ELBO):
    r"""InfoVAE objective with MMD (Zhao et al. 2019) as a Pyro loss, for any model/guide
    pair whose latent site lies in the data plate.

    :param alpha: information preference α (≤ 1); the KL term gets weight 1 - α.
    :param lam: λ; the MMD term gets weight α + λ - 1 (per data point, so ``n * MMD^2`` is
        added to the batch-summed loss).
    :param kernel: ``"rbf"`` or ``"imq"``; ``bandwidth``: σ² (rbf) or C (imq), default by D.
    :param site: latent site (default: the guide's only one).

    With ``alpha=0, lam=1`` it is :class:`~pyro.infer.Trace_ELBO` in value and gradient.
    ``last_terms`` holds ``mmd2`` (the batch estimate) after each call.
    """

    def __init__(self, alpha: float = 0.0, lam: float = 100.0, *, kernel: str = "rbf",
                 bandwidth: float | None = None, site: str | None = None, **kwargs):
        checks.finite_number(alpha, "alpha")
        checks.finite_number(lam, "lam")
        if alpha > 1:
            raise ValueError(f"alpha: expected <= 1 (the KL weight is 1 - alpha), got {alpha}")
        if kernel not in KERNELS:
            raise ValueError(f"kernel: expected one of {KERNELS}, got {kernel!r}")
        if bandwidth is not None and not (isinstance(bandwidth, (int, float)) and bandwidth > 0):
            raise ValueError(f"bandwidth: expected a positive number, got {bandwidth!r}")
        super().__init__(**kwargs)
        self.alpha, self.lam = float(alpha), float(lam)
        self.kernel, self.bandwidth, self.site = kernel, bandwidth, site
        self.last_terms: dict[str, float] = {}

    @property
    def mmd_weight(self) -> float:
        return self.alpha + self.lam - 1

    def _get_trace(self, model, guide, args, kwargs):
        if self.alpha != 0:
            w = 1 - self.alpha
            model, guide = scale_latents(model, w), scale_latents(guide, w)
        return super()._get_trace(model, guide, args, kwargs)

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        if self.mmd_weight == 0:
            return loss, surrogate  # the (KL-weighted) ELBO: no prior draws, no RNG use
        name = pick_latent_site(guide_trace, self.site, "TraceMMD_ELBO")
        g, prior = guide_trace.nodes[name], model_trace.nodes[name]["fn"]
        z = g["value"]
        event_dim = g["fn"].event_dim
        batch = z.shape[:z.dim() - event_dim]
        if len(batch) == 0:
            raise ValueError(f"TraceMMD_ELBO: site {name!r} has no batch dim; it must lie in "
                             f"the data plate")
        y = prior.rsample() if prior.has_rsample else prior.sample()
        y = y.expand(z.shape)
        zf = z.reshape(-1, batch[-1], math.prod(z.shape[len(batch):]) if event_dim else 1)
        yf = y.reshape(zf.shape)  # (particles, n, D)
        est = mmd2(zf, yf, self.kernel, self.bandwidth)  # (particles,)
        n = data_size(model_trace)
        # summed over vectorised particles, as the trace's log-densities are; Trace_ELBO divides
        extra = self.mmd_weight * n * est.sum()
        guide_trace.mmd_terms = {"mmd2": torch_item(est.detach().mean())}
        return loss + torch_item(extra), surrogate + extra

    def step_terms(self, model_trace, guide_trace) -> dict[str, float]:
        return getattr(guide_trace, "mmd_terms", {})
