"""InfoVAE's MMD term and capacity annealing as Pyro losses: closed forms and Pyro's ELBOs."""

import math

import pyro
import pytest
import torch
from _models import UserLinearGaussian as LinearGaussian

import pyrovae
from pyrovae.infer import TraceCapacity_ELBO, TraceMMD_ELBO, mmd2, scale_latents

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def pair():
    torch.manual_seed(0)
    return LinearGaussian(), torch.randn(32, 5)


def _grads(loss, m, x, seed=1, **progs):
    for p in m.parameters():
        p.grad = None
    torch.manual_seed(seed)
    v = loss.differentiable_loss(progs.get("model", m.model), progs.get("guide", m.guide), x)
    v.backward()
    return v.detach(), [p.grad.clone() for p in m.parameters()]


def _rbf_expectation(delta, cov, s2):
    """E exp(-|u|^2 / (2 s2)) for u ~ N(delta, cov): det(I + cov/s2)^(-1/2)
    exp(-delta' (s2 I + cov)^-1 delta / 2)."""
    d = len(delta)
    eye = torch.eye(d, dtype=torch.float64)
    return (torch.det(eye + cov / s2) ** -0.5
            * torch.exp(-0.5 * delta @ torch.linalg.solve(s2 * eye + cov, delta)))


def test_mmd_estimator_is_unbiased_against_the_gaussian_closed_form():
    """MMD^2 between N(m1, S1) and N(m2, S2) under the RBF kernel is E k(x,x') + E k(y,y')
    - 2 E k(x,y), each term a Gaussian integral; the U-statistic's mean over repeated batches
    matches it within four standard errors."""
    d, s2 = 3, 2.0
    m1, m2 = torch.zeros(d, dtype=torch.float64), torch.tensor([0.5, -0.3, 0.2],
                                                                dtype=torch.float64)
    a = torch.tensor([[1.0, 0.3, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 1.2]], dtype=torch.float64)
    s1, s_2 = a @ a.T, 0.5 * torch.eye(d, dtype=torch.float64)
    truth = (_rbf_expectation(torch.zeros(d, dtype=torch.float64), 2 * s1, s2)
             + _rbf_expectation(torch.zeros(d, dtype=torch.float64), 2 * s_2, s2)
             - 2 * _rbf_expectation(m1 - m2, s1 + s_2, s2))
    g = torch.Generator().manual_seed(0)
    reps, n = 400, 32
    x = m1 + torch.randn(reps, n, d, generator=g, dtype=torch.float64) @ a.T
    y = m2 + torch.randn(reps, n, d, generator=g, dtype=torch.float64) * math.sqrt(0.5)
    est = mmd2(x, y, "rbf", s2)  # (reps,)
    se = float(est.std() / math.sqrt(reps))
    assert float(est.mean()) == pytest.approx(float(truth), abs=4 * se)
    # equal distributions: the U-statistic has mean exactly 0
    y0 = torch.randn(reps, n, d, generator=g, dtype=torch.float64) @ a.T
    e0 = mmd2(x, y0, "imq")
    assert abs(float(e0.mean())) < 4 * float(e0.std() / math.sqrt(reps))


def test_infovae_at_alpha_0_lambda_1_is_trace_elbo(pair):
    m, x = pair
    ref, g_ref = _grads(pyro.infer.Trace_ELBO(), m, x)
    val, g = _grads(TraceMMD_ELBO(0.0, 1.0), m, x)
    assert torch.equal(val, ref)
    for a, b in zip(g, g_ref):
        assert torch.equal(a, b)


def test_infovae_weights_the_kl_by_one_minus_alpha_and_adds_n_times_mmd(pair):
    m, x = pair
    loss = TraceMMD_ELBO(0.5, 2.0, kernel="imq")
    torch.manual_seed(4)
    val = loss.differentiable_loss(m.model, m.guide, x)
    torch.manual_seed(4)  # the same draws: the ELBO part, then the prior draws of the MMD term
    half = pyro.infer.Trace_ELBO().differentiable_loss(scale_latents(m.model, 0.5),
                                                       scale_latents(m.guide, 0.5), x)
    extra = float(val.detach() - half.detach())  # float32 sums near 100: resolution ~1e-5
    assert extra == pytest.approx(1.5 * len(x) * loss.last_terms["mmd2"], abs=1e-4)
    with pytest.raises(ValueError, match="alpha"):
        TraceMMD_ELBO(alpha=1.5)
    with pytest.raises(ValueError, match="kernel"):
        TraceMMD_ELBO(kernel="laplace")


def test_capacity_with_gamma_1_and_no_capacity_is_meanfield_elbo(pair):
    m, x = pair
    ref, g_ref = _grads(pyro.infer.TraceMeanField_ELBO(), m, x)
    val, g = _grads(TraceCapacity_ELBO(0.0, gamma=1.0), m, x)
    torch.testing.assert_close(val, ref, rtol=1e-6, atol=1e-5)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_capacity_objective_against_its_formula_and_linear_schedule(pair):
    """loss = -sum log p(x|z) + gamma |sum KL - n C| with the analytic Gaussian KL; C rises
    linearly to C_max over `steps` optimiser steps."""
    m, x = pair
    loss = TraceCapacity_ELBO(10.0, gamma=50.0, steps=4)
    assert [loss.schedule(t) for t in (0, 1, 2, 4, 9)] == [0, 2.5, 5, 10, 10]
    loss.step = 2
    torch.manual_seed(7)
    val = loss.differentiable_loss(m.model, m.guide, x)
    torch.manual_seed(7)
    tr_g = pyro.poutine.trace(m.guide).get_trace(x)
    tr_m = pyro.poutine.trace(pyro.poutine.replay(m.model, trace=tr_g)).get_trace(x)
    recon = tr_m.nodes["x"]["fn"].log_prob(x).sum()
    expected = -recon + 50.0 * (m.gaussian_kl(x) - len(x) * 5.0).abs()
    torch.testing.assert_close(val.detach(), expected.detach(), rtol=1e-5, atol=1e-3)
    assert loss.step == 3 and loss.last_terms["capacity"] == 5.0


def test_capacity_follows_fit_across_a_resume(pair, tmp_path):
    m, x = pair
    a = TraceCapacity_ELBO(8.0, gamma=10.0, steps=8)
    pyrovae.fit(m, x, a, steps=3, batch_size=8, checkpoint_dir=tmp_path, progress=False)
    b = TraceCapacity_ELBO(8.0, gamma=10.0, steps=8)
    pyrovae.fit(m, x, b, steps=6, batch_size=8, checkpoint_dir=tmp_path, resume=True,
                progress=False)
    assert b.step == 6 and b.capacity == 6.0
    with pytest.raises(ValueError, match="gamma"):
        TraceCapacity_ELBO(gamma=0.0)
    with pytest.raises(ValueError, match="vectorize_particles"):
        TraceCapacity_ELBO(num_particles=2, vectorize_particles=True)
