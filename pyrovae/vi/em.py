r"""Expectation-maximisation for the Gaussian mixture, and its k-means limit.

EM maximises the same bound as variational inference, :math:`\mathcal L(q, \theta) = \log
p(x\mid\theta) - \mathrm{KL}(q(c)\,\|\,p(c\mid x, \theta))`, by coordinate ascent in
:math:`q` and :math:`\theta` (Neal and Hinton 1998): the E step sets :math:`q(c_i)` to the
exact posterior (the KL to zero, so the bound touches :math:`\log p(x\mid\theta)`), the M step
maximises over the point estimate :math:`\theta` in closed form. A VAE with one categorical code
(:class:`~pyrovae.models.CategoricalVAE`) optimises the same bound with an encoder in place of
the E step and gradient steps in place of the M step; CAVI (:mod:`pyrovae.vi.cavi`) keeps a
distribution over :math:`\theta` too. With a fixed, shared spherical covariance
:math:`\sigma^2 I` and equal weights, as :math:`\sigma \to 0` the responsibilities become
hard and EM becomes Lloyd's k-means (Bishop 2006, §9.3.2); ``hard=True`` runs that
"classification EM" at any :math:`\sigma`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import checks

COVARIANCES = ("full", "diag", "spherical", "fixed")


@dataclass
class EMResult:
    """Fitted mixture and the trace of EM."""

    weights: torch.Tensor  # (K,) mixing weights pi
    means: torch.Tensor  # (K, D)
    covariances: torch.Tensor  # (K, D, D) full covariance of each component
    responsibilities: torch.Tensor  # (N, K) E step at the final parameters
    log_likelihood: list[float] = field(default_factory=list)  # mean log p(x_i) per E step
    converged: bool = False
    hard: bool = False

    @property
    def iterations(self) -> int:
        return len(self.log_likelihood)

    @property
    def labels(self) -> torch.Tensor:
        return self.responsibilities.argmax(1)

    def log_prob(self, x) -> torch.Tensor:
        """log p(x_i) under the fitted mixture, ``(N,)``."""
        x = torch.as_tensor(x, dtype=torch.float64)
        return torch.logsumexp(_log_joint(x, self.weights, self.means, self.covariances), 1)


def _log_joint(x, weights, means, covs):
    """log pi_k + log N(x_i | mu_k, Sigma_k), ``(N, K)``."""
    comp = torch.distributions.MultivariateNormal(means, covariance_matrix=covs)
    return comp.log_prob(x[:, None, :]) + torch.log(weights)[None]


def em_gaussian_mixture(x, num_components: int, *, covariance: str = "full",
                        variance: float = 1.0, learn_weights: bool = True, hard: bool = False,
                        init_means=None, init_weights=None, init_covariances=None,
                        tol: float = 1e-6, max_iter: int = 500, reg_covar: float = 1e-6,
                        seed: int = 0) -> EMResult:
    r"""Fits a K-component Gaussian mixture to ``x: (N, D)`` by EM (Dempster et al. 1977;
    Bishop 2006, §9.2.2).

    E step: :math:`r_{ik} = \pi_k\mathcal N(x_i\mid\mu_k,\Sigma_k) / \sum_j \pi_j\mathcal
    N(x_i\mid\mu_j,\Sigma_j)` (Bishop eq. 9.23; with ``hard``, one-hot at the argmax). M step
    with :math:`N_k = \sum_i r_{ik}` (eq. 9.24-9.26): :math:`\mu_k = \sum_i r_{ik}x_i/N_k`,
    :math:`\pi_k = N_k/N`, and :math:`\Sigma_k = \sum_i r_{ik}(x_i-\mu_k)(x_i-\mu_k)^\top/N_k
    + \epsilon I` for ``covariance="full"``, its diagonal for ``"diag"``, its mean eigenvalue
    times I for ``"spherical"``, or :math:`\sigma^2 I` with ``variance`` fixed for ``"fixed"``
    (:math:`\epsilon` = ``reg_covar``, as scikit-learn's ``GaussianMixture`` adds).

    Starts from ``init_means`` (default: K distinct random points), ``init_weights`` (uniform)
    and ``init_covariances`` (identity, or :math:`\sigma^2 I` for ``"fixed"``); stops when
    the mean log-likelihood changes by less than ``tol`` (scikit-learn's criterion) or after
    ``max_iter`` E and M steps. ``log_likelihood`` holds the mean log-likelihood at each E
    step; for soft EM it never decreases (Dempster et al. 1977, theorem 1).
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"x: expected an array of shape (N, D), got {tuple(x.shape)}")
    n, d = x.shape
    k = num_components
    checks.int_in(k, "num_components", 1, n)  # at most one component per point
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance: expected one of {COVARIANCES}, got {covariance!r}")
    if not (isinstance(variance, (int, float)) and variance > 0):
        raise ValueError(f"variance: expected a positive number, got {variance!r}")
    checks.positive_int(max_iter, "max_iter")
    gen = torch.Generator().manual_seed(seed)
    if init_means is None:
        means = x[torch.randperm(n, generator=gen)[:k]].clone()
    else:
        means = torch.as_tensor(init_means, dtype=torch.float64).clone()
        if means.shape != (k, d):
            raise ValueError(f"init_means: expected shape ({k}, {d}), got {tuple(means.shape)}")
    weights = torch.full((k,), 1.0 / k, dtype=torch.float64) if init_weights is None else \
        torch.as_tensor(init_weights, dtype=torch.float64).clone()
    if weights.shape != (k,) or not bool((weights > 0).all()):
        raise ValueError(f"init_weights: expected {k} positive weights, got {weights}")
    weights = weights / weights.sum()
    eye = torch.eye(d, dtype=torch.float64)
    s2 = float(variance) if covariance == "fixed" else 1.0
    covs = (s2 * eye).expand(k, d, d).clone() if init_covariances is None else \
        torch.as_tensor(init_covariances, dtype=torch.float64).clone()
    if covs.shape != (k, d, d):
        raise ValueError(f"init_covariances: expected shape ({k}, {d}, {d}), got "
                         f"{tuple(covs.shape)}")

    result = EMResult(weights, means, covs, torch.empty(0), hard=hard)
    for _ in range(max_iter):
        log_joint = _log_joint(x, weights, means, covs)  # (N, K)
        log_px = torch.logsumexp(log_joint, 1)  # (N,)
        result.log_likelihood.append(float(log_px.mean()))
        if hard:
            resp = torch.nn.functional.one_hot(log_joint.argmax(1), k).to(x.dtype)
        else:
            resp = torch.exp(log_joint - log_px[:, None])  # (N, K), E step
        # M step
        nk = resp.sum(0) + 10 * torch.finfo(x.dtype).eps  # (K,)
        means = (resp.T @ x) / nk[:, None]
        if learn_weights:
            weights = nk / nk.sum()
        if covariance == "fixed":
            covs = (s2 * eye).expand(k, d, d).clone()
        else:
            diff = x[None] - means[:, None]  # (K, N, D)
            full = torch.einsum("kn,kni,knj->kij", resp.T, diff, diff) / nk[:, None, None]
            if covariance == "full":
                covs = full + reg_covar * eye
            elif covariance == "diag":
                covs = torch.diag_embed(torch.diagonal(full, dim1=1, dim2=2) + reg_covar)
            else:  # spherical: the mean of the diagonal
                var = torch.diagonal(full, dim1=1, dim2=2).mean(1) + reg_covar  # (K,)
                covs = var[:, None, None] * eye
        if len(result.log_likelihood) > 1 and \
                abs(result.log_likelihood[-1] - result.log_likelihood[-2]) < tol:
            result.converged = True  # as scikit-learn: checked after the M step
            break
    log_joint = _log_joint(x, weights, means, covs)
    if hard:
        resp = torch.nn.functional.one_hot(log_joint.argmax(1), k).to(x.dtype)
    else:
        resp = torch.softmax(log_joint, 1)
    result.weights, result.means, result.covariances = weights, means, covs
    result.responsibilities = resp
    return result


def kmeans_objective(x, means) -> float:
    """Mean squared distance of each point to its nearest mean (k-means' distortion / N)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    means = torch.as_tensor(means, dtype=torch.float64)
    return float(torch.cdist(x, means).min(1).values.pow(2).mean())


