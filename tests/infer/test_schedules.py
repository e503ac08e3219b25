"""β and KL warm-up as handlers on latent sites: exact against closed forms and Pyro's ELBOs."""

import math

import pyro
import pyro.distributions as dist
import pyro.poutine.messenger
import pytest
import torch
from _models import UserLinearGaussian as LinearGaussian

import pyrovae
from pyrovae.infer import (
    Beta,
    KLWarmup,
    ScaledLatentELBO,
    Schedule,
    make_loss,
    scale_latents,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def pair():
    torch.manual_seed(0)
    return LinearGaussian(), torch.randn(32, 5)


@pytest.mark.parametrize("beta", [0.0, 0.25, 4.0])
def test_beta_scaling_gives_exactly_beta_times_kl_under_meanfield(pair, beta):
    m, x = pair
    elbo = pyro.infer.TraceMeanField_ELBO()
    torch.manual_seed(3)
    base = elbo.differentiable_loss(m.model, m.guide, x)
    torch.manual_seed(3)  # the same draw of z, so the reconstruction terms agree
    scaled = elbo.differentiable_loss(scale_latents(m.model, beta), scale_latents(m.guide, beta),
                                      x)
    kl = m.gaussian_kl(x)
    torch.testing.assert_close(scaled - base, (beta - 1) * kl, rtol=1e-5, atol=1e-4)


def test_beta_scaling_under_trace_elbo_scales_the_monte_carlo_kl_only(pair):
    """Trace_ELBO's estimate is -log p(x|z) + log q(z|x) - log p(z); β scales the last two."""
    m, x = pair
    torch.manual_seed(5)
    tr_g = pyro.poutine.trace(m.guide).get_trace(x)
    tr_m = pyro.poutine.trace(pyro.poutine.replay(m.model, trace=tr_g)).get_trace(x)
    recon = -tr_m.nodes["x"]["fn"].log_prob(x).sum()
    kl_mc = (tr_g.nodes["z"]["fn"].log_prob(tr_g.nodes["z"]["value"])
             - tr_m.nodes["z"]["fn"].log_prob(tr_g.nodes["z"]["value"])).sum()
    torch.manual_seed(5)
    loss = pyro.infer.Trace_ELBO().differentiable_loss(scale_latents(m.model, 3.0),
                                                       scale_latents(m.guide, 3.0), x)
    torch.testing.assert_close(loss, recon + 3.0 * kl_mc, rtol=1e-5, atol=1e-4)


def test_observed_and_deterministic_sites_keep_their_scale():
    def prog():
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Normal(0.0, 1.0), obs=torch.tensor(0.3))
        pyro.deterministic("c", torch.tensor(1.0))

    tr = pyro.poutine.trace(scale_latents(prog, 0.5)).get_trace()
    assert tr.nodes["a"]["scale"] == 0.5
    assert tr.nodes["b"]["scale"] == 1.0 and tr.nodes["c"]["scale"] == 1.0


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan, "x"])
def test_bad_scales_are_refused(bad):
    with pytest.raises(ValueError, match="scale"):
        scale_latents(lambda: None, bad)


def test_schedule_shapes_against_their_formulas():
    lin = Schedule(0.0, 1.0, 100, delay=10)
    assert [lin(t) for t in (0, 10, 35, 60, 110, 500)] == [0, 0, 0.25, 0.5, 1, 1]
    cos = Schedule(0.0, 2.0, 100, shape="cosine")
    assert cos(50) == pytest.approx(1.0) and cos(25) == pytest.approx(1 - math.cos(math.pi / 4))
    sig = Schedule(0.0, 1.0, 100, shape="sigmoid")
    assert sig(0) == pytest.approx(0.0) and sig(50) == pytest.approx(0.5)
    assert sig(100) == pytest.approx(1.0) and sig(20) < 0.1
    step = Schedule(1.0, 4.0, 10, shape="step")
    assert [step(t) for t in (0, 9, 10)] == [1.0, 1.0, 4.0]
    # Fu et al. (2019): 4 cycles of 25 steps, rising over the first half of each
    cyc = Schedule(0.0, 1.0, 100, shape="cyclical", cycles=4, ratio=0.5)
    assert [cyc(t) for t in (0, 6.25, 12.5, 20, 25, 31.25, 99, 100)] == \
        pytest.approx([0, 0.5, 1, 1, 0, 0.5, 1, 1])
    with pytest.raises(ValueError, match="shape"):
        Schedule(shape="exponential")
    with pytest.raises(ValueError, match="steps"):
        Schedule(steps=0)


def test_warmup_callback_applies_the_schedule_step_by_step(pair):
    """The weight the loss sees at step t is schedule(t): the loss equals Trace_ELBO on
    programs scaled by that value (same draws), and the history records it."""
    m, x = pair
    seen = []

    class ScaleSpy(pyro.poutine.messenger.Messenger):
        def _postprocess_message(self, msg):
            if msg["name"] == "z":
                seen.append(float(msg["scale"]))

    class Recorder(pyrovae.Callback):
        def wrap(self, model, guide):
            return model, ScaleSpy()(guide)

    warm = KLWarmup(4, shape="linear")
    pyrovae.fit(m, x, epochs=6, batch_size=32, callbacks=[warm, Recorder()], progress=False,
                log_every=1)
    # each step runs the guide once for the loss (the probe at start runs it too, at t = 0)
    assert seen[-6:] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    hist = pyrovae.fit(m, x, epochs=3, batch_size=32, callbacks=[KLWarmup(4)], progress=False,
                       log_every=1)
    assert [r["beta"] for r in hist.steps] == pytest.approx([0.0, 0.25, 0.5])


def test_beta_callback_matches_scaled_trace_elbo_in_training(pair):
    m1, x = pair
    m2 = LinearGaussian()
    m2.load_state_dict(m1.state_dict())
    h1 = pyrovae.fit(m1, x, pyro.infer.Trace_ELBO(), epochs=5, batch_size=16,
                     callbacks=[Beta(4.0)], progress=False)
    h2 = pyrovae.fit(m2, x, ScaledLatentELBO(pyro.infer.Trace_ELBO(), 4.0), epochs=5,
                     batch_size=16, progress=False)
    assert h1.series("loss") == pytest.approx(h2.series("loss"), rel=1e-5)
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b)


def test_scaled_loss_counts_steps_under_pyro_svi_and_follows_fit_on_resume(pair, tmp_path):
    m, x = pair
    loss = ScaledLatentELBO(pyro.infer.Trace_ELBO(), Schedule(0.0, 1.0, 10))
    svi = pyro.infer.SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-3}), loss)
    for _ in range(3):
        svi.step(x)
    assert loss.step == 3 and loss.value == pytest.approx(0.3)
    # through fit (it runs the loss as a callback), interrupted and resumed
    loss = make_loss("warmup_elbo", steps=10)
    pyrovae.fit(m, x, loss, steps=4, batch_size=8, checkpoint_dir=tmp_path, progress=False)
    assert loss.step == 4
    fresh = make_loss("warmup_elbo", steps=10)
    pyrovae.fit(m, x, fresh, steps=6, batch_size=8, checkpoint_dir=tmp_path, resume=True,
                progress=False)
    assert fresh.step == 6 and fresh.last_terms["beta"] == pytest.approx(0.5)


def test_beta_elbo_from_the_registry_wraps_any_registered_base(pair):
    m, x = pair
    loss = make_loss("beta_elbo", beta=2.0, base="meanfield_elbo")
    torch.manual_seed(1)
    a = loss.differentiable_loss(m.model, m.guide, x)
    torch.manual_seed(1)
    b = pyro.infer.TraceMeanField_ELBO().differentiable_loss(m.model, m.guide, x)
    torch.testing.assert_close(a - b, m.gaussian_kl(x), rtol=1e-5, atol=1e-4)
    with pytest.raises(TypeError, match="loss"):
        ScaledLatentELBO(lambda m, g: 0.0, 1.0)
