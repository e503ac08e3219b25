"""to_inference_data on models with known posteriors: moments of the draws, global latents,
chains from several runs, coordinates, netCDF round trips."""

import math
import warnings

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from _models import (
    GlobalBias,
    LinearGaussian,
    Mixture,
    exact_log_marginal,
    exact_posterior,
    linear_gaussian_problem,
)

from pyrovae import analysis

S, CHAINS, N = 300, 2, 100


@pytest.fixture(scope="module")
def problem():
    return linear_gaussian_problem(n=N)


@pytest.fixture(scope="module")
def exact_idata(problem):
    W, b, sigma, x = problem
    return analysis.to_inference_data(LinearGaussian(W, b, sigma), x, S, chains=CHAINS,
                                      batch_size=64)


def test_draws_match_the_exact_posterior_moments(problem, exact_idata):
    W, b, sigma, x = problem
    mu, cov = exact_posterior(W, b, sigma, x)  # (N, q), (q, q)
    z = exact_idata.posterior["z"]
    assert z.dims == ("chain", "draw", "obs", "z_dim_0") and z.shape == (CHAINS, S, N, 3)
    draws = z.values.reshape(CHAINS * S, N, 3).astype(np.float64)
    n = draws.shape[0]
    # each data point's mean, in units of its Monte-Carlo standard error sqrt(Sigma_jj / n)
    zscore = (draws.mean(0) - mu) / np.sqrt(np.diag(cov) / n)
    assert np.abs(zscore).max() < 4.5  # 300 comparisons: P(any |N(0,1)| > 4.5) < 0.3%
    # pooled covariance of the centred draws; se of entry (j,k) is
    # sqrt((S_jj S_kk + S_jk^2) / m) for m Gaussian draws
    dev = (draws - mu).reshape(-1, 3)
    m = dev.shape[0]
    emp = dev.T @ dev / m
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / m)
    assert np.abs((emp - cov) / se).max() < 4.5


def test_log_likelihood_and_weights_are_the_closed_forms(problem, exact_idata):
    W, b, sigma, x = problem
    z = torch.from_numpy(exact_idata.posterior["z"].values).double()
    by_hand = dist.Normal(z @ W.double().T + b.double(), sigma).log_prob(x.double()).sum(-1)
    np.testing.assert_allclose(exact_idata.log_likelihood["x"].values, by_hand.numpy(),
                               rtol=1e-5, atol=1e-4)
    # with the exact guide every weight is p(x_i): log w = log p(x_i) for every draw
    lw = exact_idata.sample_stats["log_weight"].values
    np.testing.assert_allclose(lw, np.broadcast_to(exact_log_marginal(W, b, sigma, x), lw.shape),
                               atol=2e-4)
    np.testing.assert_array_equal(exact_idata.observed_data["x"].values, x.numpy())


def test_global_latents_are_shared_by_every_data_point():
    W, _, sigma, x = linear_gaussian_problem(n=50, d=5, q=2, sigma=0.5)
    m = GlobalBias(W, sigma)
    idata = analysis.to_inference_data(m, x, 300, chains=2, batch_size=16)  # 4 batches
    post = idata.posterior
    assert post["b"].dims == ("chain", "draw", "b_dim_0")
    assert post["z"].dims == ("chain", "draw", "obs", "z_dim_0")
    b = torch.from_numpy(post["b"].values).double()  # (2, 300, 5)
    loc, scale = m.m.detach().double(), m.log_s.detach().exp().double()
    zscore = (b.mean((0, 1)) - loc) / (scale / math.sqrt(600))
    assert zscore.abs().max() < 4.5
    # the local weight of draw (c, d) is exactly log N(x_i; b_cd, W W^T + s^2 I): every batch
    # saw the same b draws
    cov = W.double() @ W.double().T + sigma**2 * torch.eye(5, dtype=torch.float64)
    exact = dist.MultivariateNormal(b[:, :, None, :], cov).log_prob(x.double())  # (2, 300, 50)
    np.testing.assert_allclose(idata.sample_stats["log_weight"].values, exact.numpy(),
                               atol=2e-4)
    glob = dist.Normal(0.0, 2.0).log_prob(b).sum(-1) - dist.Normal(loc, scale).log_prob(b).sum(-1)
    assert idata.sample_stats["log_weight_global"].dims == ("chain", "draw")
    np.testing.assert_allclose(idata.sample_stats["log_weight_global"].values, glob.numpy(),
                               atol=2e-4)


def test_global_latents_in_a_plate_get_the_plate_as_dim():
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 3, (40,), generator=g)
    x = torch.randn(40, 2, generator=g)
    m = Mixture(3)
    idata = analysis.to_inference_data(m, (x, y), 200, batch_size=15)
    mu = idata.posterior["mu"]
    assert mu.dims == ("chain", "draw", "components", "mu_dim_0") and mu.shape == (1, 200, 3, 2)
    assert idata.posterior["u"].dims == ("chain", "draw", "obs")
    draws = torch.from_numpy(mu.values[0]).double()  # (200, 3, 2)
    assert ((draws.mean(0) - m.m.detach()).abs() / (0.1 / math.sqrt(200))).max() < 4.5
    exact = dist.Normal(draws[:, y], 1.0).log_prob(x.double()).sum(-1)  # (200, 40)
    np.testing.assert_allclose(idata.sample_stats["log_weight"].values[0], exact.numpy(),
                               atol=1e-4)
    np.testing.assert_array_equal(idata.constant_data["y"].values, y.numpy())


def test_chains_from_separate_runs(problem):
    W, b, sigma, x = problem
    runs = [LinearGaussian(W, b, sigma), LinearGaussian(W, b, sigma, guide_scale=0.5)]
    idata = analysis.to_inference_data(runs, x[:20], 500, predictive=False)
    z = idata.posterior["z"].values  # (2 runs, 500, 20, 3)
    assert z.shape == (2, 500, 20, 3) and idata.attrs["num_runs"] == 2
    _, cov = exact_posterior(W, b, sigma, x[:20])
    for chain, scale in ((0, 1.0), (1, 0.5)):
        var = z[chain].var(0).mean(0)  # per latent component, averaged over data points
        se = np.diag(cov) * scale**2 * math.sqrt(2 / (500 * 20))
        assert (np.abs(var - np.diag(cov) * scale**2) < 5 * se).all()
    az = analysis.import_arviz()
    rhat = az.rhat(idata.posterior)["z"].values
    assert np.isfinite(rhat).all() and np.median(rhat) > 1.05  # chains of different spread


def test_coords_dims_and_netcdf_round_trip(problem, tmp_path):
    W, b, sigma, x = problem
    ids = np.arange(100, 110)
    idata = analysis.to_inference_data(
        LinearGaussian(W, b, sigma), x[:10], 30, coords={"obs": ids, "latent": ["a", "b", "c"]},
        dims={"z": ["obs", "latent"]})
    assert idata.posterior["z"].dims == ("chain", "draw", "obs", "latent")
    sel = idata.posterior["z"].sel(obs=103, latent="b").values
    np.testing.assert_array_equal(sel, idata.posterior["z"].values[:, :, 3, 1])
    path = analysis.save_inference_data(idata, tmp_path / "sub" / "idata.nc")
    back = analysis.load_inference_data(path)
    np.testing.assert_array_equal(back.posterior["z"].values, idata.posterior["z"].values)
    np.testing.assert_array_equal(back.posterior["obs"].values, ids)
    np.testing.assert_array_equal(back.posterior_predictive["x"].values,
                                  idata.posterior_predictive["x"].values)
    az = analysis.import_arviz()
    table = az.summary(back, var_names=["z"], coords={"obs": [100, 101]})
    assert len(table) == 6 and {"mean", "sd", "r_hat"} <= set(table.columns)
    with warnings.catch_warnings():  # ArviZ warns of large Pareto k (draws are per data point)
        warnings.simplefilter("ignore", UserWarning)
        loo = az.loo(back, pointwise=True)
    assert loo["loo_i"].dims == ("obs",) and loo["n_data_points"] == 10


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_samples=0), "num_samples: expected a positive int"),
    (dict(chains=1.5), "chains: expected a positive int"),
    (dict(coords=[1]), "coords: expected a dict"),
    (dict(coords={"obs": [1, 2]}), "coords: 'obs' needs 10 labels"),
])
def test_bad_arguments_are_named(problem, kwargs, message):
    W, b, sigma, x = problem
    args = dict(num_samples=5) | kwargs
    with pytest.raises((ValueError, TypeError), match=message):
        analysis.to_inference_data(LinearGaussian(W, b, sigma), x[:10], **args)


def test_runs_of_different_models_are_refused(problem):
    W, b, sigma, x = problem
    other = LinearGaussian(W[:, :2], b, sigma)
    with pytest.raises(ValueError, match="run 1 of the list"):
        analysis.to_inference_data([LinearGaussian(W, b, sigma), other], x[:10], 5)
    with pytest.raises(ValueError, match="non-empty list"):
        analysis.to_inference_data([], x[:10], 5)
    with pytest.raises(FileNotFoundError, match="no such netCDF file"):
        analysis.load_inference_data("/nonexistent/idata.nc")
