"""Small model/guide pairs whose posteriors are known in closed form, written as a user would
(plain Pyro programs), for tests of the analysis tools."""

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method


class LinearGaussian(PyroModule):
    r"""z ~ N(0, I_q), x | z ~ N(W z + b, sigma^2 I_d).

    The guide is the exact posterior N(mu(x), Sigma) with Sigma = (I + W^T W / sigma^2)^{-1},
    mu(x) = Sigma W^T (x - b) / sigma^2, its covariance scaled by ``guide_scale ** 2`` (1: exact;
    < 1: too narrow, whose importance weights have Pareto shape k = 1 - guide_scale^2).
    """

    def __init__(self, W, b, sigma, guide_scale=1.0):
        super().__init__()
        self.register_buffer("W", torch.as_tensor(W, dtype=torch.float32))
        self.register_buffer("b", torch.as_tensor(b, dtype=torch.float32))
        self.sigma, self.guide_scale = float(sigma), float(guide_scale)

    def posterior(self, x):
        q = self.W.shape[1]
        cov = torch.linalg.inv(torch.eye(q) + self.W.T @ self.W / self.sigma**2)
        return (x - self.b) @ self.W @ cov / self.sigma**2, cov

    @pyro_method
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([self.W.shape[1]]).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.sigma).to_event(1), obs=x)

    @pyro_method
    def guide(self, x):
        mu, cov = self.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(mu, self.guide_scale**2 * cov))


def linear_gaussian_problem(n=200, d=6, q=3, sigma=0.7, seed=0):
    """(W, b, sigma, x): parameters and n data points drawn from the model."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, q, generator=g)
    b = torch.randn(d, generator=g)
    z = torch.randn(n, q, generator=g)
    x = z @ W.T + b + sigma * torch.randn(n, d, generator=g)
    return W, b, sigma, x


def exact_posterior(W, b, sigma, x):
    """Posterior mean (n, q) and covariance (q, q) by Gaussian conditioning of the joint
    (z, x) in float64: mu = W^T C^{-1} (x - b), Sigma = I - W^T C^{-1} W, C = W W^T + s^2 I."""
    W, b, x = (np.asarray(a, dtype=np.float64) for a in (W, b, x))
    C = W @ W.T + sigma**2 * np.eye(W.shape[0])
    K = W.T @ np.linalg.inv(C)
    return (x - b) @ K.T, np.eye(W.shape[1]) - K @ W


def exact_log_marginal(W, b, sigma, x):
    """log p(x_i) = log N(x_i; b, W W^T + sigma^2 I) per data point, float64."""
    from scipy.stats import multivariate_normal

    W, b, x = (np.asarray(a, dtype=np.float64) for a in (W, b, x))
    return multivariate_normal(b, W @ W.T + sigma**2 * np.eye(W.shape[0])).logpdf(x)


class GlobalBias(PyroModule):
    r"""A global latent bias: b ~ N(0, tau^2 I_d) outside the data plate, then per data point
    z ~ N(0, I_q), x | z, b ~ N(W z + b, sigma^2 I). Guide: q(b) = N(m, s^2) (parameters),
    q(z | x, b) the exact conditional posterior, so the local log weight of a draw b is exactly
    log N(x_i; b, W W^T + sigma^2 I)."""

    def __init__(self, W, sigma, tau=2.0):
        super().__init__()
        self.register_buffer("W", torch.as_tensor(W, dtype=torch.float32))
        self.sigma, self.tau = float(sigma), float(tau)
        d = self.W.shape[0]
        self.m = torch.nn.Parameter(torch.linspace(-1.0, 1.0, d))
        self.log_s = torch.nn.Parameter(torch.linspace(-1.5, -0.5, d))

    @pyro_method
    def model(self, x):
        d, q = self.W.shape
        b = pyro.sample("b", dist.Normal(torch.zeros(d), self.tau).to_event(1))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([q]).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + b, self.sigma).to_event(1), obs=x)

    @pyro_method
    def guide(self, x):
        b = pyro.sample("b", dist.Normal(self.m, self.log_s.exp()).to_event(1))  # (P?, 1?, d)
        q = self.W.shape[1]
        cov = torch.linalg.inv(torch.eye(q) + self.W.T @ self.W / self.sigma**2)
        mu = (x - b) @ self.W @ cov / self.sigma**2  # (P?, B, q)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(mu, cov))


class Mixture(PyroModule):
    """Global mixture means in their own plate: mu_k ~ N(0, 4 I_2), k = 1..K, in
    ``pyro.plate("components", K)``; per data point x_i ~ N(mu_{c_i}, I) with a fixed known
    assignment c_i (so no discrete latent), guide q(mu_k) = N(m_k, 0.1^2 I) and a local
    nuisance latent u_i ~ N(0, 1) that x does not depend on, guide N(0, 1)."""

    def __init__(self, K=3):
        super().__init__()
        self.K = K
        self.m = torch.nn.Parameter(torch.arange(2.0 * K).reshape(K, 2))

    @pyro_method
    def model(self, x, y):
        with pyro.plate("components", self.K):
            mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 2.0).to_event(1))  # (P?, K, 2)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("u", dist.Normal(0.0, 1.0))
            loc = mu[..., y, :]  # (P?, B, 2)
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    @pyro_method
    def guide(self, x, y):
        with pyro.plate("components", self.K):
            pyro.sample("mu", dist.Normal(self.m, 0.1).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("u", dist.Normal(0.0, 1.0))


class Forgetful(PyroModule):
    """Calls its network from model/guide methods not decorated with pyro_method, so Pyro
    records no param sites (a common mistake fit refuses)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(self.lin(x[:, None])[:, 0], 1.0), obs=x)

    def guide(self, x):
        pass


class UserLinearGaussian(PyroModule):
    """A user's model/guide pair (not one of ours): z ~ N(0, I_2), x | z ~ N(Az, 0.5^2 I_5)."""

    def __init__(self):
        super().__init__()
        self.decoder = torch.nn.Linear(2, 5)
        self.encoder = torch.nn.Linear(5, 4)

    @pyro_method
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 0.5).to_event(1), obs=x)

    @pyro_method
    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            loc, raw = self.encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, torch.nn.functional.softplus(raw)).to_event(1))

    def gaussian_kl(self, x):
        """Sum over data and dims of KL(N(mu, s^2) || N(0, 1)) = (s^2 + mu^2 - 1 - log s^2)/2."""
        loc, raw = self.encoder(x).chunk(2, -1)
        s = torch.nn.functional.softplus(raw)
        return 0.5 * (s**2 + loc**2 - 1 - torch.log(s**2)).sum()


def assert_twin_matches(vae, ref, x, elbo) -> None:
    """The plain-PyTorch twin ``ref`` of ``vae`` gives ``elbo``'s loss and every gradient, with
    the same noise for the reparametrised z (the global RNG seeded alike before each)."""
    torch.manual_seed(1)
    loss_p = elbo.differentiable_loss(vae.model, vae.guide, x)
    loss_p.backward()
    torch.manual_seed(1)
    loss_t = ref.loss(x)
    loss_t.backward()
    torch.testing.assert_close(loss_p, loss_t)
    for part in ("encoder", "decoder"):
        for (name, a), b in zip(getattr(vae, part).named_parameters(),
                                getattr(ref, part).parameters()):
            torch.testing.assert_close(a.grad, b.grad, msg=f"{part}.{name}")
