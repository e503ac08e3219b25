"""MIG, FactorVAE score, DCI, active units and per-dimension KL against exact values."""

import itertools
import math

import numpy as np
import pytest
import torch
from _models import UserLinearGaussian as LinearGaussian

from pyrovae import metrics

pytestmark = pytest.mark.usefixtures("one_thread")


def full_grid(sizes, repeats=1):
    """Every combination of factor values, ``repeats`` times: the factors are exactly
    independent and uniform in this data, so I(v_j; v_k) = 0 for j != k."""
    g = np.array(list(itertools.product(*[range(k) for k in sizes])), dtype=np.int64)
    return np.tile(g, (repeats, 1))


def test_mig_of_a_code_equal_to_the_factors_is_one():
    f = full_grid((3, 4, 5), repeats=5)  # 300 points
    loc = torch.tensor(f, dtype=torch.float64)
    r = metrics.mig(loc, torch.full(loc.shape, 0.02, dtype=torch.float64), f)
    assert r["mig"] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(np.diag(r["mi"]), np.log([3, 4, 5]), atol=1e-6)
    np.testing.assert_allclose(r["entropy"], np.log([3, 4, 5]))
    h = metrics.mig_histogram(f, f)
    assert h["mig"] == pytest.approx(1.0, abs=1e-12)
    # a permuted, rescaled code is as disentangled
    perm = metrics.mig_histogram(np.stack([-3 * f[:, 2], f[:, 0] + 7, 0.5 * f[:, 1]], 1), f)
    assert perm["mig"] == pytest.approx(1.0, abs=1e-12)


def test_mig_matches_the_mutual_information_of_a_gaussian_channel():
    """q(z_0 | n) = N(v_0(n), s^2) with v_0 uniform on {0, 1, 2, 3}: I(z_0; v_0) = H(z) - H(z|v)
    for the mixture density, by quadrature. The estimator averages log q(z|v) - log q(z) over
    one draw per point of the exact mixtures, so it is unbiased with the standard error of that
    log-ratio (also by quadrature)."""
    s = 0.7
    f = full_grid((4, 3), repeats=200)  # 2,400 points
    loc = np.stack([f[:, 0], np.zeros(len(f))], 1).astype(float)
    scale = np.stack([np.full(len(f), s), np.ones(len(f))], 1)
    r = metrics.mig(loc, scale, f, num_samples=len(f), seed=1)
    z = np.linspace(-6, 9, 30001)
    dz = z[1] - z[0]
    comp = np.exp(-0.5 * ((z[None] - np.arange(4)[:, None]) / s) ** 2) / (s * np.sqrt(2 * np.pi))
    mix = comp.mean(0)
    ratio = np.log(comp / mix)  # (4, Z): log p(z|v) - log p(z)
    mi = (comp * ratio).sum() * dz / 4
    var = (comp * ratio**2).sum() * dz / 4 - mi**2
    se = math.sqrt(var / len(f))
    assert r["mi"][0, 0] == pytest.approx(mi, abs=4 * se)
    # exact zeros on the grid, up to the float32 sums the estimator uses
    assert abs(r["mi"][1, 0]) < 1e-6 and abs(r["mi"][0, 1]) < 1e-6
    assert r["mig"] == pytest.approx((r["mi"][0, 0] / math.log(4) + 0.0) / 2, abs=1e-6)


def test_mig_of_an_independent_random_code_is_near_zero():
    """Plug-in mutual information of independent variables is biased up by about
    (bins_z - 1)(K - 1) / (2N) nats (Miller 1955); both variants stay within three times that,
    so MIG within three times it over the smallest factor entropy."""
    f = full_grid((3, 4, 5), repeats=50)  # 3,000 points
    rng = np.random.default_rng(0)
    codes = rng.standard_normal((len(f), 6))
    bias = (20 - 1) * (5 - 1) / (2 * len(f))
    bound = 3 * bias / math.log(3)
    h = metrics.mig_histogram(codes, f)
    assert h["mi"].max() < 3 * bias and 0 <= h["mig"] < bound
    c = metrics.mig(codes, np.full(codes.shape, 0.3), f, seed=0)
    assert c["mi"].max() < 3 * bias and abs(c["mig"]) < bound


def test_mig_refuses_bad_input():
    f = full_grid((2, 2))
    with pytest.raises(ValueError, match="scale"):
        metrics.mig(np.zeros((4, 2)), np.zeros((4, 2)), f)
    with pytest.raises(ValueError, match="factors"):
        metrics.mig(np.zeros((4, 2)), np.ones((4, 2)), f[:3])
    with pytest.raises(TypeError, match="integer"):
        metrics.mig_histogram(np.zeros((4, 2)), f.astype(float))


class ToyFactors:
    """Ground-truth data whose observations are the factor values themselves."""

    factor_sizes = (3, 4, 5)

    def sample_factors(self, n, generator=None):
        return torch.stack([torch.randint(k, (n,), generator=generator)
                            for k in self.factor_sizes], 1)

    def images(self, factors):
        return factors.double()


def test_factor_vae_score_of_the_factors_is_one_and_of_noise_is_chance():
    data = ToyFactors()
    r = metrics.factor_vae_score(lambda x: x[:, [2, 0, 1]] * torch.tensor([2.0, -1.0, 5.0]),
                                 data, num_train=100, num_eval=100, num_variance=1000)
    assert r["score"] == 1.0 and r["train_accuracy"] == 1.0
    # a code independent of the factors: the voted dimension is independent of the fixed
    # factor, so the classifier is right with probability 1/K on each evaluation vote
    g = torch.Generator().manual_seed(1)
    n_eval = 300
    noise = metrics.factor_vae_score(lambda x: torch.randn(len(x), 4, generator=g), data,
                                     num_train=300, num_eval=n_eval, num_variance=1000)
    p = 1 / 3
    assert noise["score"] == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / n_eval))


@pytest.mark.parametrize("regressor", ["lasso", "gbt"])
def test_dci_of_the_factors_is_perfect_and_of_a_rotation_is_zero(regressor):
    f = full_grid((4, 4), repeats=10)  # 160 points
    args = {"gbt_args": {"n_estimators": 10}} if regressor == "gbt" else {}
    r = metrics.dci(f.astype(float), f, f.astype(float), f, regressor=regressor, **args)
    assert r["disentanglement"] == pytest.approx(1.0, abs=1e-9)
    assert r["completeness"] == pytest.approx(1.0, abs=1e-9)
    assert r["informativeness"] > 0.99
    if regressor == "lasso":
        # each factor is half the sum or half the difference of the two codes: every code
        # matters equally to both factors, so both entropies are maximal
        rot = np.stack([f[:, 0] + f[:, 1], f[:, 0] - f[:, 1]], 1).astype(float)
        r = metrics.dci(rot, f, rot, f, regressor="lasso", alpha=1e-3)
        assert r["disentanglement"] == pytest.approx(0.0, abs=1e-6)
        assert r["completeness"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="regressor"):
        metrics.dci(f.astype(float), f, f.astype(float), f, regressor="forest")


def test_active_units_is_the_variance_of_the_posterior_means_over_the_data():
    rng = np.random.default_rng(0)
    loc = torch.tensor(rng.standard_normal((500, 4)) * np.array([1.0, 0.2, 0.05, 0.001]))
    r = metrics.active_units(loc)
    np.testing.assert_allclose(r["variance"].numpy(), np.var(loc.numpy(), axis=0, ddof=1),
                               rtol=1e-5)
    assert r["count"] == 2 and r["active"].tolist() == [True, True, False, False]


def test_per_dimension_kl_and_moments_of_a_users_model_match_the_gaussian_closed_form():
    torch.manual_seed(0)
    m = LinearGaussian()
    x = torch.randn(50, 5)
    kl = metrics.per_dimension_kl(m, x, batch_size=20)  # (50, 2)
    loc, raw = m.encoder(x).chunk(2, -1)
    s = torch.nn.functional.softplus(raw)
    exact = 0.5 * (s**2 + loc**2 - 1 - torch.log(s**2))
    torch.testing.assert_close(kl, exact.detach(), rtol=1e-5, atol=1e-6)
    mom = metrics.posterior_moments(m, x)
    torch.testing.assert_close(mom["loc"], loc.detach())
    torch.testing.assert_close(mom["scale"], s.detach())
    assert metrics.active_units(m, x)["variance"].shape == (2,)
