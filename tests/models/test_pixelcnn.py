"""The PixelCNN prior defines a normalised autoregressive distribution: causal (no position
sees itself or later ones), without blind spot, summing to one over every code map, and
sampled with the frequencies its log_prob gives."""

import itertools
import math

import pytest
import torch

from pyrovae.models.code_prior import AutoregressiveCategorical, CodeLevel, CodePrior
from pyrovae.nn import CausalSelfAttention, GatedPixelCNN

pytestmark = pytest.mark.usefixtures("one_thread")


def _dependencies(net, shape, k, cond=None, seed=0):
    """dep[p, q]: whether the logits at position p change when the code at q changes."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(k, (1, *shape), generator=g)
    n = shape[0] * shape[1]
    dep = torch.zeros(n, n, dtype=torch.bool)
    with torch.no_grad():
        ref = net(base, cond)
        for q in range(n):
            x = base.clone()
            r, c = divmod(q, shape[1])
            x[0, r, c] = (x[0, r, c] + 1) % k
            dep[:, q] = (net(x, cond) - ref).abs().amax(-1).reshape(-1) > 0
    return dep


@pytest.mark.parametrize("attention", [0, 2])
def test_pixelcnn_is_causal_without_blind_spot(attention):
    torch.manual_seed(0)
    shape = (4, 5)
    net = GatedPixelCNN(3, shape, channels=8, layers=3, kernel=5,
                        attention_heads=attention, attention_every=2).double()
    dep = _dependencies(net, shape, 3)
    n = shape[0] * shape[1]
    strictly_earlier = torch.ones(n, n, dtype=torch.bool).tril(-1)  # [p, q]: q < p
    assert not bool((dep & ~strictly_earlier).any()), "a position sees itself or the future"
    assert bool((dep == strictly_earlier).all()), "a blind spot: an earlier code is not seen"


def test_conditional_pixelcnn_stays_causal_and_uses_its_condition():
    torch.manual_seed(1)
    net = GatedPixelCNN(3, (4, 4), channels=8, layers=3, kernel=5, cond_codes=5,
                        cond_upsample=1).double()
    cond = torch.randint(5, (1, 2, 2))
    dep = _dependencies(net, (4, 4), 3, cond)
    assert not bool((dep & ~torch.ones(16, 16, dtype=torch.bool).tril(-1)).any())
    codes = torch.randint(3, (1, 4, 4))
    with torch.no_grad():
        a, b = net(codes, cond), net(codes, (cond + 1) % 5)
    assert (a - b).abs().amax() > 0  # the first position already depends on the condition


def test_causal_attention_sees_only_the_past():
    torch.manual_seed(2)
    att = CausalSelfAttention(8, 2, (3, 3)).double()
    h = torch.randn(1, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    out = att(h).flatten(2)  # (1, 8, 9)
    for p in range(9):
        (g,) = torch.autograd.grad(out[0, :, p].sum(), h, retain_graph=True)
        seen = g.flatten(2).abs().sum(1)[0] > 0  # (9,)
        assert seen.tolist() == [q <= p for q in range(9)]


def _all_maps(k, shape):
    n = shape[0] * shape[1]
    return torch.tensor(list(itertools.product(range(k), repeat=n))).reshape(-1, *shape)


@pytest.mark.parametrize("attention", [0, 2])
def test_log_prob_sums_to_one_over_all_code_maps(attention):
    torch.manual_seed(3)
    net = GatedPixelCNN(3, (2, 2), channels=8, layers=2, kernel=3,
                        attention_heads=attention).double()
    maps = _all_maps(3, (2, 2))  # all 81 maps
    with torch.no_grad():
        lp = AutoregressiveCategorical(net).log_prob(maps)
    assert lp.shape == (81,)
    assert float(torch.logsumexp(lp, 0)) == pytest.approx(0.0, abs=1e-12)


def test_conditional_log_prob_sums_to_one_for_each_condition():
    torch.manual_seed(4)
    net = GatedPixelCNN(2, (2, 2), channels=8, layers=2, kernel=3, cond_codes=3,
                        cond_upsample=1).double()
    maps = _all_maps(2, (2, 2))  # 16 maps
    for cond in (torch.tensor([[0]]), torch.tensor([[2]])):
        d = AutoregressiveCategorical(net, cond.expand(16, 1, 1))
        with torch.no_grad():
            lp = d.log_prob(maps)
        assert float(torch.logsumexp(lp, 0)) == pytest.approx(0.0, abs=1e-12)


def test_ancestral_samples_have_the_frequencies_log_prob_gives():
    torch.manual_seed(5)
    net = GatedPixelCNN(2, (2, 2), channels=8, layers=2, kernel=3).double()
    d = AutoregressiveCategorical(net)
    n = 4000
    draws = d.sample((n,))  # (n, 2, 2)
    maps = _all_maps(2, (2, 2))
    with torch.no_grad():
        p = d.log_prob(maps).exp()
    code = (draws.reshape(n, 4) * torch.tensor([8, 4, 2, 1])).sum(1)
    freq = torch.bincount(code, minlength=16).double() / n
    se = (p * (1 - p) / n).sqrt()
    assert bool(((freq - p).abs() <= 4 * se + 1e-12).all())


def test_code_prior_program_scores_each_level_and_conditions_the_bottom_on_the_top():
    torch.manual_seed(6)
    prior = CodePrior([CodeLevel("codes_top", (1, 1), 3, 8, 2, 3),
                       CodeLevel("codes_bottom", (2, 2), 2, 8, 2, 3, cond="codes_top",
                                 cond_upsample=1)])
    codes = prior.sample(5)
    assert codes["codes_top"].shape == (5, 1, 1) and codes["codes_bottom"].shape == (5, 2, 2)
    x = prior.pack(codes)
    assert x.shape == (5, 5)
    lp = prior.log_prob(codes)
    bpd = prior.bits_per_dim(codes)
    total = -(lp["codes_top"] + lp["codes_bottom"]) / (5 * math.log(2))
    torch.testing.assert_close(bpd["total"], total.double())
    with pytest.raises(ValueError, match="codes in"):
        prior.check_data(x + 3)
    with pytest.raises(ValueError, match="cond 'nope' is not an earlier level"):
        CodePrior([CodeLevel("a", (2, 2), 2, cond="nope")])
