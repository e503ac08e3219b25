r"""A conjugate Gaussian model as a Pyro program: a test bed whose posterior is known exactly.

Model: :math:`\theta \sim \mathcal N(\mu_0, \tau^2 I_D)`, :math:`x_i \mid \theta \sim
\mathcal N(\theta, \mathrm{diag}\,\sigma^2)` for :math:`i = 1..N`. The posterior is
:math:`\mathcal N(\mu^*, \mathrm{diag}\,s^{*2})` with

.. math::
    s_d^{*-2} = \tau^{-2} + N\sigma_d^{-2},\qquad
    \mu^*_d = s_d^{*2}\Big(\frac{\mu_{0}}{\tau^2} + \frac{\sum_i x_{id}}{\sigma_d^2}\Big),

so a mean-field Gaussian guide can match it exactly, and gradient, natural-gradient and
stochastic VI can be checked against the truth. Unequal :math:`\sigma_d` make the posterior
precisions unequal: an ill-conditioned problem for first-order optimisers.

The data plate subsamples: with ``index`` (a batch's dataset positions, which
:func:`pyrovae.fit` passes to models that declare it) ``pyro.plate("data", N,
subsample=index)`` scales the batch's log-likelihood by :math:`N/B`, so the mini-batch ELBO is
an unbiased estimate of the full one (Hoffman et al. 2013, §2.4) and stochastic VI has the
full-batch optimum.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam, pyro_method

from .. import checks


class ConjugateGaussian(PyroModule):
    r"""The conjugate Gaussian model above with guide :math:`q(\theta) = \mathcal N(\mathrm{loc},
    \mathrm{diag}\,\mathrm{scale}^2)` (``PyroParam``\ s ``loc`` and ``scale``; ``scale`` is
    stored as its log, ``constraints.positive``). Site ``"theta"`` is global (outside the data
    plate), so per-data-point metrics do not apply; :meth:`posterior` and
    :meth:`kl_to_posterior` measure the fit.

    :param num_data: N, the size of the whole data set (mini-batches are scaled to it).
    :param dim: D.
    :param obs_scale: :math:`\sigma`, a float or D floats.
    """

    def __init__(self, num_data: int, dim: int, *, prior_loc: float = 0.0,
                 prior_scale: float = 1.0, obs_scale=1.0, init_scale: float = 1.0):
        super().__init__()
        for name, v in (("num_data", num_data), ("dim", dim)):
            checks.positive_int(v, name)
        if not (isinstance(prior_scale, (int, float)) and prior_scale > 0):
            raise ValueError(f"prior_scale: expected a positive number, got {prior_scale!r}")
        obs = torch.as_tensor(obs_scale, dtype=torch.float32).expand(dim).clone()
        if not bool((obs > 0).all()):
            raise ValueError(f"obs_scale: expected positive value(s), got {obs_scale!r}")
        self.num_data, self.dim = num_data, dim
        self.register_buffer("prior_loc", torch.full((dim,), float(prior_loc)))
        self.register_buffer("prior_scale", torch.full((dim,), float(prior_scale)))
        self.register_buffer("obs_scale", obs)
        self.loc = PyroParam(torch.zeros(dim))
        self.scale = PyroParam(torch.full((dim,), float(init_scale)),
                               constraint=constraints.positive)

    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name}: expected shape (N, {self.dim}), got {tuple(x.shape)}")

    @pyro_method
    def model(self, x: torch.Tensor, index: torch.Tensor | None = None) -> None:
        theta = pyro.sample("theta", dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
        if index is None and x.shape[0] != self.num_data:
            raise ValueError(f"x: without index the model needs all num_data={self.num_data} "
                             f"points, got {x.shape[0]}")
        with pyro.plate("data", self.num_data, subsample=index):  # scale N / B
            pyro.sample("x", dist.Normal(theta, self.obs_scale).to_event(1), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor, index: torch.Tensor | None = None) -> None:
        pyro.sample("theta", dist.Normal(self.loc, self.scale).to_event(1))

    @torch.no_grad()
    def posterior(self, x: torch.Tensor) -> dist.Normal:
        """The exact posterior p(theta | x) given all N data points (float64)."""
        x = torch.as_tensor(x, dtype=torch.float64)
        self.check_data(x, "x")
        if x.shape[0] != self.num_data:
            raise ValueError(f"x: expected all num_data={self.num_data} points, got "
                             f"{x.shape[0]}")
        t2 = self.prior_scale.double() ** 2
        s2 = self.obs_scale.double() ** 2
        prec = 1 / t2 + x.shape[0] / s2  # (D,)
        mean = (self.prior_loc.double() / t2 + x.sum(0) / s2) / prec
        return dist.Normal(mean, prec.rsqrt())

    @torch.no_grad()
    def kl_to_posterior(self, x: torch.Tensor) -> float:
        r"""KL(q || p(theta | x)) of the current guide, in nats (0 at the exact posterior):
        :math:`\sum_d \log\frac{s^*_d}{s_d} + \frac{s_d^2 + (m_d - \mu^*_d)^2}{2 s_d^{*2}}
        - \frac12`; ``inf`` once a diverging optimiser has left the family."""
        post = self.posterior(x)
        m, s = self.loc.detach().double(), self.scale.detach().double()
        kl = (torch.log(post.scale / s) + (s**2 + (m - post.loc) ** 2) / (2 * post.scale**2)
              - 0.5).sum()
        return float(kl) if bool(torch.isfinite(kl)) else float("inf")

    def log_evidence(self, x: torch.Tensor) -> float:
        """log p(x): the ELBO at the exact posterior, where the bound is tight."""
        post = self.posterior(x)
        return -float(self._neg_elbo(torch.as_tensor(x, dtype=torch.float64), None,
                                     post.loc, post.scale))

    def _neg_elbo(self, x, index, loc, scale):
        """Closed-form -ELBO of q = N(loc, scale^2) on the batch x, scaled by N / B."""
        s2 = self.obs_scale.to(loc) ** 2
        # E_q log N(x_i | theta, s2), summed over the batch: (B, D) -> scalar
        e_loglik = (-0.5 * torch.log(2 * math.pi * s2)
                    - ((x - loc) ** 2 + scale ** 2) / (2 * s2)).sum()
        batch = x.shape[0]
        scale_factor = self.num_data / batch if index is not None else 1.0
        prior = dist.Normal(self.prior_loc.to(loc), self.prior_scale.to(loc))
        kl = torch.distributions.kl_divergence(dist.Normal(loc, scale), prior).sum()
        return kl - scale_factor * e_loglik

    def analytic_loss(self, model_fn, guide_fn, x: torch.Tensor,
                      index: torch.Tensor | None = None) -> torch.Tensor:
        r"""The negative ELBO in closed form, a callable loss for :func:`pyrovae.fit`.

        Reads :math:`q(\theta)` off a trace of ``guide_fn`` (so it follows whatever guide is
        passed), then :math:`-\mathcal L = \mathrm{KL}(q\,\|\,p(\theta)) - \frac N B
        \sum_{i\in\text{batch}} \mathbb E_q[\log p(x_i\mid\theta)]`, with
        :math:`\mathbb E_q \log\mathcal N(x\mid\theta,\sigma^2) = \log\mathcal N(x\mid
        \mathrm{loc}, \sigma^2) - \mathrm{scale}^2/(2\sigma^2)`. Its gradient is the exact
        expected gradient that :class:`~pyro.infer.Trace_ELBO` estimates by sampling.
        """
        with poutine.block():
            tr = poutine.trace(guide_fn).get_trace(x=x, index=index)
        fn = tr.nodes["theta"]["fn"]
        if isinstance(fn, dist.Delta) and "theta_unconstrained" in tr.nodes:
            # an autoguide (AutoNormal): a Normal on the unconstrained value, and theta is
            # real-valued, so the transform is the identity
            fn = tr.nodes["theta_unconstrained"]["fn"]
        base = fn.base_dist if isinstance(fn, dist.Independent) else fn
        if not isinstance(base, torch.distributions.Normal):
            raise TypeError(f"guide: analytic_loss needs a Normal at site 'theta', got "
                            f"{type(base).__name__}")
        return self._neg_elbo(x, index, base.loc, base.scale)
