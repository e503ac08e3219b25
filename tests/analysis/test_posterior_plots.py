"""Figures of posteriors and PSIS results: written as PNGs, drawn from the right values, bad
arguments named."""

import numpy as np
import pytest
import torch
from _models import GlobalBias, LinearGaussian, linear_gaussian_problem

from pyrovae import analysis
from pyrovae.analysis.psis import worst

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fitted():
    W, b, sigma, x = linear_gaussian_problem(n=40)
    y = torch.arange(40) % 3
    m = LinearGaussian(W, b, sigma, guide_scale=0.6)
    idata = analysis.to_inference_data(m, (x, y), 60, chains=2)
    return idata, analysis.psis(idata), x


def test_every_figure_is_written(fitted, tmp_path):
    idata, res, x = fitted
    paths = [
        analysis.plot_posterior(idata, tmp_path / "p.png", obs=[3, 5], components=[0, 2]),
        analysis.plot_posterior(idata, tmp_path / "f.png", kind="forest"),
        analysis.plot_khat(res, tmp_path / "k.png"),
        analysis.plot_khat_vs_recon(res, tmp_path / "kr.png"),
        analysis.plot_worst_inputs(res, x, tmp_path / "w.png", n=6),
        analysis.plot_khat_distributions({"a": res, "b": res["khat"].values + 0.2},
                                         tmp_path / "d.png"),
        analysis.plot_latent_map(idata, tmp_path / "m.png"),
    ]
    for p in paths:
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 2000, p


def test_worst_orders_by_khat(fitted):
    _, res, _ = fitted
    k = res["khat"].values
    idx = worst(res, 5)
    np.testing.assert_array_equal(k[idx], np.sort(k)[::-1][:5])
    flat = res.copy()
    flat["khat"] = flat["khat"] * 0 - np.inf
    np.testing.assert_array_equal(worst(flat, 3), [0, 1, 2])  # ties keep data order


def test_posterior_predictive_grid_of_images(tmp_path):
    from pyrovae import VAE, VAEConfig

    x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.4))
    idata = analysis.to_inference_data(VAE(VAEConfig(input_shape=(1, 4, 4), latent_dim=2,
                                                     hidden=(8,))), x, 5)
    p = analysis.plot_posterior_predictive(idata, tmp_path / "pp.png", obs=[0, 4], n_draws=3)
    assert p.read_bytes()[:8] == PNG


@pytest.mark.parametrize("call, message", [
    (lambda i, r, x, d: analysis.plot_posterior(i, d / "a.png", kind="trace"),
     "kind: expected 'posterior' or 'forest', got 'trace'"),
    (lambda i, r, x, d: analysis.plot_posterior(i, d / "a.png", var="w"),
     r"var: expected one of the posterior's variables \['z'\], got 'w'"),
    (lambda i, r, x, d: analysis.plot_posterior(i, d / "a.png", obs=[99]),
     r"obs: \[99\] are not among the data points"),
    (lambda i, r, x, d: analysis.plot_worst_inputs(r, x[:3], d / "a.png"),
     "x: expected the 40 inputs the result scores, got 3"),
    (lambda i, r, x, d: analysis.plot_khat_vs_recon(r.drop_vars("recon"), d / "a.png"),
     "result: it has no 'recon'"),
    (lambda i, r, x, d: worst(r, 0), "n: expected a positive int, got 0"),
])
def test_bad_arguments_are_named(fitted, tmp_path, call, message):
    idata, res, x = fitted
    with pytest.raises(ValueError, match=message):
        call(idata, res, x, tmp_path)


def test_a_global_latent_has_no_latent_map(tmp_path):
    W, _, sigma, x = linear_gaussian_problem(n=10, d=5, q=2)
    idata = analysis.to_inference_data(GlobalBias(W, sigma), x, 5, predictive=False)
    with pytest.raises(ValueError, match="'b' is a global latent"):
        analysis.plot_latent_map(idata, tmp_path / "m.png", var="b")
    with pytest.raises(ValueError, match="no posterior_predictive group"):
        analysis.plot_posterior_predictive(idata, tmp_path / "pp.png")
