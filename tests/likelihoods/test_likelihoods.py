import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
import torch.nn.functional as F

from pyrovae.likelihoods import (
    DiscretizedLogistic,
    DiscretizedLogisticDistribution,
    DiscretizedLogisticMixture,
    likelihood,
)


def test_bernoulli_log_prob_is_minus_binary_cross_entropy():
    torch.manual_seed(0)
    lik = likelihood("bernoulli", (1, 4, 4))
    logits = torch.randn(3, 1, 4, 4)
    x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.5))
    expected = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
    torch.testing.assert_close(lik(logits).log_prob(x), expected)
    torch.testing.assert_close(lik.mean(logits), torch.sigmoid(logits))


@pytest.mark.parametrize("mode", [0.3, "learned", "learned_per_dim", "predicted"])
def test_gaussian_log_prob_matches_scipy(mode):
    torch.manual_seed(0)
    lik = likelihood("gaussian", (5,), scale=mode, init_scale=0.7)
    params = torch.randn(4, lik.param_shape[0])
    x = torch.randn(4, 5)
    loc = params[:, :5]
    if mode == "predicted":
        scale = F.softplus(params[:, 5:]) + lik.min_scale
    elif mode == 0.3:
        scale = torch.full_like(loc, 0.3)
    else:
        scale = torch.full_like(loc, 0.7)  # learned scales start at init_scale
    expected = scipy.stats.norm.logpdf(x.numpy(), loc.numpy(), scale.detach().numpy()).sum(1)
    np.testing.assert_allclose(lik(params).log_prob(x).detach().numpy(), expected, rtol=1e-5)


def test_discretized_logistic_is_a_distribution_over_the_grid():
    torch.manual_seed(0)
    k = 256
    loc = torch.tensor([-0.3, 0.0, 0.2, 0.5, 0.999, 1.4])
    scale = torch.tensor([0.01, 0.2, 0.05, 1e-4, 0.3, 0.1])
    d = DiscretizedLogisticDistribution(loc, scale, k)
    grid = torch.arange(k, dtype=torch.float64).float() / (k - 1)
    lp = d.log_prob(grid[:, None].expand(k, 6))  # (K, 6)
    torch.testing.assert_close(lp.exp().sum(0), torch.ones(6), atol=2e-5, rtol=0)
    # interior bins against the logistic CDF from scipy
    h = 0.5 / (k - 1)
    g = grid.double().numpy()[:, None]
    cdf = scipy.stats.logistic.cdf
    mu, s = loc.double().numpy(), scale.double().numpy()
    p = cdf((g + h - mu) / s) - cdf((g - h - mu) / s)
    p[0] = cdf((h - mu) / s)
    p[-1] = 1 - cdf((1 - h - mu) / s)
    mask = p > 1e-12
    np.testing.assert_allclose(lp.double().exp().numpy()[mask], p[mask], rtol=2e-4, atol=1e-7)
    # the mean property equals sum_k x_k P(x_k)
    torch.testing.assert_close(d.mean, (lp.exp() * grid[:, None]).sum(0), atol=1e-5, rtol=1e-5)


def test_discretized_logistic_samples_follow_its_probabilities():
    torch.manual_seed(1)
    d = DiscretizedLogisticDistribution(torch.tensor(0.5), torch.tensor(0.02), 16)
    x = d.sample((40000,))
    grid = torch.arange(16) / 15.0
    counts = torch.stack([(x == g).sum() for g in grid]).double()
    probs = d.log_prob(grid).exp().double()
    assert counts.sum() == 40000  # every draw lands on the grid
    keep = probs * 40000 > 5
    chi2 = (((counts - 40000 * probs) ** 2) / (40000 * probs))[keep].sum().item()
    assert scipy.stats.chi2.sf(chi2, int(keep.sum()) - 1) > 1e-3


def test_discretized_logistic_is_stable_far_from_the_data():
    d = DiscretizedLogisticDistribution(torch.tensor([50.0, -50.0]), torch.tensor([1e-3, 1e-3]))
    lp = d.log_prob(torch.tensor([0.5, 0.5]))
    assert torch.isfinite(lp).all() and (lp < -1e3).all()


def test_check_data_names_the_problem():
    with pytest.raises(ValueError, match=r"Bernoulli likelihood needs values in \{0, 1\}"):
        likelihood("bernoulli", (1, 2, 2)).check_data(torch.full((3, 1, 2, 2), 0.5), "data")
    with pytest.raises(ValueError, match=r"expected shape \(N, 1, 2, 2\).*got \(3, 4\)"):
        likelihood("bernoulli", (1, 2, 2)).check_data(torch.zeros(3, 4), "data")
    with pytest.raises(ValueError, match="values k/255"):
        likelihood("discretized_logistic", (3,)).check_data(torch.tensor([[-0.1, 0.0, 1.0]]))
    with pytest.raises(ValueError, match="likelihood: expected one of"):
        likelihood("poisson", (3,))
    with pytest.raises(ValueError, match="Gaussian scale"):
        likelihood("gaussian", (3,), scale=-1.0)
    # values exactly on the 8-bit grid pass
    likelihood("discretized_logistic", (3,)).check_data(torch.tensor([[0.0, 128 / 255, 1.0]]))


def _logistic_bin_probs(loc, scale, k=256):
    """P(x_j) for every grid value from scipy's logistic CDF (edges at the half-way points,
    the end bins taking the tails)."""
    edges = (np.arange(k - 1) + 0.5) / (k - 1)
    cdf = scipy.stats.logistic.cdf(edges, loc=loc, scale=scale)
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


def test_discretized_logistic_mixture_is_the_weighted_sum_of_its_components():
    torch.manual_seed(0)
    lik = DiscretizedLogisticMixture((1, 1, 1), num_components=3)
    logits, locs = torch.tensor([0.3, -1.0, 1.2]), torch.tensor([0.2, 0.55, 0.8])
    log_scales = torch.tensor([-2.0, -3.0, -2.5])
    params = torch.cat([logits, locs, log_scales]).double().reshape(1, 9, 1, 1)
    d = lik(params)
    grid = (torch.arange(256, dtype=torch.float64) / 255).reshape(256, 1, 1, 1)
    p = d.log_prob(grid).exp().numpy()  # (256,)
    w = torch.softmax(logits.double(), 0).numpy()
    ref = sum(w[m] * _logistic_bin_probs(locs[m].item(), np.exp(log_scales[m].item()))
              for m in range(3))
    np.testing.assert_allclose(p, ref, rtol=1e-9, atol=1e-14)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert d.mean.item() == pytest.approx(float((grid.reshape(-1).numpy() * ref).sum()), abs=1e-9)
    x = d.sample((20000,)).reshape(-1)  # on the grid, with the mixture's probabilities
    freq = np.bincount(np.rint(x.numpy() * 255).astype(int), minlength=256) / x.numel()
    assert np.abs(freq - ref).max() < 5 * np.sqrt(ref.max() / x.numel())


def test_discretized_logistic_mixture_of_one_is_the_discretized_logistic():
    torch.manual_seed(0)
    params = torch.randn(5, 2, 3, 4)  # (B, [loc, log-scale] x C=1, 3, 4)
    one = likelihood("discretized_logistic_mixture", (1, 3, 4), num_components=1)
    ref = DiscretizedLogistic((1, 3, 4))
    logits = torch.randn(5, 1, 3, 4)  # one component: its weight is 1 whatever the logit
    x = torch.randint(0, 256, (5, 1, 3, 4)) / 255
    torch.testing.assert_close(one(torch.cat([logits, params], 1)).log_prob(x),
                               ref(params).log_prob(x))
    with pytest.raises(ValueError, match="num_components: expected a positive int, got 0"):
        DiscretizedLogisticMixture((1, 3, 4), num_components=0)


def _coupled_reference(logits, locs, log_scales, coeffs, k):
    """P(x) of one RGB value for every grid point, from scipy's logistic CDF: PixelCNN++'s
    eq. 3 written out, (k, k, k) indexed by (r, g, b)."""
    w = np.exp(logits - scipy.special.logsumexp(logits))
    grid = np.arange(k) / (k - 1)
    p = np.zeros((k, k, k))
    for m in range(len(w)):
        s = np.exp(log_scales[m])
        pr = _logistic_bin_probs(locs[m, 0], s[0], k)
        for i, r in enumerate(grid):
            pg = _logistic_bin_probs(locs[m, 1] + coeffs[m, 0] * r, s[1], k)
            for j, g in enumerate(grid):
                pb = _logistic_bin_probs(locs[m, 2] + coeffs[m, 1] * r + coeffs[m, 2] * g, s[2], k)
                p[i, j] += w[m] * pr[i] * pg[j] * pb
    return p


def test_coupled_mixture_is_pixelcnn_plus_plus_eq_3_and_samples_from_it():
    k, M = 8, 3  # an 8-level grid keeps the 512 RGB outcomes enumerable
    g = np.random.default_rng(0)
    logits, locs = g.normal(size=M), g.uniform(0.1, 0.9, size=(M, 3))
    log_scales, raw = g.uniform(-2.5, -1.0, size=(M, 3)), g.normal(size=(M, 3)) * 1.5
    lik = DiscretizedLogisticMixture((3, 1, 1), num_components=M, num_bins=k)
    assert lik.param_shape == (10 * M, 1, 1)  # PixelCNN++'s 10 numbers per component for RGB
    params = torch.tensor(np.concatenate([logits, locs.reshape(-1),
                                          log_scales.reshape(-1), raw.reshape(-1)]))
    d = lik(params.reshape(1, 10 * M, 1, 1))
    assert d.event_shape == (3, 1, 1) and d.batch_shape == (1,)
    grid = torch.arange(k, dtype=torch.float64) / (k - 1)
    rgb = torch.stack(torch.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3, 1, 1)
    p = d.log_prob(rgb).exp().reshape(k, k, k).numpy()
    ref = _coupled_reference(logits, locs, log_scales, np.tanh(raw), k)
    np.testing.assert_allclose(p, ref, rtol=1e-9, atol=1e-14)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    # the channels are dependent: P(r, g) is not P(r) P(g)
    prg = ref.sum(2)
    assert np.abs(prg - np.outer(prg.sum(1), prg.sum(0))).max() > 1e-2
    # samples land on the grid with these probabilities (each channel drawn given the
    # earlier ones, the component shared)
    torch.manual_seed(0)
    x = d.sample((60000,)).reshape(-1, 3)
    idx = np.rint(x.numpy() * (k - 1)).astype(int)
    freq = np.bincount(idx[:, 0] * k * k + idx[:, 1] * k + idx[:, 2], minlength=k**3) / len(idx)
    assert np.abs(freq - ref.reshape(-1)).max() < 5 * np.sqrt(ref.max() / len(idx))
    # the mean: exact for the first channel
    assert d.mean[0, 0].item() == pytest.approx(float((ref.sum((1, 2)) * grid.numpy()).sum()),
                                                abs=1e-9)


def test_coupled_mixture_of_one_channel_is_the_per_channel_mixture():
    torch.manual_seed(1)
    params = torch.randn(4, 9, 2, 3)
    x = torch.randint(0, 256, (4, 1, 2, 3)) / 255
    a = DiscretizedLogisticMixture((1, 2, 3), num_components=3)
    b = DiscretizedLogisticMixture((1, 2, 3), num_components=3, coupled=False)
    torch.testing.assert_close(a(params).log_prob(x), b(params).log_prob(x))
    with pytest.raises(ValueError, match="coupled: expected True or False, got 1"):
        DiscretizedLogisticMixture((3, 2, 2), coupled=1)


def test_coupled_mixture_learns_what_independent_channels_cannot():
    """Two channels on a 32-level grid, r uniform on its 16 even levels and g = r/2 + 8/31
    exactly. Any model with independent channels has cross-entropy >= H(r) + H(g) = 2 log 16
    (Gibbs' inequality); the coupled mixture can predict g from r, approaching H(r)."""
    torch.manual_seed(0)
    r = torch.arange(0, 32, 2, dtype=torch.float32)
    x = torch.stack([r, r / 2 + 8], -1) / 31  # (16, 2)
    h_r = math.log(16)
    nll = {}
    for coupled in (True, False):
        lik = DiscretizedLogisticMixture((2,), num_components=4, num_bins=32, coupled=coupled)
        params = (0.1 * torch.randn(lik.param_shape)).requires_grad_()
        opt = torch.optim.Adam([params], lr=0.05)
        for _ in range(300):
            opt.zero_grad()
            loss = -lik(params.expand(len(x), -1)).log_prob(x).mean()
            loss.backward()
            opt.step()
        nll[coupled] = loss.item()
    assert nll[False] >= 2 * h_r - 1e-4
    assert nll[True] < h_r + 1.0  # measured 3.57 = H(r) + 0.80
    assert nll[False] - nll[True] > 2.5  # measured 6.34 - 3.57
