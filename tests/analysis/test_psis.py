"""Per-data-point PSIS on a linear Gaussian model, whose posterior and marginal likelihood are
known exactly, with guides of known quality: exact, wider and narrower by a factor c."""

import math

import numpy as np
import pytest
from _models import LinearGaussian, exact_log_marginal, linear_gaussian_problem

from pyrovae import analysis, metrics
from pyrovae.analysis.psis import summary

S = 1000


@pytest.fixture(scope="module")
def problem():
    return linear_gaussian_problem(n=120)


@pytest.fixture(scope="module")
def results(problem):
    W, b, sigma, x = problem
    return {c: analysis.psis_diagnostics(LinearGaussian(W, b, sigma, c), x, S)
            for c in (1.0, 0.9, 1.5, 0.4)}


@pytest.mark.parametrize("c", [1.0, 1.5])
def test_khat_stays_below_half_for_exact_and_wide_guides(results, c):
    # exact (c = 1): weights constant, k-hat = -inf; c = 1.5: bounded weights, k < 0
    k = results[c]["khat"].values
    assert (k < 0.5).all(), np.sort(k)[-5:]
    if c == 1.0:
        assert np.isneginf(k).all()


@pytest.mark.parametrize("c", [0.9, 0.4])
def test_khat_estimates_the_tail_shape_of_a_narrow_guide(results, c):
    # a guide c times narrower than the posterior has weights ~ exp((1 - c^2) chi^2_q / 2):
    # a Pareto tail of shape k = 1 - c^2 (0.19 for c = 0.9, 0.84 for c = 0.4)
    k = results[c]["khat"].values
    se_median = 1.2533 * k.std() / math.sqrt(k.size)  # large-sample se of a median
    assert abs(np.median(k) - (1 - c**2)) < 5 * se_median + 0.03  # 0.03: GPD-fit bias, S=1000
    s = summary(results[c])
    if c == 0.4:
        assert np.median(k) > 0.7 and s["frac_khat_gt_0.7"] > 0.5
    else:
        assert s["frac_khat_gt_0.7"] == 0 and np.median(k) < 0.5


def test_psis_log_px_matches_the_exact_marginal(problem, results):
    W, b, sigma, x = problem
    exact = exact_log_marginal(W, b, sigma, x)
    r = results[0.9]  # k = 0.19: finite-variance weights
    err = r["log_px_psis"].values - exact
    # delta-method se of log(mean w) per point: sqrt(1/ESS - 1/S)
    se = np.sqrt(1 / r["ess"].values - 1 / S)
    assert abs(err.mean()) < 5 * np.sqrt((se**2).sum()) / err.size
    assert (np.abs(err) < 5 * se + 1e-4).all()
    np.testing.assert_allclose(results[1.0]["log_px_psis"].values, exact, atol=2e-4)
    # Jensen: mean log w <= log mean w, with equality for the exact guide only
    assert (r["elbo"].values <= r["log_px_is"].values).all() and (r["gap"].values > 0).all()


def test_plain_estimate_equals_the_metrics_module(problem, results):
    W, b, sigma, x = problem
    direct = metrics.log_likelihood(LinearGaussian(W, b, sigma, 0.4), x, S, seed=0)
    np.testing.assert_allclose(results[0.4]["log_px_is"].values, direct.numpy(), rtol=1e-5,
                               atol=1e-4)


def test_psis_of_inference_data_pools_chains(problem):
    W, b, sigma, x = problem
    idata = analysis.to_inference_data(LinearGaussian(W, b, sigma, 0.9), x[:30], 200,
                                       chains=3, predictive=False)
    r = analysis.psis(idata)
    lw = idata.sample_stats["log_weight"].values  # (3, 200, 30)
    pooled = lw.transpose(2, 0, 1).reshape(30, 600).astype(np.float64)
    lse = np.log(np.exp(pooled - pooled.max(1, keepdims=True)).sum(1)) + pooled.max(1)
    np.testing.assert_allclose(r["log_px_is"].values, lse - math.log(600), rtol=1e-6)
    recon = -idata.log_likelihood["x"].values.mean((0, 1))
    np.testing.assert_allclose(r["recon"].values, recon, rtol=1e-5)
    assert r.attrs["num_samples"] == 600


def test_psis_smooths_only_the_tail():
    rng = np.random.default_rng(0)
    lw = rng.standard_t(2, size=(4, 2000))  # heavy right tail
    r = analysis.psis(lw)
    az = analysis.import_arviz()
    smoothed, k = az.psislw(lw.copy(), normalize=False)
    np.testing.assert_allclose(r["khat"].values, k)
    body = lw < np.sort(lw, 1)[:, [-int(math.ceil(min(0.2 * 2000, 3 * math.sqrt(2000))))]]
    np.testing.assert_allclose(smoothed[body], lw[body])  # body weights untouched
    lse = np.log(np.exp(smoothed).mean(1))
    np.testing.assert_allclose(r["log_px_psis"].values, lse)


def test_constant_weights_have_no_tail():
    lw = np.full((3, 100), -7.0)
    lw[:, ::7] += 1e-6  # float32-sized round-off
    r = analysis.psis(lw)
    assert np.isneginf(r["khat"].values).all()
    np.testing.assert_allclose(r["log_px_psis"].values, -7.0, atol=1e-5)
    assert np.isfinite(analysis.psis(lw, tol=0)["khat"].values).all()


@pytest.mark.parametrize("args, kwargs, message", [
    ((np.zeros(5),), {}, r"log_weights: expected an array \(N data points, S >= 2 draws\)"),
    ((np.full((2, 5), np.nan),), {}, "log_weights: expected finite values"),
    ((np.zeros((2, 5)),), {"labels": [1, 2, 3]}, r"labels: expected shape \(2,\)"),
    ((np.zeros((2, 5)), np.zeros((2, 4))), {}, r"log_likelihood: expected shape \(2, 5\)"),
    ((np.zeros((2, 5)),), {"tol": -1}, "tol: expected a number >= 0"),
])
def test_bad_input_is_named(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        analysis.psis(*args, **kwargs)


def test_global_latents_are_refused_by_name():
    from _models import GlobalBias

    W, _, sigma, x = linear_gaussian_problem(n=10, d=5, q=2)
    with pytest.raises(ValueError, match="site 'b' is outside the data plate"):
        analysis.psis_diagnostics(GlobalBias(W, sigma), x, 10)
