"""Quantisation against truth from outside: Max's (1960) table, scikit-learn's KMeans, torch's
cdist, closed-form gradients and the EMA update worked by hand."""

import subprocess
import sys
import textwrap

import numpy as np
import pyro.distributions as dist
import pytest
import torch

from pyrovae.quantize import (
    VectorQuantizer,
    codebook_loss,
    commitment_loss,
    ema_update,
    kmeans,
    kmeans_plus_plus,
    lloyd_max,
    nearest_code,
    squared_distances,
    straight_through,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# --- nearest-neighbour search ---------------------------------------------------------------


def test_distances_and_nearest_codes_match_cdist():
    g = torch.Generator().manual_seed(0)
    z, e = torch.randn(300, 7, generator=g, dtype=torch.float64), \
        torch.randn(40, 7, generator=g, dtype=torch.float64)
    ref = torch.cdist(z, e) ** 2
    torch.testing.assert_close(squared_distances(z, e), ref)
    for chunk in (1000, 64, 7):  # chunking changes nothing
        idx, d2 = nearest_code(z, e, chunk_size=chunk)
        assert torch.equal(idx, ref.argmin(1))
        torch.testing.assert_close(d2, ref.min(1).values)


def test_nearest_codes_never_form_the_n_by_k_by_d_tensor():
    # (N, K, D) = (50000, 256, 128) would be 6.5 GB of float32; under a 3 GB address-space cap
    # the search must still run (it needs about N x D + chunk x K floats).
    code = textwrap.dedent("""
        import resource
        import torch
        from pyrovae.quantize import nearest_code
        torch.set_num_threads(1)
        z = torch.randn(50000, 128)
        e = torch.randn(256, 128)
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, resource.RLIM_INFINITY))
        try:
            torch.empty(50000, 256, 128)
            raise SystemExit("the cap did not hold")
        except RuntimeError:
            pass
        idx, _ = nearest_code(z, e)
        ref = torch.cdist(z[:500], e).argmin(1)
        assert torch.equal(idx[:500], ref)
        print("ok", idx.shape[0])
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "ok 50000"


# --- straight-through estimator and the two losses -----------------------------------------


def test_straight_through_is_z_q_in_value_and_identity_to_z_e_in_gradient():
    g = torch.Generator().manual_seed(1)
    z_e = torch.randn(5, 3, 4, generator=g, requires_grad=True)
    codebook = torch.randn(6, 4, generator=g, requires_grad=True)
    z_q = codebook[torch.randint(6, (5, 3), generator=g)]
    out = straight_through(z_e, z_q)
    assert torch.equal(out, z_q)  # bit for bit
    upstream = torch.randn(5, 3, 4, generator=g)
    out.backward(upstream)
    assert torch.equal(z_e.grad, upstream)  # exactly the decoder-input gradient
    assert codebook.grad is None  # the reconstruction never moves the codebook


def test_codebook_loss_moves_only_the_codebook_commitment_only_the_encoder():
    torch.manual_seed(2)
    vq = VectorQuantizer(8, 3, ema=False, kmeans_init=0, restart_threshold=0)
    z_e = torch.randn(4, 5, 3, dtype=torch.float32, requires_grad=True)
    q = vq(z_e)
    e = vq.codebook.detach()[q.indices]  # (4, 5, 3) the chosen codes
    q.codebook.sum().backward(retain_graph=True)
    assert z_e.grad is None
    expected = torch.zeros_like(vq.codebook).index_add_(
        0, q.indices.reshape(-1), (2 * (e - z_e.detach())).reshape(-1, 3))
    torch.testing.assert_close(vq.codebook.grad, expected)
    vq.codebook.grad = None
    q.commitment.sum().backward()
    assert vq.codebook.grad is None
    torch.testing.assert_close(z_e.grad, 2 * (z_e.detach() - e))


def test_loss_functions_are_squared_norms():
    z_e, z_q = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])
    assert float(codebook_loss(z_e, z_q)) == 5.0 == float(commitment_loss(z_e, z_q))


# --- EMA updates ----------------------------------------------------------------------------
# Worked by hand: K = 2 codes in 2-D, decay 0.9, Laplace eps 0.1. Before: N = (2, 1),
# m = ((2, 4), (1, -1)), so e = ((1, 2), (1, -1)). The batch z = (0, 2), (2, 2), (1, -3) goes to
# codes 0, 0, 1: counts n = (2, 1), sums ((2, 4), (1, -3)). Then
#   N <- 0.9 N + 0.1 n = (2, 1);  m <- 0.9 m + 0.1 sums = ((2, 4), (1, -1.2));
#   N~ = (N + 0.1) / (3 + 0.2) * 3 = (63/32, 33/32);
#   e = m / N~ = ((64/63, 128/63), (32/33, -64/55)).
EMA_CODEBOOK = torch.tensor([[64 / 63, 128 / 63], [32 / 33, -64 / 55]], dtype=torch.float64)
BATCH = torch.tensor([[0.0, 2.0], [2.0, 2.0], [1.0, -3.0]], dtype=torch.float64)


def _hand_vq():
    vq = VectorQuantizer(2, 2, decay=0.9, eps=0.1, kmeans_init=0, restart_threshold=0).double()
    vq.ema_count.copy_(torch.tensor([2.0, 1.0]))
    vq.ema_sum.copy_(torch.tensor([[2.0, 4.0], [1.0, -1.0]]))
    vq.codebook.copy_(torch.tensor([[1.0, 2.0], [1.0, -1.0]]))
    return vq


def test_ema_update_equals_the_hand_computed_step():
    count, total, codebook = ema_update(
        torch.tensor([2.0, 1.0], dtype=torch.float64),
        torch.tensor([[2.0, 4.0], [1.0, -1.0]], dtype=torch.float64),
        torch.tensor([2.0, 1.0], dtype=torch.float64),
        torch.tensor([[2.0, 4.0], [1.0, -3.0]], dtype=torch.float64), decay=0.9, eps=0.1)
    torch.testing.assert_close(count, torch.tensor([2.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(total, torch.tensor([[2.0, 4.0], [1.0, -1.2]],
                                                   dtype=torch.float64))
    torch.testing.assert_close(codebook, EMA_CODEBOOK, rtol=0, atol=1e-12)


def test_ema_step_happens_once_per_backpropagated_training_pass():
    vq = _hand_vq()
    with torch.no_grad():  # no gradient: nothing changes
        vq(BATCH.clone().requires_grad_())
    vq.eval()  # eval mode: nothing changes, even when differentiated
    vq(BATCH.clone().requires_grad_()).z_q.sum().backward()
    vq.train()
    q = vq(BATCH.clone().requires_grad_())  # forward alone: nothing changes yet
    assert q.indices.tolist() == [0, 0, 1]
    torch.testing.assert_close(vq.codebook, torch.tensor([[1.0, 2.0], [1.0, -1.0]],
                                                         dtype=torch.float64))
    q.z_q.sum().backward()  # the backward pass applies the step
    torch.testing.assert_close(vq.codebook, EMA_CODEBOOK, rtol=0, atol=1e-12)
    assert torch.equal(q.z_q, torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, -1.0]],
                                           dtype=torch.float64))  # the forward's codes


def test_kmeans_initialisation_and_dead_code_restart():
    torch.manual_seed(3)
    vq = VectorQuantizer(4, 2, kmeans_init=1, restart_threshold=0.5)
    x = torch.cat([torch.randn(50, 2) * 0.1 + c for c in
                   (torch.tensor([5.0, 5.0]), torch.tensor([-5.0, 5.0]),
                    torch.tensor([5.0, -5.0]), torch.tensor([-5.0, -5.0]))])
    vq(x.clone().requires_grad_()).z_q.sum().backward()
    assert bool(vq.initialized)
    # the codebook is the k-means solution of the first batch: one code per cluster
    means = x.reshape(4, 50, 2).mean(1)
    torch.testing.assert_close(vq.codebook[vq.codebook[:, 0].argsort()][:, :1].flatten(),
                               means[means[:, 0].argsort()][:, :1].flatten(), atol=1e-4,
                               rtol=0)
    assert vq.ema_count.tolist() == [50.0] * 4
    # a code no one uses is moved onto a vector of the current batch
    vq.codebook[0] = torch.tensor([100.0, 100.0])
    vq.ema_sum[0] = vq.codebook[0] * vq.ema_count[0]
    vq.ema_count[0] = 0.1
    dead = vq.restart_dead_codes(x)
    assert dead.tolist() == [0]
    assert bool((vq.codebook[0] == x).all(1).any())
    assert float(vq.ema_count[0]) == pytest.approx(50.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_codes": 0}, "num_codes"), ({"decay": 1.0}, "decay"), ({"beta": -1}, "beta"),
    ({"kmeans_init": -1}, "kmeans_init"), ({"restart_threshold": -1}, "restart_threshold"),
])
def test_quantizer_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VectorQuantizer(**kwargs)


def test_quantizer_rejects_inputs_of_the_wrong_size():
    with pytest.raises(ValueError, match="z_e: expected shape"):
        VectorQuantizer(8, 4)(torch.randn(3, 5))


# --- k-means against scikit-learn -------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_matches_scikit_learn_on_the_same_data_and_init(seed):
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, 3)) * rng.uniform(0.5, 2.0, size=3)
    init = x[rng.choice(600, 9, replace=False)]
    sk = KMeans(9, init=init, n_init=1, max_iter=300, tol=0.0, algorithm="lloyd").fit(x)
    ours = kmeans(torch.from_numpy(x), 9, init=torch.from_numpy(init), max_iter=300)
    assert ours.converged
    assert ours.inertia == pytest.approx(sk.inertia_, rel=1e-10)
    assert np.array_equal(ours.labels.numpy(), sk.labels_)
    np.testing.assert_allclose(ours.centers.numpy(), sk.cluster_centers_, rtol=0, atol=1e-10)


def test_kmeans_plus_plus_picks_distinct_data_points():
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    c = kmeans_plus_plus(x, 10, torch.Generator().manual_seed(0))
    assert all(bool((row == x).all(1).any()) for row in c)
    assert len({tuple(r.tolist()) for r in c}) == 10
    with pytest.raises(ValueError, match="k: expected"):
        kmeans_plus_plus(x, 201)


# --- Lloyd-Max against Max (1960), Table I ----------------------------------------------------
# N: (MSE, positive thresholds, positive levels) for the unit normal, as Max printed them (four
# significant figures, kept as text so each value's printed precision is known).
MAX_1960 = {
    2: (0.3634, [], ["0.7980"]),
    4: (0.1175, ["0.9816"], ["0.4528", "1.510"]),
    8: (0.03454, ["0.5006", "1.050", "1.748"], ["0.2451", "0.7560", "1.344", "2.152"]),
    16: (0.009497, ["0.2582", "0.5224", "0.7996", "1.099", "1.437", "1.844", "2.401"],
         ["0.1284", "0.3881", "0.6568", "0.9424", "1.256", "1.618", "2.069", "2.733"]),
}


def _close_to_printed(values, printed):
    """Each value within half a unit of the printed last digit, plus 1e-4 for Max's own
    arithmetic (a few of his last digits are one off: 0.9424 where the conditions give 0.94234)."""
    for v, text in zip(values, printed):
        decimals = len(text.split(".")[1])
        assert abs(v - float(text)) <= 0.5 * 10**-decimals + 1e-4, (v, text)


@pytest.mark.parametrize("n", sorted(MAX_1960))
def test_lloyd_max_reproduces_max_1960_for_the_normal(n):
    mse, thresholds, levels = MAX_1960[n]
    r = lloyd_max(dist.Normal(0.0, 1.0), n)
    assert r.converged
    assert abs(r.mse - mse) < 1e-4
    np.testing.assert_allclose(r.levels.numpy(), -r.levels.flip(0).numpy(), atol=1e-9)
    _close_to_printed(r.levels[n // 2:].tolist(), levels)
    _close_to_printed(r.thresholds[n // 2:].tolist(), thresholds)
    # the fixed point satisfies Max's conditions to high accuracy: N = 2 in closed form
    if n == 2:
        assert float(r.levels[1]) == pytest.approx((2 / np.pi) ** 0.5, abs=1e-9)
        assert r.mse == pytest.approx(1 - 2 / np.pi, abs=1e-9)


def test_lloyd_max_on_samples_is_one_dimensional_kmeans():
    x = torch.randn(4000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    r = lloyd_max(x, 5)
    km = kmeans(x.unsqueeze(1), 5, init=r.levels.unsqueeze(1))  # start at the fixed point
    torch.testing.assert_close(km.centers.squeeze(1), r.levels)
    assert km.inertia / 4000 == pytest.approx(r.mse, rel=1e-12)
    # and it approaches the density's quantiser: MSE within sampling error of 0.0799 (N = 5)
    exact = lloyd_max(dist.Normal(0.0, 1.0), 5).mse
    se = float(((x - r.reconstruct(x)) ** 2).std() / 4000 ** 0.5)
    assert abs(r.mse - exact) < 4 * se


def test_lloyd_max_rejects_bad_sources():
    with pytest.raises(ValueError, match="num_levels"):
        lloyd_max(dist.Normal(0.0, 1.0), 0)
    with pytest.raises(ValueError, match="scalar distribution"):
        lloyd_max(dist.Normal(torch.zeros(2), 1.0), 4)
    with pytest.raises(TypeError, match="source"):
        lloyd_max("normal", 4)
    with pytest.raises(ValueError, match="samples cannot fill"):
        lloyd_max(torch.randn(3), 4)


def test_quantizer_computes_in_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4, ema=False, kmeans_init=0, restart_threshold=0)
    z = torch.randn(64, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = vq(torch.nn.functional.linear(z, torch.eye(4)))  # a bf16 activation, as autocast makes
    ref = vq(z.to(torch.bfloat16).float())
    assert q.z_q.dtype == torch.float32 and q.commitment.dtype == torch.float32
    torch.testing.assert_close(q.commitment, ref.commitment)  # the same fp32 arithmetic
    d = torch.cdist(z.to(torch.bfloat16).float(), vq.codebook.detach())
    assert torch.equal(q.indices, d.argmin(-1))
