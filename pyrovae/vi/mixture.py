r"""The Bayesian Gaussian mixture of :class:`pyrovae.vi.cavi.GaussianMixture` as a Pyro
program, for stochastic VI with mini-batches."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam, pyro_method

from .. import checks


class GaussianMixtureSVI(PyroModule):
    r"""Blei et al.'s (2017, §3) mixture, trained by SVI rather than CAVI.

    Model: :math:`\mu_k \sim \mathcal N(0, \sigma^2 I)` in ``pyro.plate("components", K)``,
    :math:`c_i \sim \mathrm{Categorical}(1/K)`, :math:`x_i \sim \mathcal N(\mu_{c_i}, s^2 I)`
    in ``pyro.plate("data", N, subsample=index)``. The assignment :math:`c_i` is marked for
    enumeration and summed out exactly by :class:`~pyro.infer.TraceEnum_ELBO` (a collapsed
    bound, tighter than CAVI's mean-field one over :math:`c`); the guide is
    :math:`q(\mu_k) = \mathcal N(m_k, \mathrm{diag}\,s_k^2)` with ``PyroParam``\ s ``locs``
    (K, D) and ``scales`` (K, D). Mini-batches reach the model as ``index`` and are scaled by
    :math:`N/B` (Hoffman et al. 2013, §2.4).
    """

    def __init__(self, num_data: int, num_components: int, dim: int, *,
                 prior_scale: float = 10.0, obs_scale: float = 1.0, init_locs=None):
        super().__init__()
        for name, v in (("num_data", num_data), ("num_components", num_components),
                        ("dim", dim)):
            checks.positive_int(v, name)
        self.num_data, self.K, self.dim = num_data, num_components, dim
        self.prior_scale, self.obs_scale = float(prior_scale), float(obs_scale)
        locs = torch.zeros(num_components, dim) if init_locs is None else \
            torch.as_tensor(init_locs, dtype=torch.float32).clone()
        if locs.shape != (num_components, dim):
            raise ValueError(f"init_locs: expected shape ({num_components}, {dim}), got "
                             f"{tuple(locs.shape)}")
        self.locs = PyroParam(locs)
        self.scales = PyroParam(torch.full((num_components, dim), 0.1),
                                constraint=constraints.positive)

    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name}: expected shape (N, {self.dim}), got {tuple(x.shape)}")

    @pyro_method
    def model(self, x: torch.Tensor, index: torch.Tensor | None = None) -> None:
        with pyro.plate("components", self.K):
            mu = pyro.sample("mu", dist.Normal(0.0, self.prior_scale)
                             .expand([self.dim]).to_event(1))  # (K, D)
        with pyro.plate("data", self.num_data, subsample=index):
            c = pyro.sample("c", dist.Categorical(logits=torch.zeros(self.K)),
                            infer={"enumerate": "parallel"})  # (B,) or (K, 1) enumerated
            pyro.sample("x", dist.Normal(mu[c], self.obs_scale).to_event(1), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor, index: torch.Tensor | None = None) -> None:
        with pyro.plate("components", self.K):
            pyro.sample("mu", dist.Normal(self.locs, self.scales).to_event(1))

    @torch.no_grad()
    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Cluster of each point under the posterior means: argmax_k N(x_i | m_k, s^2 I)."""
        return torch.cdist(torch.as_tensor(x, dtype=self.locs.dtype), self.locs).argmin(1)
