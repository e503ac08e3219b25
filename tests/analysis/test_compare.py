"""Held-out model comparison in ArviZ's layout, checked against exact marginal likelihoods."""

import math

import numpy as np
import pytest
from _models import LinearGaussian, exact_log_marginal, linear_gaussian_problem

from pyrovae import analysis


@pytest.fixture(scope="module")
def problem():
    return linear_gaussian_problem(n=80)


def test_elpd_of_an_exact_guide_is_the_exact_log_likelihood(problem):
    W, b, sigma, x = problem
    e = analysis.elpd(LinearGaussian(W, b, sigma), x, 50)
    exact = exact_log_marginal(W, b, sigma, x)
    np.testing.assert_allclose(e["loo_i"].values, exact, atol=2e-4)
    assert e["elpd_loo"] == pytest.approx(exact.sum(), abs=0.01)
    assert e["se"] == pytest.approx(math.sqrt(80 * exact.var()), rel=1e-4)
    assert e["n_data_points"] == 80 and e["n_samples"] == 50 and not e["warning"]
    assert np.isneginf(e["pareto_k"].values).all() and e["scale"] == "log"


def test_compare_differences_match_the_exact_marginals(problem):
    W, b, sigma, x = problem
    wrong_b, wrong_sigma = b + 0.4, 1.0
    models = {"true": LinearGaussian(W, b, sigma),
              "shifted": LinearGaussian(W, wrong_b, sigma),
              "noisier": LinearGaussian(W, b, wrong_sigma)}
    table = analysis.compare(models, x, 20)
    exact = {"true": exact_log_marginal(W, b, sigma, x),
             "shifted": exact_log_marginal(W, wrong_b, sigma, x),
             "noisier": exact_log_marginal(W, b, wrong_sigma, x)}
    order = sorted(exact, key=lambda k: -exact[k].sum())
    assert list(table.index) == order and table.index[0] == "true"
    for name in order:
        diff = exact["true"] - exact[name]
        row = table.loc[name]
        assert row["elpd_loo"] == pytest.approx(exact[name].sum(), abs=0.02)
        assert row["elpd_diff"] == pytest.approx(diff.sum(), abs=0.02)
        assert row["dse"] == pytest.approx(math.sqrt(80 * diff.var()), rel=1e-3, abs=1e-3)
        assert row["se"] == pytest.approx(math.sqrt(80 * exact[name].var()), rel=1e-3)
    assert table["weight"].sum() == pytest.approx(1.0)
    assert table["rank"].tolist() == [0, 1, 2]


def test_compare_accepts_precomputed_results_and_inference_data(problem):
    W, b, sigma, x = problem
    narrow = LinearGaussian(W, b, sigma, guide_scale=0.5)
    res = analysis.psis_diagnostics(narrow, x, 300)
    idata = analysis.to_inference_data(LinearGaussian(W, b, sigma), x, 30, predictive=False)
    table = analysis.compare({"narrow": res, "exact": idata,
                              "elpd": analysis.elpd(res, estimator="is")})
    assert set(table.index) == {"narrow", "exact", "elpd"}
    assert table.loc["narrow", "warning"]  # k = 1 - 0.5^2 = 0.75 for most points
    assert table.loc["exact", "elpd_loo"] == pytest.approx(
        exact_log_marginal(W, b, sigma, x).sum(), abs=0.02)
    az = analysis.import_arviz()
    assert isinstance(analysis.elpd(res), az.ELPDData)
    text = str(analysis.elpd(res))  # ArviZ prints it as it prints az.loo's result
    assert "elpd_loo" in text and "Pareto k diagnostic values" in text


@pytest.mark.parametrize("kwargs, message", [
    (dict(models={"a": None}), "models: expected a dict of at least two named models, got a "
                               "dict of 1"),
    (dict(models=[1, 2]), "models: expected a dict of at least two named models, got list"),
    (dict(estimator="loo"), "estimator: expected one of"),
])
def test_bad_arguments_are_named(problem, kwargs, message):
    W, b, sigma, x = problem
    args = dict(models={"a": LinearGaussian(W, b, sigma), "b": LinearGaussian(W, b, 1.0)},
                data=x, num_samples=5) | kwargs
    with pytest.raises(ValueError, match=message):
        analysis.compare(**args)


def test_models_scored_on_different_data_are_refused(problem):
    W, b, sigma, x = problem
    a = analysis.elpd(LinearGaussian(W, b, sigma), x, 5)
    b_ = analysis.elpd(LinearGaussian(W, b, sigma), x[:40], 5)
    with pytest.raises(ValueError, match="different numbers of data points"):
        analysis.compare({"a": a, "b": b_})
    with pytest.raises(ValueError, match="data: a model needs the held-out data"):
        analysis.elpd(LinearGaussian(W, b, sigma))
