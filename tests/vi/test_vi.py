"""CAVI, EM, natural-gradient and stochastic VI against closed forms and scikit-learn."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions import constraints
from scipy.integrate import quad
from scipy.optimize import linear_sum_assignment
from scipy.stats import multivariate_normal
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import BayesianGaussianMixture
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import pyrovae
from pyrovae.metrics import gradient_variance
from pyrovae.vi import (
    ConjugateGaussian,
    GaussianMixture,
    NaturalGradient,
    NormalGamma,
    cavi,
    em_gaussian_mixture,
    natural_gradient,
)

TRUE_MEANS = torch.tensor([[-5.0, 0.0], [5.0, 0.0], [0.0, 6.0]], dtype=torch.float64)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mixture_data():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (300,), generator=g)
    x = TRUE_MEANS[labels] + torch.randn(300, 2, generator=g, dtype=torch.float64)
    return x, labels


@pytest.fixture(scope="module")
def cavi_fit(mixture_data):
    x, _ = mixture_data
    return cavi(GaussianMixture(3, prior_scale=10.0), x, num_restarts=3, tol=1e-8)


def test_cavi_elbo_never_decreases_and_converges(cavi_fit):
    elbo = np.array(cavi_fit.elbo)
    assert cavi_fit.converged and cavi_fit.sweeps > 1
    assert np.all(np.diff(elbo) >= -1e-9 * np.abs(elbo[1:]))
    assert abs(elbo[-1] - elbo[-2]) < 1e-8


def test_cavi_clusters_agree_with_sklearn_and_recover_the_means(cavi_fit, mixture_data):
    x, labels = mixture_data
    model = GaussianMixture(3, prior_scale=10.0)
    ours = model.assign(x, cavi_fit.q).numpy()
    bgm = BayesianGaussianMixture(n_components=3, random_state=0, max_iter=500).fit(x.numpy())
    assert adjusted_rand_score(ours, bgm.predict(x.numpy())) >= 0.95
    # match components to the truth, then compare with the posterior's spread 1/sqrt(n_k)
    m = cavi_fit.q["m"]
    rows, cols = linear_sum_assignment(torch.cdist(TRUE_MEANS, m).numpy())
    counts = torch.bincount(labels, minlength=3).double()
    for k, j in zip(rows, cols):
        assert float((m[j] - TRUE_MEANS[k]).abs().max()) < 4.0 / math.sqrt(counts[k])
        # q(mu_k) has the spread of a mean of n_k unit-variance points
        assert cavi_fit.q["s2"][j].item() == pytest.approx(1 / counts[k].item(), rel=0.1)


def test_cavi_normal_gamma_against_the_exact_posterior():
    g = torch.Generator().manual_seed(1)
    x = 1.5 + 2.0 * torch.randn(20, generator=g, dtype=torch.float64)
    model = NormalGamma(mu0=0.5, lam0=2.0, a0=2.0, b0=3.0)
    r = cavi(model, x, tol=1e-12)
    assert np.all(np.diff(r.elbo) >= -1e-9)
    # q(mu)'s mean is the exact posterior mean of mu (Bishop 2006, eq. 10.26)
    assert float(r.q["mu"]) == pytest.approx(float((2.0 * 0.5 + x.sum()) / 22.0), rel=1e-12)

    # log p(x) by numerical integration over tau (mu integrated in closed form), independent
    # of the Normal-Gamma formula in log_evidence
    xs = x.numpy()
    n = len(xs)

    def integrand(tau):
        cov = (np.eye(n) + np.ones((n, n)) / 2.0) / tau
        lik = multivariate_normal(np.full(n, 0.5), cov).logpdf(xs)
        prior = 2.0 * math.log(3.0) - math.lgamma(2.0) + math.log(tau) - 3.0 * tau
        return math.exp(lik + prior + 45.0)  # shifted to keep the integrand in range

    log_px = math.log(quad(integrand, 0, 5, limit=200, points=[0.2])[0]) - 45.0
    assert model.log_evidence(x) == pytest.approx(log_px, abs=1e-6)
    assert r.elbo[-1] <= log_px and log_px - r.elbo[-1] < 0.05  # mean-field gap, O(1/N)


def test_cavi_rejects_bad_input_and_catches_a_broken_model(mixture_data):
    x, _ = mixture_data
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="x: expected finite"):
        cavi(GaussianMixture(3), bad)
    with pytest.raises(ValueError, match="tol"):
        cavi(GaussianMixture(3), x, tol=0)
    with pytest.raises(TypeError, match="MeanFieldModel"):
        cavi(object(), x)
    with pytest.raises(ValueError, match="num_components"):
        GaussianMixture(0)

    class Broken(GaussianMixture):  # a wrong M step: pushes the means away every sweep
        def sweep(self, x, q):
            q = super().sweep(x, q)
            return {**q, "m": q["m"] + 1.0}

    with pytest.raises(RuntimeError, match="decreased"):
        cavi(Broken(3), x, init=None)


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_em_matches_sklearn_gaussian_mixture_from_the_same_start(mixture_data, covariance):
    x, _ = mixture_data
    init = x[[0, 1, 2]].numpy()
    prec = {"full": np.stack([np.eye(2)] * 3), "diag": np.ones((3, 2)),
            "spherical": np.ones(3)}[covariance]
    sk = SkGaussianMixture(3, covariance_type=covariance, tol=0.0, max_iter=15,
                           means_init=init, weights_init=np.full(3, 1 / 3),
                           precisions_init=prec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(x.numpy())
    r = em_gaussian_mixture(x, 3, covariance=covariance, init_means=init, tol=0.0,
                            max_iter=15)
    np.testing.assert_allclose(r.means.numpy(), sk.means_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(r.weights.numpy(), sk.weights_, rtol=1e-7)
    cov = {"full": sk.covariances_, "diag": np.stack([np.diag(c) for c in sk.covariances_])
           if covariance == "diag" else None,
           "spherical": np.stack([c * np.eye(2) for c in np.atleast_1d(sk.covariances_)])
           if covariance == "spherical" else None}[covariance]
    np.testing.assert_allclose(r.covariances.numpy(), cov, rtol=1e-6, atol=1e-9)
    assert np.all(np.diff(r.log_likelihood) >= -1e-12)  # EM never lowers the likelihood
    assert r.log_prob(x).mean().item() == pytest.approx(sk.score(x.numpy()), rel=1e-9)


def test_hard_em_is_kmeans_and_soft_em_tends_to_it(mixture_data):
    x, _ = mixture_data
    init = x[[0, 1, 2]].numpy()
    km = KMeans(3, init=init, n_init=1, algorithm="lloyd", tol=0.0, max_iter=100).fit(x.numpy())
    hard = em_gaussian_mixture(x, 3, covariance="fixed", variance=1.0, learn_weights=False,
                               hard=True, init_means=init, tol=1e-12)
    np.testing.assert_allclose(hard.means.numpy(), km.cluster_centers_, rtol=1e-9)
    assert (hard.labels.numpy() == km.labels_).all()
    soft = em_gaussian_mixture(x, 3, covariance="fixed", variance=0.05, learn_weights=False,
                               init_means=init, tol=1e-12)
    np.testing.assert_allclose(soft.means.numpy(), km.cluster_centers_, atol=1e-6)
    with pytest.raises(ValueError, match="covariance"):
        em_gaussian_mixture(x, 3, covariance="tied")
    with pytest.raises(ValueError, match="init_means"):
        em_gaussian_mixture(x, 3, init_means=init[:2])


# --- natural gradient and stochastic VI on the conjugate Gaussian ------------------------------

N, D = 60, 4
OBS = [0.5, 1.0, 2.0, 4.0]  # unequal posterior precisions: an ill-conditioned problem


@pytest.fixture(scope="module")
def gauss_data():
    g = torch.Generator().manual_seed(2)
    theta = torch.randn(D, generator=g)
    return theta + torch.tensor(OBS) * torch.randn(N, D, generator=g)


def _fit_conjugate(x, optimizer, lr, steps, batch=N, schedule=None, tol=None, loss=None):
    pyro.clear_param_store()
    m = ConjugateGaussian(N, D, obs_scale=OBS)
    hit = []

    class Stop(pyrovae.Callback):
        def on_step_end(self, state):
            if tol is not None and m.kl_to_posterior(x) < tol:
                hit.append(state.step)
                state.stop = True

    opt = natural_gradient({"loc": "scale"}, lr, module=m) if optimizer == "ng" else optimizer
    pyrovae.fit(m, x, m.analytic_loss if loss is None else loss, steps=steps, batch_size=batch,
                optimizer=opt, lr=lr, lr_schedule=schedule, lr_schedule_interval="step",
                progress=False, log_every=10**6, callbacks=[Stop()])
    return m, (hit[0] if hit else None)


def test_natural_gradient_reaches_the_exact_posterior_in_one_step(gauss_data):
    m, steps = _fit_conjugate(gauss_data, "ng", 1.0, 5, tol=1e-8)
    assert steps == 1
    post = m.posterior(gauss_data)
    torch.testing.assert_close(m.loc.detach().double(), post.loc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.scale.detach().double(), post.scale, rtol=1e-5, atol=1e-6)


def test_first_order_methods_need_many_more_steps(gauss_data):
    # The largest posterior precision is 1 + 60/0.25 = 241, so gradient ascent diverges beyond
    # lr = 2/241; the smallest is 1 + 60/16 = 4.75, which it then approaches only by a factor
    # (1 - 4.75 lr) per step. Neither it nor Adam gets there in 30 steps.
    for lr in (2e-3, 5e-3, 8e-3):
        assert _fit_conjugate(gauss_data, "sgd", lr, 30, tol=1e-3)[1] is None
    for lr in (0.1, 0.3, 1.0):
        assert _fit_conjugate(gauss_data, "adam", lr, 30, tol=1e-3)[1] is None


def test_stochastic_vi_subsampling_is_scaled_to_the_full_data(gauss_data):
    x = gauss_data
    m = ConjugateGaussian(N, D, obs_scale=OBS)
    theta = torch.randn(D)
    cond = poutine.condition(m.model, data={"theta": theta})
    full = poutine.trace(cond).get_trace(x)
    full.compute_log_prob()
    parts = [torch.arange(i, i + 10) for i in range(0, N, 10)]
    batch_lp = []
    for idx in parts:
        tr = poutine.trace(cond).get_trace(x[idx], index=idx)
        tr.compute_log_prob()
        batch_lp.append(tr.nodes["x"]["log_prob_sum"])
    # each batch is scaled by N/B = 6: the mean over a partition is the full log-likelihood
    assert float(torch.stack(batch_lp).mean()) == pytest.approx(
        float(full.nodes["x"]["log_prob_sum"]), rel=1e-5)
    with torch.no_grad():
        mean_loss = sum(m.analytic_loss(m.model, m.guide, x[i], i) for i in parts) / len(parts)
        full_loss = m.analytic_loss(m.model, m.guide, x)
    assert float(mean_loss) == pytest.approx(float(full_loss), rel=1e-5)


def test_minibatch_natural_gradient_svi_has_the_full_batch_optimum(gauss_data):
    # rho_t = 1/t averages the per-batch natural-parameter targets; after one epoch (six
    # batches that partition the data) the average is the full-data posterior exactly.
    def schedule(opt):
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (t + 1))

    m, _ = _fit_conjugate(gauss_data, "ng", 1.0, N // 10, batch=10, schedule=schedule)
    assert m.kl_to_posterior(gauss_data) < 1e-8
    m_full, _ = _fit_conjugate(gauss_data, "ng", 1.0, 1)
    torch.testing.assert_close(m.loc, m_full.loc, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m.scale, m_full.scale, rtol=1e-4, atol=1e-5)


def test_monte_carlo_minibatch_gradient_is_unbiased_for_the_analytic_one(gauss_data):
    m = ConjugateGaussian(N, D, obs_scale=OBS, init_scale=0.5)
    idx = torch.arange(10, 20)
    batch = {"x": gauss_data[idx], "index": idx}
    m.zero_grad(set_to_none=True)
    m.analytic_loss(m.model, m.guide, **batch).backward()
    exact = {n: p.grad.double().clone() for n, p in m.named_parameters()}
    r = gradient_variance(m, batch, pyro.infer.Trace_ELBO(), num_draws=400, seed=4)
    se = r.standard_error()
    for n, g in exact.items():
        assert bool(((r.mean[n] - g).abs() <= 4.5 * se[n] + 1e-5).all()), n


def test_natural_gradient_positivity_correction_and_errors(gauss_data):
    pyro.clear_param_store()
    m = ConjugateGaussian(N, D, obs_scale=OBS, init_scale=0.01)  # S = 1e4, far above
    m.zero_grad(set_to_none=True)
    m.analytic_loss(m.model, m.guide, gauss_data).backward()
    u0 = m.scale_unconstrained.detach().clone()
    with pytest.raises(FloatingPointError, match="non-positive"):
        NaturalGradient.from_module(m, {"loc": "scale"}, lr=3.0, correction="none").step()
    torch.testing.assert_close(m.scale_unconstrained.detach(), u0)  # refused before any change
    NaturalGradient.from_module(m, {"loc": "scale"}, lr=3.0).step()  # S + 3(L - S) < 0 here
    assert bool(torch.isfinite(m.scale).all()) and bool((m.scale > 0).all())
    with pytest.raises(ValueError, match="lr"):
        NaturalGradient.from_module(m, {"loc": "scale"}, lr=0)
    with pytest.raises(ValueError, match="not a PyroParam"):
        NaturalGradient.from_module(m, {"loc": "width"})
    with pytest.raises(ValueError, match="no parameter 'q_loc'"):
        NaturalGradient.from_param_store({"q_loc": "q_scale"})
    with pytest.raises(TypeError, match="pairs"):
        natural_gradient([("loc", "scale")])


def test_natural_gradient_with_a_plain_guide_and_softplus_scale(gauss_data):
    x = gauss_data
    m = ConjugateGaussian(N, D, obs_scale=OBS)

    def guide(x, index=None):
        loc = pyro.param("q_loc", torch.zeros(D))
        scale = pyro.param("q_scale", torch.ones(D), constraint=constraints.softplus_positive)
        pyro.sample("theta", dist.Normal(loc, scale).to_event(1))

    pyrovae.fit((m.model, guide), x, m.analytic_loss, steps=1, batch_size=N,
                optimizer=natural_gradient({"q_loc": "q_scale"}, 1.0), progress=False)
    post = m.posterior(x)
    torch.testing.assert_close(pyro.param("q_loc").detach().double(), post.loc, rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(pyro.param("q_scale").detach().double(), post.scale,
                               rtol=1e-5, atol=1e-6)


def test_natural_gradient_on_an_autonormal_guide(gauss_data):
    from pyro.infer.autoguide import AutoNormal

    m = ConjugateGaussian(N, D, obs_scale=OBS)
    guide = AutoNormal(m.model)
    guide(gauss_data)  # creates locs.theta and scales.theta (softplus_positive)
    pyrovae.fit((m.model, guide), gauss_data, m.analytic_loss, steps=1, batch_size=N,
                optimizer=natural_gradient({"locs.theta": "scales.theta"}, 1.0, module=guide),
                progress=False)
    post = m.posterior(gauss_data)
    torch.testing.assert_close(guide.locs.theta.detach().double(), post.loc, rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(guide.scales.theta.detach().double(), post.scale, rtol=1e-5,
                               atol=1e-6)
