"""EM, k-means, CAVI, stochastic VI and a categorical VAE on one Gaussian-mixture dataset.

One model family, fitted five ways. Data: K clusters of unit-variance Gaussians in D
dimensions with known means and labels. Each method fits a mixture of K unit-variance
Gaussians and starts from the same K data points, chosen by k-means++ seeding (Arthur and
Vassilvitskii 2007; scikit-learn's ``kmeans_plusplus``), since all five find local optima:

- EM (``pyrovae.vi.em_gaussian_mixture``, fixed unit covariance, learned weights): the E step
  computes the exact posterior over assignments, the M step point estimates of the means;
- k-means: EM with hard assignments (its zero-variance limit);
- CAVI (``pyrovae.vi.cavi`` with ``GaussianMixture``; Blei et al. 2017, §3): a Gaussian
  q(mu_k) and a categorical q(c_i) per point, updated in closed form;
- stochastic VI (``pyrovae.vi.GaussianMixtureSVI``): the same Bayesian model as a Pyro program,
  assignments summed out by TraceEnum_ELBO, mini-batches subsampled from the data plate;
- a VAE (``pyrovae.models.CategoricalVAE``, "deep k-means"): an encoder network amortises the E
  step, gradient steps replace the M step; trained with the exact enumerated ELBO.

Reported per method: adjusted Rand index of the clusters against the true labels, the largest
error of the matched means, and the held-out log-likelihood per point of the fitted mixture
(means and, where learnt, weights), with the time taken. For CAVI also: the number of sweeps,
the smallest change of the ELBO between sweeps (never negative), and the agreement of its
clusters with scikit-learn's ``BayesianGaussianMixture`` (a variational mixture with learnt
covariances and weights).

    python examples/mixture_comparison.py
    python examples/mixture_comparison.py --components 6 --dim 5 --num-data 5000
"""

from __future__ import annotations

import argparse
import math
import time

import pyro
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import kmeans_plusplus
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import BayesianGaussianMixture

import pyrovae
from pyrovae.infer import TraceEnumGuide_ELBO
from pyrovae.models import CategoricalVAE
from pyrovae.vi import GaussianMixture, GaussianMixtureSVI, cavi, em_gaussian_mixture


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--components", type=int, default=4, help="K")
    p.add_argument("--dim", type=int, default=2, help="D")
    p.add_argument("--separation", type=float, default=8.0,
                   help="scale of the true means (drawn N(0, separation^2))")
    p.add_argument("--num-data", type=int, default=2000, help="training points")
    p.add_argument("--epochs", type=int, default=30, help="epochs for SVI and the VAE")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_data(k, d, n, separation, seed):
    g = torch.Generator().manual_seed(seed)
    means = separation * torch.randn(k, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, k, (2 * n,), generator=g)
    x = means[labels] + torch.randn(2 * n, d, generator=g, dtype=torch.float64)
    return means, x[:n], labels[:n], x[n:], labels[n:]


def mixture_log_lik(x, means, log_weights=None) -> float:
    """Mean log p(x_i) under sum_k w_k N(x_i | mu_k, I)."""
    k, d = means.shape
    lw = torch.full((k,), -math.log(k), dtype=torch.float64) if log_weights is None \
        else log_weights.double()
    sq = torch.cdist(x, means.double()) ** 2  # (N, K)
    log_comp = -0.5 * sq - 0.5 * d * math.log(2 * math.pi) + lw
    return float(torch.logsumexp(log_comp, 1).mean())


def mean_error(true, fitted) -> float:
    cost = torch.cdist(true, fitted.double())
    rows, cols = linear_sum_assignment(cost.numpy())
    return float(cost[rows, cols].max())


def main(argv=None) -> dict:
    args = parse_args(argv)
    k, d = args.components, args.dim
    true, x, y, x_test, _ = make_data(k, d, args.num_data, args.separation, args.seed)
    n = x.shape[0]
    start = torch.as_tensor(kmeans_plusplus(x.numpy(), k, random_state=args.seed)[0])  # (K, D)
    fits = {}

    t0 = time.perf_counter()
    em = em_gaussian_mixture(x, k, covariance="fixed", variance=1.0, init_means=start)
    fits["em"] = (em.means, torch.log(em.weights), em.labels, time.perf_counter() - t0)

    t0 = time.perf_counter()
    km = em_gaussian_mixture(x, k, covariance="fixed", variance=1.0, learn_weights=False,
                             hard=True, init_means=start)
    fits["kmeans"] = (km.means, None, km.labels, time.perf_counter() - t0)

    t0 = time.perf_counter()
    gm = GaussianMixture(k, prior_scale=2 * args.separation)
    q = gm.init(x, torch.Generator().manual_seed(args.seed))  # the same K points
    q = {**q, "m": start.clone()}
    cv = cavi(gm, x, init=q, tol=1e-8)
    fits["cavi"] = (cv.q["m"], None, gm.assign(x, cv.q), time.perf_counter() - t0)

    t0 = time.perf_counter()
    pyro.clear_param_store()
    svi = GaussianMixtureSVI(n, k, d, prior_scale=2 * args.separation, init_locs=start)
    pyrovae.fit(svi, x.float(), pyro.infer.TraceEnum_ELBO(max_plate_nesting=1),
                epochs=args.epochs, batch_size=args.batch_size, lr=0.05, seed=args.seed,
                progress=False, log_every=10**9)
    fits["svi"] = (svi.locs.detach(), None, svi.assign(x.float()), time.perf_counter() - t0)

    t0 = time.perf_counter()
    pyro.clear_param_store()
    torch.manual_seed(args.seed)
    vae = CategoricalVAE(input_shape=(d,), num_categories=k, hidden=(32,),
                         likelihood="gaussian", likelihood_args={"scale": 1.0})
    with torch.no_grad():
        vae.prototypes.copy_(start)
    pyrovae.fit(vae, x.float(), TraceEnumGuide_ELBO(max_plate_nesting=1), epochs=args.epochs,
                batch_size=args.batch_size, lr=0.05, seed=args.seed, progress=False,
                log_every=10**9)
    vae_ll = float(pyrovae.metrics.log_likelihood(vae, x_test.float(), 200).mean())
    fits["vae"] = (vae.prototypes.detach(), torch.log_softmax(vae.prior_logits.detach(), -1),
                   vae.cluster_probs(x.float()).argmax(1), time.perf_counter() - t0)

    result = {}
    print(f"{k} components in {d} dimensions, {n} training and {n} test points\n")
    print(f"{'method':8s} {'ARI':>7s} {'max |mu - true|':>16s} {'test log p(x)':>14s} "
          f"{'seconds':>8s}")
    for name, (means, log_w, labels, secs) in fits.items():
        r = {"ari": adjusted_rand_score(y.numpy(), labels.numpy()),
             "mean_error": mean_error(true, means),
             "test_loglik": mixture_log_lik(x_test, means, log_w), "seconds": secs}
        result[name] = r
        print(f"{name:8s} {r['ari']:7.4f} {r['mean_error']:16.4f} {r['test_loglik']:14.4f} "
              f"{secs:8.2f}")
    result["vae"]["importance_loglik"] = vae_ll
    bgm = BayesianGaussianMixture(n_components=k, random_state=args.seed, max_iter=1000)
    bgm_labels = bgm.fit(x.numpy()).predict(x.numpy())
    steps = [b - a for a, b in zip(cv.elbo, cv.elbo[1:])]
    result["cavi"].update(sweeps=cv.sweeps, min_elbo_change=min(steps),
                          ari_vs_sklearn=adjusted_rand_score(bgm_labels,
                                                             fits["cavi"][2].numpy()))
    print(f"\nCAVI: {cv.sweeps} sweeps to |dELBO| < 1e-8, smallest ELBO change between sweeps "
          f"{min(steps):.3g}; ARI against scikit-learn's "
          f"BayesianGaussianMixture {result['cavi']['ari_vs_sklearn']:.4f}")
    print(f"the VAE's own L_200 on the test points: {vae_ll:.4f} (its model is the mixture "
          f"above, so the two agree)\n")
    for name, r in result.items():
        print(f"ari_{name}: {r['ari']:.6f}")
    for name, r in result.items():
        print(f"test_loglik_{name}: {r['test_loglik']:.6f}")
    for name, r in result.items():
        print(f"mean_error_{name}: {r['mean_error']:.6f}")
    print(f"cavi_sweeps: {cv.sweeps}")
    print(f"cavi_min_elbo_change: {min(steps):.6g}")
    print(f"ari_cavi_vs_sklearn_bgm: {result['cavi']['ari_vs_sklearn']:.6f}")
    return result


if __name__ == "__main__":
    main()
