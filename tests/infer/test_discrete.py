"""Discrete-latent VAEs and their gradient estimators, checked against exact enumeration."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from scipy.stats import norm

import pyrovae
from pyrovae.infer import TraceConcrete_ELBO, TraceEnumGuide_ELBO, TraceScore_ELBO, make_loss
from pyrovae.infer.concrete import relax
from pyrovae.metrics import gradient_variance
from pyrovae.models import BernoulliVAE, BernoulliVAEConfig, CategoricalVAE

pytestmark = pytest.mark.usefixtures("one_thread")


def _bonferroni_z(num_tests, alpha=1e-3):
    """Two-sided normal quantile for a family-wise false-alarm rate ``alpha``."""
    return float(norm.ppf(1 - alpha / (2 * num_tests)))


def _exact_grads(model, guide, names, **kwargs):
    """Gradients of the exact ELBO: every discrete guide site summed by TraceEnum_ELBO."""
    store = pyro.get_param_store()
    TraceEnumGuide_ELBO(max_plate_nesting=1).loss_and_grads(model, guide, **kwargs)
    out = {n: store[n].unconstrained().grad.detach().double().clone() for n in names}
    for n in names:
        store[n].unconstrained().grad = None
    return out


# A two-layer belief net small enough to enumerate: a -> b -> x in the model, x -> b -> a in the
# guide. TraceGraph_ELBO's score for `a` then omits log p(x | b), which Trace_ELBO keeps.
def _tiny_model(x):
    ta = pyro.param("theta_a", torch.tensor(0.3))
    tb = pyro.param("theta_b", torch.tensor([-0.5, 1.2]))
    w = pyro.param("w", torch.tensor([[1.0, -1.0], [-0.5, 2.0]]))
    with pyro.plate("data", x.shape[0]):
        a = pyro.sample("a", dist.Bernoulli(logits=ta))
        b = pyro.sample("b", dist.Bernoulli(logits=tb[0] + tb[1] * a))
        loc = w[0] * (1 - b)[..., None] + w[1] * b[..., None]  # (..., B, 2)
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)


def _tiny_guide_factory(baseline):
    net = torch.nn.Linear(2, 1)  # input-dependent baseline b(x)

    def infer(inp):
        opts = {}
        if "average" in baseline:
            opts.update(use_decaying_avg_baseline=True, baseline_beta=0.9)
        if "neural" in baseline:
            opts.update(nn_baseline=lambda h: net(h).squeeze(-1), nn_baseline_input=inp)
        return {"baseline": opts} if opts else {}

    def guide(x):
        pyro.module("baseline_net", net)
        phi = pyro.param("phi", torch.tensor([0.4, -0.7]))
        psi = pyro.param("psi", torch.tensor([0.2, -1.0]))
        with pyro.plate("data", x.shape[0]):
            b = pyro.sample("b", dist.Bernoulli(logits=x @ phi), infer=infer(x))
            pyro.sample("a", dist.Bernoulli(logits=psi[0] + psi[1] * b), infer=infer(x))

    return guide


_TINY_PARAMS = ["theta_a", "theta_b", "w", "phi", "psi"]


@pytest.fixture(scope="module")
def tiny_data():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 2, generator=g)
    return x.repeat(8, 1)  # 64 rows: 8 points, each seen 8 times per draw


@pytest.mark.parametrize("loss,baseline", [
    (TraceScore_ELBO(), "none"),
    (pyro.infer.Trace_ELBO(), "none"),
    (pyro.infer.TraceGraph_ELBO(), "none"),
    (pyro.infer.TraceGraph_ELBO(), "average+neural"),
], ids=["score", "trace", "tracegraph", "tracegraph+baselines"])
def test_estimators_are_unbiased_on_an_enumerable_belief_net(tiny_data, loss, baseline):
    guide = _tiny_guide_factory(baseline)
    exact = _exact_grads(_tiny_model, guide, _TINY_PARAMS, x=tiny_data)
    r = gradient_variance((_tiny_model, guide), {"x": tiny_data}, loss, num_draws=200,
                          params=_TINY_PARAMS, warmup=10, seed=1)
    z = _bonferroni_z(sum(v.numel() for v in exact.values()))
    se = r.standard_error()
    for n in _TINY_PARAMS:
        err = (r.mean[n] - exact[n]).abs()
        assert bool((err <= z * se[n] + 1e-4 * (1 + exact[n].abs())).all()), \
            (n, r.mean[n], exact[n], se[n])


def test_rao_blackwellisation_and_baselines_cut_the_variance_on_the_tiny_net(tiny_data):
    sf = gradient_variance((_tiny_model, _tiny_guide_factory("none")), {"x": tiny_data},
                           TraceScore_ELBO(), 100, params=["phi", "psi"], seed=2)
    rb = gradient_variance((_tiny_model, _tiny_guide_factory("average")), {"x": tiny_data},
                           pyro.infer.TraceGraph_ELBO(), 100, params=["phi", "psi"],
                           warmup=30, seed=2)
    # the plain estimator multiplies each datum's score by all 64 data points' costs
    assert sf.total_variance() > 10 * rb.total_variance()


@pytest.fixture(scope="module")
def tiny_cat():
    torch.manual_seed(0)
    m = CategoricalVAE(input_shape=(4,), num_categories=3, hidden=(5,),
                       baseline="average+neural", baseline_hidden=(4,))
    x = torch.bernoulli(torch.rand(6, 4, generator=torch.Generator().manual_seed(1)))
    return m, x.repeat(6, 1)


def _module_exact_grads(m, x):
    m.zero_grad(set_to_none=True)
    TraceEnumGuide_ELBO().loss_and_grads(m.model, m.guide, x)
    out = {n: p.grad.detach().double().clone() for n, p in m.named_parameters()
           if p.grad is not None}
    m.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("loss", [TraceScore_ELBO(), pyro.infer.TraceGraph_ELBO()],
                         ids=["score", "tracegraph+baselines"])
def test_categorical_vae_gradients_match_enumeration(tiny_cat, loss):
    m, x = tiny_cat
    exact = _module_exact_grads(m, x)
    assert set(exact) >= {"encoder.net.0.weight", "prototypes", "prior_logits"}
    r = gradient_variance(m, {"x": x}, loss, num_draws=200, params=list(exact), warmup=10,
                          seed=3)
    z = _bonferroni_z(sum(v.numel() for v in exact.values()))
    se = r.standard_error()
    for n, g in exact.items():
        assert bool(((r.mean[n] - g).abs() <= z * se[n] + 1e-4 * (1 + g.abs())).all()), n


def test_enumerated_elbo_equals_the_sum_over_categories(tiny_cat):
    m, x = tiny_cat
    loss = TraceEnumGuide_ELBO().loss(m.model, m.guide, x)
    with torch.no_grad():
        q = torch.softmax(m.encoder(x), -1)  # (B, K)
        eye = torch.eye(3)
        log_px_c = m.likelihood(m.decode(eye[:, None])).log_prob(x).T  # (B, K)
        log_prior = torch.log_softmax(m.prior_logits, -1)
        elbo = (q * (log_px_c + log_prior - torch.log(q))).sum()
    assert loss == pytest.approx(-float(elbo), rel=1e-5)


@pytest.mark.filterwarnings("ignore:TraceEnum_ELBO found no sample sites")
def test_enum_elbo_refuses_a_vector_of_bits_by_name():
    m = BernoulliVAE(input_shape=(4,), latent_dims=(3,))
    with pytest.raises(ValueError, match="site 'z'.*2\\^L"):
        TraceEnumGuide_ELBO().loss(m.model, m.guide, torch.ones(2, 4))


def test_score_elbo_equals_trace_elbo_where_rao_blackwellisation_changes_nothing():
    # One datum and one latent site: the plate-wise and whole-trace costs coincide.
    m = CategoricalVAE(input_shape=(4,), num_categories=3)
    x = torch.ones(1, 4)
    grads = []
    for loss in (pyro.infer.Trace_ELBO(), TraceScore_ELBO()):
        m.zero_grad(set_to_none=True)
        pyro.set_rng_seed(5)
        value = loss.loss_and_grads(m.model, m.guide, x)
        grads.append((value, [p.grad.clone() for p in m.parameters() if p.grad is not None]))
    assert grads[0][0] == grads[1][0]
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b)
    # and on a fully reparametrised model they are the same estimator
    vae = pyrovae.VAE(input_shape=(4,), latent_dim=2, hidden=(3,), likelihood="gaussian")
    xs = torch.randn(5, 4)
    out = []
    for loss in (pyro.infer.Trace_ELBO(), TraceScore_ELBO()):
        vae.zero_grad(set_to_none=True)
        pyro.set_rng_seed(6)
        out.append((loss.loss_and_grads(vae.model, vae.guide, xs),
                    [p.grad.clone() for p in vae.parameters()]))
    assert out[0][0] == out[1][0]
    for a, b in zip(out[0][1], out[1][1]):
        torch.testing.assert_close(a, b)


def test_relax_keeps_logits_and_wrappers():
    logits = torch.randn(3, 4)
    fn = dist.Bernoulli(logits=logits).to_event(1).expand([2, 3])
    r = relax(fn, 0.5)
    assert r.batch_shape == (2, 3) and r.event_shape == (4,)
    y = r.rsample()
    assert bool(((y > 0) & (y < 1)).all()) and y.requires_grad is False
    # RelaxedBernoulli density of Maddison et al. (2017, eq. 24 / Jang et al.): check one value
    base = dist.RelaxedBernoulli(torch.tensor(0.5), logits=logits)
    torch.testing.assert_close(r.log_prob(y), base.log_prob(y).sum(-1))
    cat = relax(dist.OneHotCategorical(logits=logits), 0.3)
    v = cat.rsample((5,))
    torch.testing.assert_close(v.sum(-1), torch.ones(5, 3))
    assert relax(dist.Normal(0.0, 1.0), 0.5) is None
    with pytest.raises(ValueError, match="site 'c'.*OneHotCategorical"):
        relax(dist.Categorical(logits=logits), 0.5, "c")
    with pytest.raises(ValueError, match="temperature"):
        TraceConcrete_ELBO(temperature=0.0)


def test_concrete_elbo_relaxes_latents_only_and_is_pathwise():
    m = BernoulliVAE(input_shape=(4,), latent_dims=(3,))
    x = torch.bernoulli(torch.full((5, 4), 0.5))
    loss = TraceConcrete_ELBO(temperature=0.7)
    tr = {}
    orig = loss._get_trace

    def spy(model, guide, args, kwargs):
        tr["model"], tr["guide"] = orig(model, guide, args, kwargs)
        return tr["model"], tr["guide"]

    loss._get_trace = spy
    loss.loss_and_grads(m.model, m.guide, x)
    z = tr["guide"].nodes["z"]
    assert z["fn"].has_rsample and not bool(((z["value"] == 0) | (z["value"] == 1)).all())
    assert isinstance(tr["model"].nodes["x"]["fn"].base_dist, dist.Bernoulli)  # observed kept
    # the encoder gets a pathwise gradient: no score term, so it is a smooth function of noise
    assert m.encoders[0].net[0].weight.grad is not None


def test_concrete_elbo_is_trace_elbo_without_discrete_sites():
    vae = pyrovae.VAE(input_shape=(4,), latent_dim=2, hidden=(3,), likelihood="gaussian")
    x = torch.randn(5, 4)
    out = []
    for loss in (pyro.infer.Trace_ELBO(), TraceConcrete_ELBO(temperature=0.5)):
        vae.zero_grad(set_to_none=True)
        pyro.set_rng_seed(7)
        out.append((loss.loss_and_grads(vae.model, vae.guide, x),
                    [p.grad.clone() for p in vae.parameters()]))
    assert out[0][0] == out[1][0]
    for a, b in zip(out[0][1], out[1][1]):
        torch.testing.assert_close(a, b)


def test_init_prototypes_puts_each_component_on_a_data_point():
    m = CategoricalVAE(input_shape=(3,), num_categories=4, likelihood="gaussian",
                       likelihood_args={"scale": 1.0})
    x = torch.randn(10, 3)
    m.init_prototypes(x, torch.Generator().manual_seed(0))
    centres = m.decode(torch.eye(4)).detach()  # (K, D): each component's mean
    assert all(bool((x == c).all(1).any()) for c in centres)
    assert len({tuple(c.tolist()) for c in centres}) == 4
    with pytest.raises(ValueError, match="at least num_categories"):
        m.init_prototypes(x[:2])


def test_log_likelihood_of_the_categorical_vae_matches_the_exact_mixture(tiny_cat):
    m, x = tiny_cat
    x = x[:6]
    est = pyrovae.metrics.importance_sampling(m, x, num_samples=3000)
    with torch.no_grad():
        eye = torch.eye(3)
        log_px_c = m.likelihood(m.decode(eye[:, None])).log_prob(x)  # (K, B)
        exact = torch.logsumexp(torch.log_softmax(m.prior_logits, -1)[:, None] + log_px_c, 0)
    # delta-method standard error of L_K (see importance_sampling's docstring)
    se = (1 / est["ess"] - 1 / 3000).clamp(min=0).sqrt()
    assert bool(((est["log_likelihood"] - exact).abs() <= 5 * se + 1e-4).all())
    torch.testing.assert_close(m.posterior_probs(x).sum(1), torch.ones(6))


def test_log_likelihood_of_a_small_belief_net_matches_the_sum_over_codes():
    torch.manual_seed(0)
    m = BernoulliVAE(input_shape=(5,), latent_dims=(3,), hidden=(4,))
    with torch.no_grad():
        m.prior_logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.bernoulli(torch.full((4, 5), 0.4))
    est = pyrovae.metrics.importance_sampling(m, x, num_samples=2000)
    codes = torch.tensor([[(c >> i) & 1 for i in range(3)] for c in range(8)]).float()  # (8, 3)
    with torch.no_grad():
        log_prior = dist.Bernoulli(logits=m.prior_logits).log_prob(codes).sum(-1)  # (8,)
        log_lik = m.likelihood(m.decode(codes[:, None])).log_prob(x)  # (8, B)
        exact = torch.logsumexp(log_prior[:, None] + log_lik, 0)
    se = (1 / est["ess"] - 1 / 2000).clamp(min=0).sqrt()
    assert bool(((est["log_likelihood"] - exact).abs() <= 5 * se + 1e-4).all())


def test_bernoulli_vae_config_errors_and_structure():
    with pytest.raises(ValueError, match="baseline"):
        BernoulliVAEConfig(baseline="mean")
    with pytest.raises(ValueError, match="latent_dims"):
        BernoulliVAE(latent_dims=(0,))
    with pytest.raises(ValueError, match="num_categories"):
        CategoricalVAE(num_categories=1)
    with pytest.raises(TypeError, match="BernoulliVAEConfig"):
        BernoulliVAE(pyrovae.VAEConfig())
    m = BernoulliVAE(input_shape=(1, 8, 8), latent_dims=(6, 4), baseline="neural",
                     learn_prior=False)
    x = torch.bernoulli(torch.full((3, 1, 8, 8), 0.3))
    tr = poutine.trace(m.guide).get_trace(x)
    assert [n for n, s in tr.nodes.items() if s["type"] == "sample" and n != "data"] == \
        ["z1", "z2"]
    assert tr.nodes["z2"]["infer"]["baseline"]["nn_baseline"] is m.baselines[1]
    assert "prior_logits" in dict(m.named_buffers())
    assert m.sample(5).shape == (5, 1, 8, 8) and m.reconstruct(x).shape == x.shape
    # the prior is uniform: log p(z2) = -4 log 2 per datum
    mt = poutine.trace(poutine.replay(m.model, trace=tr)).get_trace(x)
    mt.compute_log_prob()
    torch.testing.assert_close(mt.nodes["z2"]["log_prob"], torch.full((3,), -4 * math.log(2)))


def test_discrete_vae_trains_through_fit_and_the_cli_registry(tmp_path):
    assert isinstance(make_loss("enum_elbo"), TraceEnumGuide_ELBO)
    assert isinstance(make_loss("score_elbo"), TraceScore_ELBO)
    assert isinstance(make_loss("concrete_elbo", temperature=0.5), TraceConcrete_ELBO)
    from pyrovae.run import train_run

    metrics = train_run(tmp_path / "run", model="bernoulli_vae",
                        model_config={"latent_dims": [8], "baseline": "average+neural"},
                        data="digits", epochs=2, batch_size=64, loss="tracegraph_elbo",
                        lr=3e-3, num_samples=20, inference_data=False, progress=False)
    assert metrics["model"] == "bernoulli_vae"
    # learning: better than fair coins on the 64 pixels
    assert -64 * math.log(2) < metrics["test"]["log_likelihood"]["mean"] < 0
    for name in ("samples.png", "reconstructions.png", "latent.png", "checkpoint.pt"):
        assert (tmp_path / "run" / name).is_file()
    model, _, cfg = pyrovae.run.load_run(tmp_path / "run")
    assert isinstance(model, BernoulliVAE) and model.config.baseline == "average+neural"
