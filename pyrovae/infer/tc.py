r"""β-TCVAE: the ELBO with its KL term split into three and each part weighted (Chen et al. 2018).

With :math:`n` the data index (uniform over the N training points), the aggregate posterior
:math:`q(z) = \frac1N \sum_n q(z \mid n)` and its marginals :math:`q(z_l)`, the KL term of the
ELBO averaged over the data splits as (Chen et al. 2018, eq. 2)

.. math::

   \mathbb E_{p(n)} \mathrm{KL}(q(z \mid n) \,\|\, p(z)) =
   \underbrace{\mathrm{KL}(q(z, n) \,\|\, q(z) p(n))}_{\text{index-code MI}} +
   \underbrace{\mathrm{KL}(q(z) \,\|\, \textstyle\prod_l q(z_l))}_{\text{total correlation}} +
   \underbrace{\textstyle\sum_l \mathrm{KL}(q(z_l) \,\|\, p(z_l))}_{\text{dimension-wise KL}}

and β-TCVAE minimises (eq. 4)
:math:`-\mathbb E[\log p(x \mid z)] + \alpha\,\mathrm{MI} + \beta\,\mathrm{TC}
+ \gamma\,\mathrm{DWKL}`.
Per sample :math:`z_i \sim q(z \mid x_i)` the three are
:math:`\log q(z_i \mid x_i) - \log q(z_i)`, :math:`\log q(z_i) - \sum_l \log q(z_{il})` and
:math:`\sum_l \log q(z_{il}) - \log p(z_i)`, so they add up to the Monte-Carlo KL
:math:`\log q(z_i \mid x_i) - \log p(z_i)` for any estimate of :math:`\log q(z_i)` and
:math:`\log q(z_{il})`; the dimension-wise term is a KL against the prior's marginals when the
prior factorises (a standard normal does).

:math:`q(z_i)` is estimated from the minibatch :math:`\{x_1..x_M\}` (Chen et al. 2018, §4):

- minibatch-weighted sampling (``"mws"``):
  :math:`\log q(z_i) \approx \log \frac{1}{NM} \sum_{j=1}^M q(z_i \mid x_j)`. The weights sum to
  1/N, so this sits ``log N`` below the mixture density: for codes that ignore the data the
  total-correlation estimate is :math:`(L - 1) \log N`, not 0. Constant, so gradients are
  unaffected.
- minibatch-stratified sampling (``"mss"``, their appendix C.2): the N - 1 other points are
  split into M - 1 strata, each represented by one other member of the batch, so
  :math:`q(z_i) \approx \frac1N q(z_i \mid x_i) + \frac{N-M+1}{N(M-1)} q(z_i \mid x_{i+1})
  + \frac1{M-1} \sum_{j \ne i, i+1} q(z_i \mid x_j)` (indices mod M). The weights of each row
  sum to 1; identical codes give a total correlation of exactly 0. (The authors' released code
  fills this matrix with a stride that misses the diagonal; rtqichen/beta-tcvae PR #1. Here
  the diagonal carries 1/N.)

With ``alpha = beta = gamma = 1`` the objective is the ELBO and :class:`TraceTC_ELBO` is
:class:`~pyro.infer.Trace_ELBO` itself, in value and gradient: the extra term it adds is
:math:`(\alpha - 1)\mathrm{MI} + (\beta - 1)\mathrm{TC} + (\gamma - 1)\mathrm{DWKL}`.

Reference: Chen, Li, Grosse and Duvenaud (2018) Isolating sources of disentanglement in
variational autoencoders, NeurIPS.
"""

from __future__ import annotations

import math

import torch
from pyro.infer import Trace_ELBO
from pyro.infer.util import torch_item

from .. import checks
from ._sites import factorised, pairwise_log_prob, pick_latent_site
from .registry import register_loss
from .terms import ReportsTerms

ESTIMATORS = ("mws", "mss")


def log_weights(batch_size: int, dataset_size: int, estimator: str) -> torch.Tensor:
    """``(M, M)`` log importance weights ``w[i, j]`` of ``q(z_i | x_j)`` in the estimate
    ``q(z_i) ~ sum_j w[i, j] q(z_i | x_j)`` (see the module docstring)."""
    m, n = batch_size, dataset_size
    if estimator == "mws":
        return torch.full((m, m), -math.log(n * m))
    if estimator != "mss":
        raise ValueError(f"estimator: expected one of {ESTIMATORS}, got {estimator!r}")
    if m < 2:
        raise ValueError(f"estimator 'mss' needs a batch of at least 2, got {m}")
    w = torch.full((m, m), 1.0 / (m - 1), dtype=torch.float64)
    idx = torch.arange(m)
    w[idx, (idx + 1) % m] = (n - m + 1) / (n * (m - 1))  # the stratum one point short
    w[idx, idx] = 1.0 / n
    return w.log().float()


def tc_terms(base, z: torch.Tensor, log_q_cond: torch.Tensor, log_p: torch.Tensor,
             dataset_size: int, estimator: str = "mss") -> dict[str, torch.Tensor]:
    """Per-sample index-code MI, total correlation and dimension-wise KL, each ``(..., M)``.

    ``base``: the per-dimension guide density with batch shape ``(..., M, L)``; ``z: (..., M, L)``
    its samples; ``log_q_cond``, ``log_p``: ``(..., M)`` log q(z_i | x_i) and log p(z_i).
    """
    m = z.shape[-2]
    lp = pairwise_log_prob(base, z)  # (..., M_i, M_j, L)
    lw = log_weights(m, dataset_size, estimator).to(lp)  # (M_i, M_j)
    log_qz = torch.logsumexp(lp.sum(-1) + lw, dim=-1)  # (..., M): log q(z_i)
    log_prod = torch.logsumexp(lp + lw[..., None], dim=-2).sum(-1)  # (..., M): sum_l log q(z_il)
    return {"mi": log_q_cond - log_qz, "tc": log_qz - log_prod, "dw_kl": log_prod - log_p}


@register_loss("tc_elbo")
class TraceTC_ELBO(ReportsTerms, Trace_ELBO):
    r"""β-TCVAE objective (Chen et al. 2018, eq. 4) as a Pyro loss, for any model/guide pair
    whose latent site ``site`` has a factorised, reparametrised density over a vector of
    dimensions in the guide (``Normal(loc, scale).to_event(1)`` inside ``pyro.plate("data")``).

    :param alpha: weight of the index-code mutual information.
    :param beta: weight of the total correlation (the authors' knob; 1 gives the ELBO).
    :param gamma: weight of the dimension-wise KL.
    :param estimator: ``"mss"`` (minibatch-stratified) or ``"mws"`` (minibatch-weighted).
    :param dataset_size: N, the number of training points the minibatches come from.
    :param site: the latent site to decompose (default: the guide's only latent site). Other
        latent sites keep their ordinary ELBO terms.

    After each call ``last_terms`` holds ``mi``, ``tc``, ``dw_kl`` (their sum is ``kl``, the
    Monte-Carlo KL of the site) per data point, unweighted, averaged over particles.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 6.0, gamma: float = 1.0, *,
                 estimator: str = "mss", dataset_size: int | None = None,
                 site: str | None = None, **kwargs):
        for name, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            checks.finite_number(v, name)
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator: expected one of {ESTIMATORS}, got {estimator!r}")
        if not checks.is_int(dataset_size) or dataset_size < 1:  # None, the default, too
            raise ValueError(f"dataset_size: expected the number of training points (a positive "
                             f"int), got {dataset_size!r}")
        super().__init__(**kwargs)
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.estimator, self.dataset_size, self.site = estimator, dataset_size, site
        self.last_terms: dict[str, float] = {}

    loss_context = ("dataset_size",)  # make_loss fills it from the training data

    def decompose(self, model_trace, guide_trace) -> dict[str, torch.Tensor]:
        """``{"mi", "tc", "dw_kl"}``: per-sample terms ``(..., M)`` for the chosen site, from
        traces with log-densities computed, and ``"scale"``, the site's scale."""
        name = pick_latent_site(guide_trace, self.site, "TraceTC_ELBO")
        g, m = guide_trace.nodes[name], model_trace.nodes[name]
        base = factorised(g["fn"], name, "TraceTC_ELBO")
        z = g["value"]  # (..., M, L)
        if base.batch_shape != z.shape or z.dim() < 2:
            raise ValueError(f"TraceTC_ELBO: site {name!r}: expected one density per data point"
                             f" and dimension, batch shape (..., M, L) = {tuple(z.shape)}; got "
                             f"{tuple(base.batch_shape)}")
        if z.shape[-2] > self.dataset_size:
            raise ValueError(f"dataset_size: {self.dataset_size} is smaller than the batch of "
                             f"{z.shape[-2]} data points")
        terms = tc_terms(base, z, g["unscaled_log_prob"], m["unscaled_log_prob"],
                         self.dataset_size, self.estimator)
        terms["scale"] = g["scale"]
        return terms

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        t = self.decompose(model_trace, guide_trace)
        scale = t.pop("scale")
        n = t["mi"].numel()  # samples in this trace: batch (x vectorised particles)
        guide_trace.tc_terms = {k: torch_item(v.detach().sum()) / n for k, v in t.items()}
        if (self.alpha, self.beta, self.gamma) == (1.0, 1.0, 1.0):
            return loss, surrogate  # the ELBO itself
        extra = scale * ((self.alpha - 1) * t["mi"].sum() + (self.beta - 1) * t["tc"].sum()
                         + (self.gamma - 1) * t["dw_kl"].sum())
        return loss + torch_item(extra), surrogate + extra

    def step_terms(self, model_trace, guide_trace) -> dict[str, float]:
        terms = dict(guide_trace.tc_terms)
        terms["kl"] = terms["mi"] + terms["tc"] + terms["dw_kl"]
        return terms

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The objective's value (a float): Trace_ELBO's ``loss`` reads the traces' log-densities
        directly, so it is computed here from this class's particle loss."""
        with torch.no_grad():
            total = 0.0
            for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
                total += self._differentiable_loss_particle(model_trace, guide_trace)[0]
        return total / self.num_particles
