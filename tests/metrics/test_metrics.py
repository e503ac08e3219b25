import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from sklearn.decomposition import PCA

from pyrovae import VAE, VAEConfig, fit, metrics

SIGMA = 0.5  # observation noise of the conjugate model


def conjugate_model(x):
    """z_i ~ N(0, 1), x_i | z_i ~ N(z_i, SIGMA^2): marginal x_i ~ N(0, 1 + SIGMA^2)."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, SIGMA), obs=x)


def linear_guide(a, b, s):
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(a * x + b, s))
    return guide


def exact_log_marginal(x):
    return dist.Normal(0.0, math.sqrt(1 + SIGMA**2)).log_prob(x)


def closed_form_elbo(x, a, b, s):
    """E_q[log p(x|z)] + E_q[log p(z)] + H[q] for q = N(m, s^2), m = a x + b."""
    m = a * x + b
    e_lik = -0.5 * math.log(2 * math.pi * SIGMA**2) - ((x - m) ** 2 + s**2) / (2 * SIGMA**2)
    e_prior = -0.5 * math.log(2 * math.pi) - (m**2 + s**2) / 2
    entropy = 0.5 * math.log(2 * math.pi * math.e * s**2)
    return e_lik + e_prior + entropy


X = torch.linspace(-2.5, 2.5, 11)


def test_exact_posterior_guide_gives_the_exact_marginal_with_one_sample():
    a, s = 1 / (1 + SIGMA**2), math.sqrt(SIGMA**2 / (1 + SIGMA**2))
    r = metrics.importance_sampling((conjugate_model, linear_guide(a, 0.0, s)), X, 7)
    torch.testing.assert_close(r["log_likelihood"], exact_log_marginal(X), atol=1e-5, rtol=0)
    torch.testing.assert_close(r["elbo"], exact_log_marginal(X), atol=1e-5, rtol=0)
    torch.testing.assert_close(r["ess"], torch.full_like(X, 7.0), atol=1e-3, rtol=0)


@pytest.mark.parametrize("max_elements", [2**25, 11 * 64])  # one chunk; chunks of 64
def test_log_likelihood_matches_exact_marginal_within_monte_carlo_error(max_elements):
    k = 20000
    pair = (conjugate_model, linear_guide(0.5, 0.3, 0.9))  # a deliberately poor guide
    r = metrics.importance_sampling(pair, X, k, max_elements=max_elements)
    # delta method: sd(log mean w) ~= sqrt(1/ESS - 1/K)
    se = (1 / r["ess"] - 1 / k).clamp(min=0).sqrt()
    err = (r["log_likelihood"] - exact_log_marginal(X)).abs()
    assert (err < 4 * se + 1e-3).all(), (err, se)
    assert (r["ess"] < k).all()  # the guide is not the posterior


def test_elbo_matches_closed_form():
    a, b, s = 0.5, 0.3, 0.9
    r = metrics.importance_sampling((conjugate_model, linear_guide(a, b, s)), X, 20000,
                                    max_elements=11 * 3000)
    err = (r["elbo"] - closed_form_elbo(X, a, b, s)).abs()
    assert (err < 4 * r["elbo_se"]).all(), (err, r["elbo_se"])
    assert (r["elbo_se"] > 0).all() and (r["elbo_se"] < 0.2).all()


def test_iwae_bound_increases_with_k():
    pair = (conjugate_model, linear_guide(0.2, 0.0, 1.2))
    means = [metrics.log_likelihood(pair, X, k).mean() for k in (1, 10, 100, 3000)]
    assert means[0] < means[1] < means[2]
    assert means[3] <= exact_log_marginal(X).mean() + 0.01
    exact = exact_log_marginal(X).mean()
    assert abs(means[3] - exact) < abs(means[0] - exact)


def _ppca_data():
    rng = np.random.default_rng(0)
    n, d, q = 500, 6, 2
    w = rng.normal(size=(d, q)) * np.array([2.0, 1.0])
    x = rng.normal(size=(n, q)) @ w.T + 0.5 * rng.normal(size=(n, d)) + rng.normal(size=d)
    return x.astype("float32"), q


def _linear_vae(d, q):
    return VAE(VAEConfig(input_shape=(d,), latent_dim=q, hidden=(), activation="identity",
                         likelihood="gaussian", likelihood_args={"scale": "learned"}))


def _exact_linear_vae_marginal(vae, x):
    """A linear Gaussian VAE's model is probabilistic PCA: x ~ N(b, W W^T + sigma^2 I)."""
    lin = vae.decoder.net[0]
    with torch.no_grad():
        w, b = lin.weight, lin.bias
        sigma2 = vae.likelihood._loc_scale(torch.zeros(1, x.shape[1]))[1][0, 0] ** 2
        cov = w @ w.T + sigma2 * torch.eye(x.shape[1])
        return dist.MultivariateNormal(b, cov).log_prob(torch.as_tensor(x))


@pytest.mark.slow
def test_linear_gaussian_vae_reaches_the_ppca_likelihood():
    x, q = _ppca_data()
    n = len(x)
    ppca = PCA(q).fit(x).score(x) * n  # the maximum likelihood of probabilistic PCA
    vae = _linear_vae(x.shape[1], q)
    elbo = pyro.infer.Trace_ELBO(num_particles=4, vectorize_particles=True)
    fit(vae, x, elbo, epochs=800, batch_size=n, lr=0.03, lr_schedule="cosine", progress=False)
    total_elbo = metrics.elbo(vae, x, 500).sum().item()
    assert abs(total_elbo - ppca) < 0.005 * abs(ppca)  # within 0.5%
    assert total_elbo <= ppca + 0.05  # a lower bound on a likelihood no higher than the MLE
    # the importance-weighted estimate converges on the model's exact marginal (closed form)
    exact = _exact_linear_vae_marginal(vae, x).sum().item()
    l1000 = metrics.log_likelihood(vae, x, 1000).sum().item()
    assert abs(l1000 - exact) < 0.3
    assert exact <= ppca + 1e-2


def test_iwae_approaches_the_exact_marginal_of_a_partly_trained_linear_vae():
    x, q = _ppca_data()
    vae = _linear_vae(x.shape[1], q)
    fit(vae, x, epochs=60, batch_size=len(x), lr=0.03, progress=False)
    exact = _exact_linear_vae_marginal(vae, x).sum().item()
    est = [metrics.log_likelihood(vae, x, k).sum().item() for k in (1, 10, 100, 2000)]
    gaps = [exact - e for e in est]
    assert gaps[0] > 5  # a visible ELBO gap early in training
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3] > -0.5
    assert gaps[3] < 0.1 * gaps[0]


def test_global_latent_variables_are_refused_by_name():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="site 'mu' is outside the data plate 'data'"):
        metrics.log_likelihood((model, guide), X, 3)


def test_argument_errors():
    pair = (conjugate_model, linear_guide(0.5, 0.0, 1.0))
    with pytest.raises(ValueError, match="num_samples: expected a positive int"):
        metrics.log_likelihood(pair, X, 0)
    with pytest.raises(TypeError, match="callable 'model' and 'guide'"):
        metrics.log_likelihood(object(), X, 3)


def test_particle_chunks_do_not_grow_with_k(monkeypatch):
    from pyrovae.infer.particles import ParticleTracer

    seen = []
    real = ParticleTracer.traces

    def record(self, kwargs, num_particles):
        seen.append(num_particles)
        return real(self, kwargs, num_particles)

    monkeypatch.setattr(ParticleTracer, "traces", record)
    pair = (conjugate_model, linear_guide(0.5, 0.0, 1.0))
    largest = {}
    for k in (500, 5000):
        seen.clear()
        metrics.log_likelihood(pair, X, k, max_elements=11 * 64)
        assert sum(seen) == k
        largest[k] = max(seen)
    assert largest[500] == largest[5000] == 64  # one chunk of particles at a time
