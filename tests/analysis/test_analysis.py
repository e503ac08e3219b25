import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pyrovae
from pyrovae import VAE, VAEConfig, analysis, fit, metrics

SMALL = VAEConfig(input_shape=(1, 8, 8), latent_dim=3, hidden=(32,))


@pytest.fixture(scope="module")
def trained():
    splits = pyrovae.data.load("digits", binarize="dynamic")
    vae = VAE(SMALL)
    fit(vae, splits, epochs=3, batch_size=64, progress=False)
    return vae, splits.test.subset(torch.arange(30))


def test_inference_data_groups_dims_and_values(trained):
    vae, test = trained
    idata = analysis.to_inference_data(vae, test, 40, chains=2, batch_size=16)
    z = idata.posterior["z"]
    assert z.dims == ("chain", "draw", "obs", "z_dim_0") and z.shape == (2, 40, 30, 3)
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "obs")
    assert idata.posterior_predictive["x"].shape == (2, 40, 30, 1, 8, 8)
    np.testing.assert_array_equal(idata.observed_data["x"].values, test.x.numpy())
    np.testing.assert_array_equal(idata.constant_data["y"].values, test.y.numpy())
    # log p(x_i | z) recomputed by hand from the stored draws
    zs = torch.from_numpy(z.values)
    with torch.no_grad():
        logits = vae.decode(zs)
    by_hand = -F.binary_cross_entropy_with_logits(
        logits, test.x.expand_as(logits), reduction="none").sum((-1, -2, -3))
    np.testing.assert_allclose(idata.log_likelihood["x"].values, by_hand.numpy(), rtol=1e-5,
                               atol=1e-4)
    # posterior draws centre on the encoder's means
    with torch.no_grad():
        loc, scale = vae.encode(test.x)
    err = (zs.mean((0, 1)) - loc).abs() / (scale / math.sqrt(80))
    assert err.max() < 5
    assert set(np.unique(idata.posterior_predictive["x"].values)) <= {0.0, 1.0}


def test_log_weights_reproduce_the_importance_weighted_bound(trained):
    vae, test = trained
    idata = analysis.to_inference_data(vae, test, 64, batch_size=30, seed=5, predictive=False)
    lw = torch.from_numpy(idata.sample_stats["log_weight"].values[0])  # (draw, obs)
    from_idata = torch.logsumexp(lw, 0) - math.log(64)
    direct = metrics.log_likelihood(vae, test, 64, batch_size=30, seed=5)
    torch.testing.assert_close(from_idata, direct, rtol=1e-5, atol=1e-4)


def test_netcdf_round_trip_and_psis(trained, tmp_path):
    vae, test = trained
    az = analysis.import_arviz()
    idata = analysis.to_inference_data(vae, test, 50, seed=1)
    idata.to_netcdf(str(tmp_path / "a.nc"))
    back = az.from_netcdf(str(tmp_path / "a.nc"))
    np.testing.assert_array_equal(back.posterior["z"].values, idata.posterior["z"].values)
    lw = idata.sample_stats["log_weight"].values.reshape(-1, 30).T  # (obs, draws)
    _, khat = az.psislw(lw.copy())
    assert np.isfinite(khat).all() and khat.shape == (30,)


def test_image_grid_places_each_image():
    imgs = torch.zeros(5, 1, 2, 3)
    for i in range(5):
        imgs[i, 0, 0, 0] = (i + 1) / 10
    grid = analysis.image_grid(imgs, ncol=2, pad=1)
    assert grid.shape == (3 * 3 + 1, 2 * 4 + 1)
    for i in range(5):
        r, c = divmod(i, 2)
        assert grid[1 + r * 3, 1 + c * 4] == pytest.approx((i + 1) / 10)
    assert grid[-2, -2] == 1.0  # the unused sixth cell stays blank
    flat = analysis.plots.as_images(torch.rand(4, 16))
    assert flat.shape == (4, 4, 4)


def test_figures_are_written(trained, tmp_path):
    vae, test = trained
    h = fit(vae, test, epochs=2, batch_size=16, validation_data=test, progress=False)
    paths = [
        analysis.plot_reconstructions(test.x, vae.reconstruct(test.x), tmp_path / "r.png"),
        analysis.plot_samples(vae.sample(16), tmp_path / "s.png"),
        analysis.plot_history(h, tmp_path / "l.png"),
        analysis.plot_latent(vae.encode(test.x)[0].detach(), test.y, tmp_path / "z.png"),
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000
