r"""Coordinate-ascent variational inference (CAVI) for conditionally conjugate models.

In a model where each complete conditional :math:`p(z_j \mid z_{-j}, x)` is in the exponential
family, the optimal mean-field factor given the others is

.. math::
    q_j^*(z_j) \propto \exp\big(\mathbb E_{-j}[\log p(z_j, z_{-j}, x)]\big)

(Blei, Kucukelbir and McAuliffe 2017, §2.4), in the same family with closed-form
parameters. CAVI sets each factor to this optimum in turn; each update maximises the ELBO over
one factor with the others fixed, so the ELBO never decreases, and the loop stops when a
sweep changes it by less than ``tol`` (their Algorithm 1; Algorithm 2 for the mixture).

A model is a :class:`MeanFieldModel`: ``init`` (variational parameters to start from),
``sweep`` (one pass of the closed-form updates) and ``elbo``. Two are here:
:class:`GaussianMixture` (their §3 example) and :class:`NormalGamma` (unknown mean and
precision of a Gaussian; Bishop 2006, §10.1.3). Adding another conjugate-exponential model
is one class with those three methods; :func:`cavi` drives any of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .. import checks

Params = dict[str, torch.Tensor]


def _as_data(x, name: str = "x", event_dim: int = 1) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.dim() != event_dim + 1 or x.shape[0] < 1:
        want = "(N, D)" if event_dim == 1 else "(N,)"
        raise ValueError(f"{name}: expected a non-empty array of shape {want}, got "
                         f"{tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite values, found NaN or Inf")
    return x


def _positive(value, name) -> float:
    """``value`` checked to be a finite number > 0, as a float."""
    checks.finite_number(value, name, positive=True)
    return float(value)


class MeanFieldModel:
    """A conditionally conjugate model with a mean-field variational family, for :func:`cavi`.

    Subclasses implement :meth:`init`, :meth:`sweep` and :meth:`elbo` on float64 data; the
    variational parameters are a dict of tensors.
    """

    event_dim = 1  # 1: data (N, D); 0: data (N,)

    def check_data(self, x) -> torch.Tensor:
        return _as_data(x, "x", self.event_dim)

    def init(self, x: torch.Tensor, generator: torch.Generator) -> Params:
        raise NotImplementedError

    def sweep(self, x: torch.Tensor, q: Params) -> Params:
        """One pass of the coordinate updates, each factor set to its optimum given the rest."""
        raise NotImplementedError

    def elbo(self, x: torch.Tensor, q: Params) -> float:
        raise NotImplementedError


class GaussianMixture(MeanFieldModel):
    r"""Bayesian mixture of K unit-variance Gaussians (Blei et al. 2017, §3), in D dimensions.

    Model: :math:`\mu_k \sim \mathcal N(0, \sigma^2 I)`, :math:`c_i \sim
    \mathrm{Categorical}(1/K)`, :math:`x_i \mid c_i, \mu \sim \mathcal N(\mu_{c_i}, s^2 I)`
    (their §2.1 and §3 have D = 1, s = 1). Family: :math:`q(\mu_k) = \mathcal N(m_k, s_k^2 I)`,
    :math:`q(c_i) = \mathrm{Categorical}(\varphi_i)`. Updates (their §3.1-3.2 and
    Algorithm 2 in D dimensions, with :math:`E[\mu_k^\top\mu_k] = \|m_k\|^2 + D s_k^2`):

    .. math::
        \varphi_{ik} \propto \exp\!\Big(\frac{m_k^\top x_i}{s^2}
            - \frac{\|m_k\|^2 + D s_k^2}{2 s^2}\Big),\qquad
        s_k^2 = \Big(\frac1{\sigma^2} + \frac{\sum_i\varphi_{ik}}{s^2}\Big)^{-1},\qquad
        m_k = \frac{s_k^2}{s^2}\sum_i \varphi_{ik} x_i .

    Parameters ``q``: ``phi`` (N, K), ``m`` (K, D), ``s2`` (K,).
    """

    def __init__(self, num_components: int, prior_scale: float = 10.0, obs_scale: float = 1.0):
        checks.positive_int(num_components, "num_components")
        self.K = num_components
        self.prior_var = _positive(prior_scale, "prior_scale") ** 2  # sigma^2
        self.obs_var = _positive(obs_scale, "obs_scale") ** 2  # s^2

    def init(self, x, generator):
        if x.shape[0] < self.K:
            raise ValueError(f"x: need at least num_components={self.K} points, got "
                             f"{x.shape[0]}")
        pick = torch.randperm(x.shape[0], generator=generator)[:self.K]
        m = x[pick].clone()  # (K, D): distinct data points, as k-means is often started
        s2 = torch.ones(self.K, dtype=x.dtype)
        return {"phi": self._phi(x, m, s2), "m": m, "s2": s2}

    def _phi(self, x, m, s2):
        d = x.shape[1]
        logits = (x @ m.T - 0.5 * ((m ** 2).sum(1) + d * s2)) / self.obs_var  # (N, K)
        return torch.softmax(logits, 1)

    def sweep(self, x, q):
        phi = self._phi(x, q["m"], q["s2"])  # q(c_i) given q(mu)
        nk = phi.sum(0)  # (K,)
        s2 = 1.0 / (1.0 / self.prior_var + nk / self.obs_var)  # q(mu_k) given q(c)
        m = (s2 / self.obs_var)[:, None] * (phi.T @ x)  # (K, D)
        return {"phi": phi, "m": m, "s2": s2}

    def elbo(self, x, q):
        phi, m, s2 = q["phi"], q["m"], q["s2"]
        n, d = x.shape
        e_mu2 = (m ** 2).sum(1) + d * s2  # E||mu_k||^2, (K,)
        log2pi = math.log(2 * math.pi)
        e_log_p_mu = (-0.5 * d * (log2pi + math.log(self.prior_var))
                      - e_mu2 / (2 * self.prior_var)).sum()
        e_log_p_c = -n * math.log(self.K)
        sq = (x ** 2).sum(1)[:, None] - 2 * x @ m.T + e_mu2[None]  # E||x_i - mu_k||^2, (N, K)
        e_log_p_x = (phi * (-0.5 * d * (log2pi + math.log(self.obs_var))
                            - sq / (2 * self.obs_var))).sum()
        entropy_c = -torch.special.xlogy(phi, phi).sum()
        entropy_mu = (0.5 * d * (1 + log2pi + torch.log(s2))).sum()
        return float(e_log_p_mu + e_log_p_c + e_log_p_x + entropy_c + entropy_mu)

    def assign(self, x, q) -> torch.Tensor:
        """Cluster of each point of ``x`` (new data too) under q(mu): ``argmax_k phi_ik``."""
        x = self.check_data(x)
        return self._phi(x, q["m"], q["s2"]).argmax(1)


class NormalGamma(MeanFieldModel):
    r"""Unknown mean and precision of univariate Gaussian data (Bishop 2006, §10.1.3).

    Model: :math:`\tau \sim \mathrm{Gamma}(a_0, b_0)`,
    :math:`\mu \mid \tau \sim \mathcal N(\mu_0, (\lambda_0\tau)^{-1})`,
    :math:`x_i \sim \mathcal N(\mu, \tau^{-1})`. Family :math:`q(\mu)q(\tau)` with
    :math:`q(\mu) = \mathcal N(\mu_N, \lambda_N^{-1})`, :math:`q(\tau) =
    \mathrm{Gamma}(a_N, b_N)`; Bishop's eq. 10.26-10.30:

    .. math::
        \mu_N = \frac{\lambda_0\mu_0 + N\bar x}{\lambda_0 + N},\quad
        \lambda_N = (\lambda_0 + N)\,\mathbb E[\tau],\quad
        a_N = a_0 + \frac{N+1}2,\quad
        b_N = b_0 + \tfrac12\mathbb E_\mu\Big[\sum_i (x_i-\mu)^2 + \lambda_0(\mu-\mu_0)^2\Big].

    The exact posterior is Normal-Gamma (:meth:`log_evidence` gives log p(x)), so the mean-field
    ELBO can be checked against it. Parameters ``q``: ``mu``, ``lam``, ``a``, ``b`` (scalars).
    """

    event_dim = 0

    def __init__(self, mu0: float = 0.0, lam0: float = 1.0, a0: float = 1.0, b0: float = 1.0):
        self.mu0 = float(mu0)
        self.lam0 = _positive(lam0, "lam0")
        self.a0 = _positive(a0, "a0")
        self.b0 = _positive(b0, "b0")

    def init(self, x, generator):
        t = lambda v: torch.tensor(float(v), dtype=torch.float64)  # noqa: E731
        return {"mu": t(self.mu0), "lam": t(self.lam0), "a": t(self.a0), "b": t(self.b0)}

    def sweep(self, x, q):
        n = x.shape[0]
        e_tau = q["a"] / q["b"]
        mu = (self.lam0 * self.mu0 + x.sum()) / (self.lam0 + n)  # q(mu) given q(tau)
        lam = (self.lam0 + n) * e_tau
        a = torch.as_tensor(self.a0 + 0.5 * (n + 1), dtype=torch.float64)  # q(tau) given q(mu)
        e_sq = ((x - mu) ** 2).sum() + n / lam + self.lam0 * ((mu - self.mu0) ** 2 + 1 / lam)
        b = self.b0 + 0.5 * e_sq
        return {"mu": mu, "lam": lam, "a": a, "b": b}

    def elbo(self, x, q):
        n = x.shape[0]
        mu, lam, a, b = q["mu"], q["lam"], q["a"], q["b"]
        e_tau = a / b
        e_log_tau = torch.digamma(a) - torch.log(b)
        log2pi = math.log(2 * math.pi)
        e_sq_x = ((x - mu) ** 2).sum() + n / lam  # E sum_i (x_i - mu)^2
        e_sq_mu = (mu - self.mu0) ** 2 + 1 / lam
        e_log_px = 0.5 * n * (e_log_tau - log2pi) - 0.5 * e_tau * e_sq_x
        e_log_pmu = 0.5 * (math.log(self.lam0) + e_log_tau - log2pi) \
            - 0.5 * self.lam0 * e_tau * e_sq_mu
        e_log_ptau = (self.a0 * math.log(self.b0) - math.lgamma(self.a0)
                      + (self.a0 - 1) * e_log_tau - self.b0 * e_tau)
        entropy_mu = 0.5 * (1 + log2pi - torch.log(lam))
        entropy_tau = a - torch.log(b) + torch.lgamma(a) + (1 - a) * torch.digamma(a)
        return float(e_log_px + e_log_pmu + e_log_ptau + entropy_mu + entropy_tau)

    def log_evidence(self, x) -> float:
        """Exact log p(x) under the Normal-Gamma prior (the marginal likelihood in Murphy 2007,
        "Conjugate Bayesian analysis of the Gaussian distribution", §3)."""
        x = self.check_data(x)
        n = x.shape[0]
        xbar = x.mean()
        lam_n = self.lam0 + n
        a_n = self.a0 + 0.5 * n
        b_n = self.b0 + 0.5 * ((x - xbar) ** 2).sum() \
            + self.lam0 * n * (xbar - self.mu0) ** 2 / (2 * lam_n)
        return float(math.lgamma(a_n) - math.lgamma(self.a0) + self.a0 * math.log(self.b0)
                     - a_n * torch.log(b_n) + 0.5 * math.log(self.lam0 / lam_n)
                     - 0.5 * n * math.log(2 * math.pi))


@dataclass
class CAVIResult:
    """What :func:`cavi` returns."""

    q: Params  # variational parameters at the end
    elbo: list[float] = field(default_factory=list)  # [after init, after sweep 1, ...]
    converged: bool = False  # |Delta ELBO| < tol reached within max_sweeps
    restart: int = 0  # which restart this is (the best ELBO of all)

    @property
    def sweeps(self) -> int:
        return len(self.elbo) - 1


def cavi(model: MeanFieldModel, x, *, tol: float = 1e-8, max_sweeps: int = 1000,
         num_restarts: int = 1, seed: int = 0, init: Params | None = None,
         check_monotone: bool = True) -> CAVIResult:
    r"""Runs CAVI (Blei et al. 2017, Algorithm 1) on data ``x`` until a sweep changes the ELBO by
    less than ``tol`` (absolute) or ``max_sweeps`` are done.

    The ELBO is evaluated after initialisation and after every sweep. Each update is an exact
    coordinate maximisation, so a decrease beyond rounding (``1e-9 * |ELBO|``) means the
    model's updates or ELBO are wrong: with ``check_monotone`` it raises ``RuntimeError``.
    The ELBO is not concave; ``num_restarts`` runs from different random starts (``seed``,
    ``seed + 1``, ...) and returns the one with the highest final ELBO.
    """
    if not isinstance(model, MeanFieldModel):
        raise TypeError(f"model: expected a MeanFieldModel, got {type(model).__name__}")
    tol = _positive(tol, "tol")
    checks.positive_int(max_sweeps, "max_sweeps")
    checks.positive_int(num_restarts, "num_restarts")
    if init is not None and num_restarts != 1:
        raise ValueError("init: a given starting point allows num_restarts=1 only")
    x = model.check_data(x)
    best = None
    for r in range(num_restarts):
        gen = torch.Generator().manual_seed(seed + r)
        q = dict(init) if init is not None else model.init(x, gen)
        result = CAVIResult(q, [model.elbo(x, q)], restart=r)
        for sweep in range(1, max_sweeps + 1):
            q = model.sweep(x, q)
            value = model.elbo(x, q)
            prev = result.elbo[-1]
            result.q = q
            result.elbo.append(value)
            if check_monotone and value < prev - 1e-9 * max(1.0, abs(prev)):
                raise RuntimeError(f"cavi: the ELBO decreased at sweep {sweep} ({prev!r} -> "
                                   f"{value!r}); {type(model).__name__}'s updates or ELBO are "
                                   f"inconsistent")
            if abs(value - prev) < tol:
                result.converged = True
                break
        if best is None or result.elbo[-1] > best.elbo[-1]:
            best = result
    return best
