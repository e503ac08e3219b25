"""gradient_variance against the closed-form moments of a reparametrised Gaussian gradient."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints

from pyrovae.metrics import gradient_variance

X, LOC, SCALE = 1.3, 0.4, 0.7


def _model(x):
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def _guide(x):
    loc = pyro.param("loc", torch.tensor(LOC))
    scale = pyro.param("scale", torch.tensor(SCALE), constraint=constraints.positive)
    pyro.sample("z", dist.Normal(loc, scale))


@pytest.fixture(scope="module")
def moments():
    pyro.clear_param_store()
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # a scalar model: threads only add contention
    try:
        m = gradient_variance((_model, _guide), {"x": torch.tensor(X)}, pyro.infer.Trace_ELBO(),
                              num_draws=1000, seed=0)
    finally:
        torch.set_num_threads(n)
    # nothing was updated, and the gradients are cleared
    m.after = (pyro.param("loc").item(), pyro.param("loc").unconstrained().grad)
    return m


def test_mean_and_variance_match_the_closed_form(moments):
    # With z = loc + s*eps, the loss -log p(x, z) + log q(z) has d/dloc = 2 z - x: mean
    # 2 loc - x, variance 4 s^2. For u = log s: d/du = 2 s^2 eps^2 - s (x - 2 loc) eps - 1,
    # mean 2 s^2 - 1.
    n = moments.num_draws
    se = moments.standard_error()
    assert moments.mean["loc"].item() == pytest.approx(2 * LOC - X, abs=4 * se["loc"].item())
    var = 4 * SCALE**2
    assert moments.variance["loc"].item() == pytest.approx(var, abs=4 * var * math.sqrt(2 / n))
    assert moments.mean["scale"].item() == pytest.approx(2 * SCALE**2 - 1,
                                                         abs=4 * se["scale"].item())
    assert moments.total_variance() == pytest.approx(
        moments.variance["loc"].item() + moments.variance["scale"].item())
    assert moments.total_variance("loc") == pytest.approx(moments.variance["loc"].item())
    assert moments.losses.shape == (n,)
    assert moments.signal_to_noise("loc") == pytest.approx(
        moments.mean["loc"].item() ** 2 / moments.variance["loc"].item())


def test_parameters_are_left_untouched_and_gradients_cleared(moments):
    loc, grad = moments.after
    assert loc == pytest.approx(LOC) and grad is None


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_draws"):
        gradient_variance((_model, _guide), {"x": torch.tensor(X)}, num_draws=1)
    with pytest.raises(ValueError, match="warmup"):
        gradient_variance((_model, _guide), {"x": torch.tensor(X)}, warmup=-1)
    with pytest.raises(ValueError, match="params.*selects none"):
        gradient_variance((_model, _guide), {"x": torch.tensor(X)}, num_draws=2,
                          params="decoder")
    with pytest.raises(ValueError, match="'x' field"):
        gradient_variance((_model, _guide), {"y": torch.tensor(X)})
    with pytest.raises(TypeError, match="loss"):
        gradient_variance((_model, _guide), {"x": torch.tensor(X)}, loss=3)


def test_shuffling_rows_leaves_a_sum_over_data_unchanged():
    from pyrovae.vi import ConjugateGaussian

    m = ConjugateGaussian(12, 3, init_scale=0.5)
    idx = torch.arange(4, 10)
    batch = {"x": torch.randn(6, 3), "index": idx}
    m.zero_grad(set_to_none=True)
    m.analytic_loss(m.model, m.guide, **batch).backward()
    exact = {n: p.grad.double() for n, p in m.named_parameters()}
    r = gradient_variance(m, batch, m.analytic_loss, num_draws=5, shuffle=True)
    for n in exact:
        torch.testing.assert_close(r.mean[n], exact[n], rtol=1e-5, atol=1e-6)
        assert float(r.variance[n].max()) < 1e-10  # the order of the rows does not matter
