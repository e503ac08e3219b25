"""β-TCVAE as a Pyro loss: against Trace_ELBO, the decomposition's identity, and known values of
the total-correlation estimators."""

import math

import numpy as np
import pyro
import pytest
import torch
from _models import UserLinearGaussian as LinearGaussian

import pyrovae
from pyrovae.infer import TraceTC_ELBO, scale_latents
from pyrovae.infer.tc import log_weights, tc_terms

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def vae_batch():
    torch.manual_seed(0)
    vae = pyrovae.VAE(pyrovae.VAEConfig(input_shape=(1, 8, 8), latent_dim=4, hidden=(32,)))
    x = torch.bernoulli(torch.full((16, 1, 8, 8), 0.3))
    return vae, x


def _loss_and_grads(loss, m, x, seed=1, model=None, guide=None):
    for p in m.parameters():
        p.grad = None
    torch.manual_seed(seed)
    value = loss.differentiable_loss(model or m.model, guide or m.guide, x)
    value.backward()
    return value.detach(), [p.grad.clone() for p in m.parameters()]


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_unit_weights_equal_trace_elbo_in_value_and_gradient(vae_batch, estimator):
    vae, x = vae_batch
    ref, g_ref = _loss_and_grads(pyro.infer.Trace_ELBO(), vae, x)
    tc = TraceTC_ELBO(1.0, 1.0, 1.0, estimator=estimator, dataset_size=1000)
    val, g = _loss_and_grads(tc, vae, x)
    assert torch.equal(val, ref)
    for a, b in zip(g, g_ref):
        assert torch.equal(a, b)
    torch.manual_seed(1)
    assert tc.loss_and_grads(vae.model, vae.guide, x) == pytest.approx(float(ref), rel=1e-6)


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_equal_weights_are_beta_scaled_trace_elbo(vae_batch, estimator):
    """MI + TC + DWKL is the Monte-Carlo KL for any estimate of q(z), so α = β = γ = b is the
    β-VAE loss on the same draws: values and gradients agree to rounding."""
    vae, x = vae_batch
    ref, g_ref = _loss_and_grads(pyro.infer.Trace_ELBO(), vae, x,
                                 model=scale_latents(vae.model, 3.0),
                                 guide=scale_latents(vae.guide, 3.0))
    val, g = _loss_and_grads(TraceTC_ELBO(3.0, 3.0, 3.0, estimator=estimator,
                                          dataset_size=500), vae, x)
    torch.testing.assert_close(val, ref, rtol=1e-5, atol=1e-3)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_the_three_terms_sum_to_the_kl_estimate_and_are_logged(vae_batch):
    vae, x = vae_batch
    tc = TraceTC_ELBO(1.0, 6.0, 1.0, dataset_size=100)
    torch.manual_seed(2)
    tc.loss_and_grads(vae.model, vae.guide, x)
    t = tc.last_terms
    torch.manual_seed(2)
    terms = pyrovae.infer.elbo_terms(vae.model, vae.guide, {"x": x})  # the same draw
    assert t["mi"] + t["tc"] + t["dw_kl"] == pytest.approx(t["kl"], abs=1e-5)
    assert t["kl"] == pytest.approx(terms["kl"] / len(x), rel=1e-4)
    hist = pyrovae.fit(vae, torch.bernoulli(torch.full((64, 1, 8, 8), 0.3)),
                       TraceTC_ELBO(dataset_size=64), epochs=1, batch_size=16, log_every=1,
                       progress=False)
    assert {"mi", "tc", "dw_kl"} <= set(hist.steps[-1])


def _identical_codes(n_batch, dims, seed=0):
    """Every data point has the same posterior N(0, I): the codes carry no information, the
    aggregate posterior is N(0, I), and every term is 0 in truth."""
    g = torch.Generator().manual_seed(seed)
    base = torch.distributions.Normal(torch.zeros(n_batch, dims), torch.ones(n_batch, dims))
    z = torch.randn(n_batch, dims, generator=g)
    lq = base.log_prob(z).sum(-1)
    return base, z, lq


@pytest.mark.parametrize("n_batch,dims,n_data", [(16, 4, 1000), (64, 10, 50000), (2, 3, 7)])
def test_mws_total_correlation_of_identical_codes_is_l_minus_1_log_n(n_batch, dims, n_data):
    """MWS weights sum to 1/N per row, so log q(z) and each log q(z_l) sit log N below the truth
    and the TC estimate is exactly (L - 1) log N (Chen et al. 2018, §4 estimator)."""
    base, z, lq = _identical_codes(n_batch, dims)
    t = tc_terms(base, z, lq, lq, n_data, "mws")
    torch.testing.assert_close(t["tc"], torch.full((n_batch,), (dims - 1) * math.log(n_data)),
                               rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(t["mi"], torch.full((n_batch,), math.log(n_data)), rtol=1e-5,
                               atol=1e-4)


@pytest.mark.parametrize("n_batch,dims,n_data", [(16, 4, 1000), (64, 10, 50000), (2, 3, 7)])
def test_mss_terms_of_identical_codes_are_zero(n_batch, dims, n_data):
    base, z, lq = _identical_codes(n_batch, dims)
    t = tc_terms(base, z, lq, lq, n_data, "mss")
    for k in ("mi", "tc", "dw_kl"):
        torch.testing.assert_close(t[k], torch.zeros(n_batch), atol=1e-5, rtol=0)


def test_mss_weights_follow_the_strata():
    w = log_weights(5, 100, "mss").exp().double()
    torch.testing.assert_close(w.sum(1), torch.ones(5, dtype=torch.float64))
    assert torch.allclose(w.diagonal(), torch.full((5,), 0.01, dtype=torch.float64))
    assert w[0, 1] == pytest.approx(96 / 400) and w[4, 0] == pytest.approx(96 / 400)
    assert w[0, 2] == pytest.approx(0.25)


@pytest.mark.parametrize("estimator", ["mws", "mss"])
@pytest.mark.parametrize("r", [0.0, 0.8])
def test_total_correlation_of_gaussian_codes_matches_the_closed_form(estimator, r):
    """N points with posterior N(mu_n, s^2 I), mu_n ~ N(0, S) (2-d, correlation r): q(z) is the
    empirical mixture, close to N(0, S + s^2 I), whose TC is -log(1 - rho^2)/2 with
    rho = r / (1 + s^2) (0 for independent codes). With the whole data as the batch, MWS
    computes the mixture exactly up to the constant (L - 1) log N and MSS up to O(1/N); the
    mean over the N samples has a standard error from their spread, and the mixture's
    deviation from the Gaussian is O(N^-1/2)."""
    n, s = 2000, 0.3
    rng = np.random.default_rng(0)
    mu = rng.multivariate_normal([0, 0], [[1, r], [r, 1]], size=n)
    loc = torch.tensor(mu, dtype=torch.float64)
    base = torch.distributions.Normal(loc, torch.full_like(loc, s))
    z = base.sample()
    lq = base.log_prob(z).sum(-1)
    t = tc_terms(base, z, lq, lq, n, estimator)
    per_sample = t["tc"] - (math.log(n) if estimator == "mws" else 0.0)  # (N,)
    rho = r / (1 + s**2)
    truth = -0.5 * math.log(1 - rho**2)
    se = float(per_sample.std() / math.sqrt(n))
    assert float(per_sample.mean()) == pytest.approx(truth, abs=4 * se + 2 / math.sqrt(n))


def test_works_on_a_users_model_and_refuses_what_it_cannot_decompose():
    m = LinearGaussian()
    x = torch.randn(8, 5)
    TraceTC_ELBO(dataset_size=100).loss_and_grads(m.model, m.guide, x)
    with pytest.raises(ValueError, match="dataset_size"):
        TraceTC_ELBO()
    with pytest.raises(ValueError, match="dataset_size: 4 is smaller"):
        TraceTC_ELBO(dataset_size=4).loss(m.model, m.guide, x)
    with pytest.raises(ValueError, match="estimator"):
        TraceTC_ELBO(dataset_size=10, estimator="exact")

    def scalar_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", pyro.distributions.Normal(torch.zeros(x.shape[0], 2), 1.0)
                        .to_event(1))
            pyro.sample("w", pyro.distributions.Normal(0.0, 1.0))

    def scalar_model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", pyro.distributions.Normal(0.0, 1.0).expand([2]).to_event(1))
            pyro.sample("w", pyro.distributions.Normal(0.0, 1.0))
            pyro.sample("x", pyro.distributions.Normal(0.0, 1.0).expand([5]).to_event(1), obs=x)

    with pytest.raises(ValueError, match="pass site="):
        TraceTC_ELBO(dataset_size=100).loss(scalar_model, scalar_guide, x)
    with pytest.raises(ValueError, match="factorised density over a vector"):
        TraceTC_ELBO(dataset_size=100, site="w").loss(scalar_model, scalar_guide, x)
    TraceTC_ELBO(dataset_size=100, site="z").loss(scalar_model, scalar_guide, x)


def test_vectorised_particles_keep_the_identity_and_the_bound(vae_batch):
    vae, x = vae_batch
    a = TraceTC_ELBO(1.0, 4.0, 1.0, dataset_size=200, num_particles=3,
                     vectorize_particles=True, max_plate_nesting=1)
    a.loss(vae.model, vae.guide, x)
    t = a.last_terms
    assert t["mi"] + t["tc"] + t["dw_kl"] == pytest.approx(t["kl"], abs=1e-5)
    # each particle's terms come from its own batch: with MSS weights the self term alone gives
    # log q(z_i) >= log q(z_i | x_i) - log N, so MI <= log N (mixing particles would break it)
    assert t["mi"] <= math.log(200) + 1e-5
