"""The lean ELBO (pyrovae.infer.lean) is Pyro's own estimator computed with one handler: same
value and gradient as Trace_ELBO / TraceMeanField_ELBO on the same draws."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.nn import PyroModule, pyro_method

from pyrovae import VAE, VAEConfig
from pyrovae.infer import guide_model_traces, trace_terms
from pyrovae.infer.lean import eligible, lean_elbo
from pyrovae.train.steps import pinned


class Scaled(PyroModule):
    """A subsampled plate (scale N/B), a masked site, a poutine.scale'd site and an auxiliary
    guide-only site: everything the estimator must weigh as Pyro does."""

    def __init__(self, n=40):
        super().__init__()
        self.n = n
        self.loc = torch.nn.Parameter(torch.tensor(0.3))
        self.net = torch.nn.Linear(2, 4)

    @pyro_method
    def model(self, x, index):
        g = pyro.sample("g", dist.Normal(0.0, 2.0))
        with pyro.plate("data", self.n, subsample=index):
            z = pyro.sample("z", dist.Normal(g, 1.0).expand([2]).to_event(1))
            with poutine.mask(mask=index % 3 != 0):
                pyro.sample("x", dist.Normal(z.sum(-1), 0.5), obs=x)
        with poutine.scale(scale=0.25):
            pyro.sample("w", dist.Normal(0.0, 1.0))

    @pyro_method
    def guide(self, x, index):
        pyro.sample("g", dist.Normal(self.loc, 0.5))
        a = pyro.sample("aux", dist.Normal(0.0, 1.0), infer={"is_auxiliary": True})
        with pyro.plate("data", self.n, subsample=index):
            loc, raw = self.net(torch.stack([x, x * a], -1)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, torch.nn.functional.softplus(raw)).to_event(1))
        with poutine.scale(scale=0.25):
            pyro.sample("w", dist.Normal(self.loc, 1.0))


def _grads(loss_fn, model, seed):
    for p in model.parameters():
        p.grad = None
    pyro.set_rng_seed(seed)
    loss = loss_fn()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("analytic", [False, True])
def test_lean_equals_pyro_on_scaled_masked_and_auxiliary_sites(analytic):
    m, index = Scaled(), torch.tensor([1, 5, 7, 12, 30])
    x = torch.randn(5)
    ref_elbo = pyro.infer.TraceMeanField_ELBO() if analytic else pyro.infer.Trace_ELBO()
    kw = {"x": x, "index": index}
    with pyro.validation_enabled(False):
        ref, g_ref = _grads(lambda: ref_elbo.differentiable_loss(m.model, m.guide, **kw), m, 3)
        val, g = _grads(lambda: lean_elbo(m.model, m.guide, (), kw, analytic=analytic)[0], m, 3)
    torch.testing.assert_close(val, ref, rtol=1e-6, atol=1e-6)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_lean_on_a_vae_matches_trace_elbo_and_its_terms_add_up(digits):
    vae = VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=3, hidden=(16,)))
    x = digits.train.frozen(0).x[:32]
    with pyro.validation_enabled(False):
        ref, g_ref = _grads(lambda: pyro.infer.Trace_ELBO().differentiable_loss(
            vae.model, vae.guide, x), vae, 0)
        with pinned(vae):  # sub-networks as plain attributes: the same computation
            val, g = _grads(lambda: lean_elbo(vae.model, vae.guide, (), {"x": x})[0], vae, 0)
        pyro.set_rng_seed(0)
        _, terms = lean_elbo(vae.model, vae.guide, (), {"x": x})
        pyro.set_rng_seed(0)
        model_tr, guide_tr = guide_model_traces(vae.model, vae.guide, {"x": x}, log_prob=True)
    torch.testing.assert_close(val, ref)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(terms["recon"] + terms["kl"], val)  # no guide-only sites
    expected = trace_terms(model_tr, guide_tr)  # the same draws read off Pyro's traces
    torch.testing.assert_close(terms["recon"], expected["recon"])
    torch.testing.assert_close(terms["kl"], expected["kl"])


def test_a_normal_guide_sites_log_q_comes_from_its_noise_with_the_exact_gradient():
    """z = mu + sigma * eps is drawn with the bits pyro.sample draws, and log q is computed from
    eps: at fixed eps, d log q / d sigma = -1/sigma and d log q / d mu = 0 exactly (Kingma and
    Welling 2014, eq. 10's reparametrised density), where Pyro's formula in z, -(z-mu)^2/2s^2,
    gives them up to rounding; the value equals Normal.log_prob's to float tolerance."""
    loc = torch.randn(64, 3, requires_grad=True)
    scale = (torch.rand(64, 3) + 0.1).requires_grad_()

    def guide():  # a guide-only site: the ELBO's loss is log q alone
        with pyro.plate("data", 64):
            pyro.sample("u", dist.Normal(loc, scale).to_event(1))

    with pyro.validation_enabled(False):
        pyro.set_rng_seed(1)
        z_pyro = pyro.sample("u", dist.Normal(loc, scale).to_event(1)).detach()
        pyro.set_rng_seed(1)
        loss, _ = lean_elbo(lambda: None, guide)
    loss.backward()
    torch.testing.assert_close(loss.detach(), dist.Normal(loc, scale).log_prob(z_pyro).sum()
                               .detach(), rtol=1e-6, atol=1e-5)
    assert torch.equal(scale.grad, -1 / scale.detach())
    assert loc.grad is None  # log q does not depend on mu at all
    # Pyro's own estimator on the same draw: the same gradient up to rounding only
    loc.grad = scale.grad = None
    pyro.set_rng_seed(1)
    pyro.infer.Trace_ELBO().differentiable_loss(lambda: None, guide).backward()
    torch.testing.assert_close(scale.grad, -1 / scale.detach(), rtol=1e-5, atol=1e-5)


def test_pinned_attributes_are_removed_and_follow_reassignment():
    vae = VAE(VAEConfig(input_shape=(4,), latent_dim=2, hidden=(3,), likelihood="gaussian"))
    with pinned(vae):
        assert "encoder" in vae.__dict__
        new = torch.nn.Sequential()
        vae.encoder = new  # nn.Module.__setattr__ drops the pinned entry
        assert vae.encoder is new and "encoder" not in vae.__dict__
    assert "decoder" not in vae.__dict__ and "encoder" not in vae.__dict__


class _Discrete(PyroModule):
    @pyro_method
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    @pyro_method
    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Bernoulli(torch.sigmoid(x)))


def test_eligibility_names_what_the_lean_path_cannot_do():
    x = torch.randn(4)
    m = _Discrete()
    model_tr, guide_tr = guide_model_traces(m.model, m.guide, {"x": x})
    assert "not reparametrised" in eligible(pyro.infer.Trace_ELBO(), model_tr, guide_tr)
    assert "TraceGraph_ELBO" in eligible(pyro.infer.TraceGraph_ELBO(), model_tr, guide_tr)
    assert "particles" in eligible(pyro.infer.Trace_ELBO(num_particles=2), model_tr, guide_tr)
    vae = VAE(VAEConfig(input_shape=(4,), latent_dim=2, hidden=(3,), likelihood="gaussian"))
    model_tr, guide_tr = guide_model_traces(vae.model, vae.guide, {"x": torch.randn(3, 4)})
    assert eligible(pyro.infer.TraceMeanField_ELBO(), model_tr, guide_tr) is None
