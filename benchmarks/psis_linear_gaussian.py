"""Exact-posterior check of the ArviZ export and of per-data-point PSIS.

Model: z ~ N(0, I_q), x | z ~ N(W z + b, sigma^2 I_d), whose posterior N(mu(x), Sigma) and
marginal N(b, W W^T + sigma^2 I) are known. Guides: the exact posterior with its covariance
scaled by c^2. For c < 1 the log weights are (1 - c^2)/2 * chi^2_q plus a constant, a Pareto
tail of shape k = 1 - c^2; for c >= 1 the weights are bounded (exact: constant).

Prints, for the exact guide, the largest z-score of the draws' means against the exact
posterior means (each in units of its Monte-Carlo standard error) and of their pooled
covariance against Sigma; then, per c, the median k-hat, the fraction above 0.7 and the mean
error of the PSIS log p(x) against the exact marginal.

    python benchmarks/psis_linear_gaussian.py            # N = 500 points, S = 2000 draws
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method

from pyrovae import analysis
from pyrovae.analysis.psis import summary

SCALES = (1.0, 1.5, 0.9, 0.7, 0.5, 0.4)


class LinearGaussian(PyroModule):
    """The model above, with the exact posterior (covariance times c^2) as its guide."""

    def __init__(self, W, b, sigma, c=1.0):
        super().__init__()
        self.register_buffer("W", W)
        self.register_buffer("b", b)
        self.sigma, self.c = sigma, c

    @pyro_method
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([self.W.shape[1]]).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.sigma).to_event(1), obs=x)

    @pyro_method
    def guide(self, x):
        q = self.W.shape[1]
        cov = torch.linalg.inv(torch.eye(q) + self.W.T @ self.W / self.sigma**2)  # (q, q)
        mu = (x - self.b) @ self.W @ cov / self.sigma**2  # (N, q)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(mu, self.c**2 * cov))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=500, help="data points")
    p.add_argument("--num-samples", type=int, default=2000, help="guide draws S per point")
    p.add_argument("--d", type=int, default=6)
    p.add_argument("--q", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    g = torch.Generator().manual_seed(args.seed)
    W, b = torch.randn(args.d, args.q, generator=g), torch.randn(args.d, generator=g)
    sigma = 0.7
    x = torch.randn(args.n, args.q, generator=g) @ W.T + b + sigma * torch.randn(
        args.n, args.d, generator=g)
    # exact posterior and marginal by conditioning the joint Gaussian (float64)
    W64, b64, x64 = W.double().numpy(), b.double().numpy(), x.double().numpy()
    C = W64 @ W64.T + sigma**2 * np.eye(args.d)
    K = W64.T @ np.linalg.inv(C)
    mu, cov = (x64 - b64) @ K.T, np.eye(args.q) - K @ W64
    from scipy.stats import multivariate_normal

    log_px = multivariate_normal(b64, C).logpdf(x64)

    idata = analysis.to_inference_data(LinearGaussian(W, b, sigma), x, args.num_samples // 2,
                                       chains=2, predictive=False)
    draws = idata.posterior["z"].values.reshape(-1, args.n, args.q).astype(np.float64)
    m = draws.shape[0]
    z_mean = (draws.mean(0) - mu) / np.sqrt(np.diag(cov) / m)
    dev = (draws - mu).reshape(-1, args.q)
    emp = dev.T @ dev / len(dev)
    z_cov = (emp - cov) / np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / len(dev))
    out = {"max_abs_z_mean": float(np.abs(z_mean).max()),
           "max_abs_z_cov": float(np.abs(z_cov).max())}
    print(f"exact guide, {args.n} points x {m} draws: largest |z| of posterior means "
          f"{out['max_abs_z_mean']:.2f} ({args.n * args.q} comparisons), of covariance entries "
          f"{out['max_abs_z_cov']:.2f}")
    print(f"{'c':>5} {'k=1-c^2':>8} {'median k-hat':>13} {'frac > 0.7':>11} {'frac < 0.5':>11} "
          f"{'PSIS log p(x) error':>20}")
    for c in SCALES:
        r = analysis.psis_diagnostics(LinearGaussian(W, b, sigma, c), x, args.num_samples)
        s = summary(r)
        k = r["khat"].values
        err = float((r["log_px_psis"].values - log_px).mean())
        key = f"c{c:g}".replace(".", "_")
        out.update({f"khat_median_{key}": s["khat_median"],
                    f"frac_khat_gt_0_7_{key}": s["frac_khat_gt_0.7"],
                    f"frac_khat_lt_0_5_{key}": float((k < 0.5).mean()),
                    f"log_px_error_{key}": err})
        theory = 1 - c**2 if c < 1 else math.nan
        print(f"{c:5.2f} {theory:8.2f} {s['khat_median']:13.3f} {s['frac_khat_gt_0.7']:11.3f} "
              f"{(k < 0.5).mean():11.3f} {err:20.4f}")
    for k_, v in out.items():
        print(f"{k_}: {v:.4f}")
    return out


if __name__ == "__main__":
    main()
