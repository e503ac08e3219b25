import dataclasses

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import Predictive, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

from pyrovae import AE, VAE, VAEConfig, analysis, metrics, models
from pyrovae.infer import elbo_terms

SMALL = VAEConfig(input_shape=(1, 8, 8), latent_dim=3, hidden=(32,))


def _batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, 8, 8), 0.3), generator=g)


def _closed_form_kl(loc, scale):
    """KL(N(loc, scale^2) || N(0, 1)) summed over dims (Kingma and Welling 2014, app. B)."""
    return 0.5 * (loc**2 + scale**2 - 1 - 2 * torch.log(scale)).sum(-1)


def test_gaussian_kl_closed_form_three_ways():
    torch.manual_seed(0)
    vae, x = VAE(SMALL), _batch()
    with torch.no_grad():
        loc, scale = vae.encode(x)
    kl = _closed_form_kl(loc, scale)
    # torch's own KL implementation agrees with the formula
    ref = torch.distributions.kl_divergence(dist.Normal(loc, scale), dist.Normal(0.0, 1.0))
    torch.testing.assert_close(ref.sum(-1), kl)
    # the trace-based Monte-Carlo KL that fit reports converges to it
    draws = torch.tensor([elbo_terms(vae.model, vae.guide, {"x": x})["kl"] for _ in range(400)])
    se = draws.std() / 20
    assert abs(draws.mean() - kl.sum()) < 4 * se


def test_meanfield_trace_and_closed_form_elbos_agree():
    torch.manual_seed(0)
    vae, x = VAE(SMALL), _batch()
    k = 4000
    mf = TraceMeanField_ELBO(num_particles=k, vectorize_particles=True).loss(
        vae.model, vae.guide, x)
    tr = Trace_ELBO(num_particles=k, vectorize_particles=True).loss(vae.model, vae.guide, x)
    # the same expectation: E_q[-log p(x|z)] + KL, with the KL analytic or sampled
    assert abs(mf - tr) < 0.01 * abs(tr)
    with torch.no_grad():
        loc, scale = vae.encode(x)
        z = loc + scale * torch.randn(k, *loc.shape)
        recon = -vae.likelihood(vae.decode(z)).log_prob(x).mean(0).sum()
    assert abs(mf - (recon + _closed_form_kl(loc, scale).sum())) < 0.01 * abs(mf)


def test_renyi_alpha0_equals_our_importance_weighted_bound():
    torch.manual_seed(0)
    vae, x = VAE(SMALL), _batch(4)
    k, reps = 20, 60
    renyi = RenyiELBO(alpha=0.0, num_particles=k, vectorize_particles=True)
    r = torch.tensor([-renyi.loss(vae.model, vae.guide, x) for _ in range(reps)])
    ours = torch.stack([metrics.log_likelihood(vae, x, k, seed=s).sum() for s in range(reps)])
    se = (r.var() / reps + ours.var() / reps).sqrt()
    assert abs(r.mean() - ours.mean()) < 4 * se


def test_predictive_runs_unchanged_and_draws_from_the_guide():
    torch.manual_seed(0)
    vae, x = VAE(SMALL), _batch(4)
    s = Predictive(vae.model, guide=vae.guide, num_samples=2000, parallel=True)(x)
    assert s["z"].shape == (2000, 4, 3)
    with torch.no_grad():
        loc, scale = vae.encode(x)
    assert ((s["z"].mean(0) - loc).abs() < 4 * scale / 2000**0.5).all()
    assert ((s["z"].std(0) - scale).abs() < 0.1 * scale).all()
    prior = Predictive(vae.model, num_samples=3000, parallel=True)(x)["z"]
    assert abs(prior.mean()) < 0.05 and abs(prior.std() - 1) < 0.05


def test_ae_loss_is_the_reconstruction_cross_entropy():
    torch.manual_seed(0)
    ae, x = AE(SMALL), _batch()
    loss = Trace_ELBO().loss(ae.model, ae.guide, x)
    with torch.no_grad():
        logits = ae.decoder(ae.encoder(x))
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    assert loss == pytest.approx(bce.item(), rel=1e-5)


def test_generic_trace_helpers_agree_with_the_vae_methods():
    vae, x = VAE(SMALL), _batch(5)
    batch = {"x": x}
    with torch.no_grad():
        loc, _ = vae.encode(x)
    torch.testing.assert_close(analysis.latent_means(vae, batch)["z"], loc)
    torch.manual_seed(3)
    generic = analysis.prior_predictive_mean(vae, batch)
    torch.manual_seed(3)
    torch.testing.assert_close(generic, vae.sample(5))


def test_conv_and_gaussian_variants_train_a_step_and_improve():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 28, 28).round()
    for cfg in (VAEConfig(input_shape=(1, 28, 28), latent_dim=4, network="conv", hidden=(32,)),
                VAEConfig(input_shape=(1, 28, 28), latent_dim=4, likelihood="gaussian",
                          likelihood_args={"scale": "learned"}, hidden=(32,))):
        vae = VAE(cfg)
        opt = torch.optim.Adam(vae.parameters(), 1e-2)
        elbo = Trace_ELBO(num_particles=8, vectorize_particles=True)
        before = elbo.loss(vae.model, vae.guide, x)
        for _ in range(30):
            opt.zero_grad()
            elbo.loss_and_grads(vae.model, vae.guide, x)
            opt.step()
        assert elbo.loss(vae.model, vae.guide, x) < before


def test_config_validation_and_registry():
    with pytest.raises(ValueError, match="latent_dim: expected a positive int"):
        VAEConfig(latent_dim=0)
    with pytest.raises(ValueError, match="network 'conv' needs image input_shape"):
        VAEConfig(input_shape=(784,), network="conv")
    with pytest.raises(ValueError, match="unknown config key"):
        models.build("vae", {"latent_size": 3})
    with pytest.raises(ValueError, match="unknown name 'vea'"):
        models.resolve("vea")
    m = models.build("vae", {"latent_dim": 2, "hidden": [8]}, input_shape=(1, 8, 8))
    assert isinstance(m, VAE) and m.config.input_shape == (1, 8, 8) and m.config.hidden == (8,)
    assert models.spec_of(m) == "vae" and models.resolve("ae") is AE
    assert dataclasses.asdict(m.config)["latent_dim"] == 2


def test_prior_is_standard_normal_on_the_model_device():
    vae = VAE(SMALL)
    p = vae.prior()
    assert isinstance(p, dist.Independent) and p.event_shape == (3,)
    torch.testing.assert_close(p.base_dist.loc, torch.zeros(3))
    assert pyro.__version__
