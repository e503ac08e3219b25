"""oi-VAE on grouped data with a known latent-to-group pattern.

Six groups of five observed variables; each group is a fixed random nonlinear function of a
known subset of four independent factors (groups 0 and 2 of factor 0, 1 and 2 of factor 1,
3 and 5 of factor 2, 4 and 5 of factor 3). oi-VAE (Ainsworth et al. 2018) gives each group
its own generator on a shared 8-d latent, with a group-lasso prior on the latent-to-group
weights taken by proximal steps. The figure ``pattern_agreement.png`` shows the true pattern
beside the recovered one, :math:`\\|w^{(g)}_{\\cdot j}\\|` for the latent matched to each
factor (the assignment maximising
:math:`\\sum_k \\sum_g \\|w^{(g)}_{\\cdot j_k}\\| (2 P_{gk} - 1)`, P the true pattern), and the
script prints the share of (group, factor) cells where "norm > threshold" agrees with P and
the largest norm among the unmatched latents (which should be switched off). It takes about
10 s on one core.

    python examples/oivae_groups.py
    python examples/oivae_groups.py --lam 0      # no sparsity prior: every latent feeds all
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pyro
import torch

import pyrovae
from pyrovae import analysis, metrics
from pyrovae.infer import ProximalGroupLasso
from pyrovae.models import OIVAE, OIVAEConfig


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3, help="AdamW for everything but W")
    p.add_argument("--lam", type=float, default=24.0,
                   help="group-lasso weight λ, in units of the batch-summed loss")
    p.add_argument("--w-lr", type=float, default=2e-4, help="proximal SGD step on W")
    p.add_argument("--latent-dim", type=int, default=8)
    p.add_argument("--threshold", type=float, default=0.3,
                   help="column norm above which a latent counts as driving a group")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest for these small networks on a busy "
                        "machine; 0 leaves torch's default)")
    p.add_argument("--out", default="runs/oivae_groups")
    return p.parse_args(argv)


def match_latents(norms: np.ndarray, pattern: np.ndarray, threshold: float) -> dict:
    """Matches each true factor k to one latent j_k (distinct), maximising
    ``sum_k sum_g norms[g, j_k] * (2 pattern[g, k] - 1)`` (Hungarian algorithm), and scores the
    match: ``agreement`` is the share of cells (g, k) with ``norms[g, j_k] > threshold`` equal
    to ``pattern[g, k]``; ``unmatched_max`` the largest norm of a latent matched to no factor."""
    from scipy.optimize import linear_sum_assignment

    norms, pattern = np.asarray(norms, float), np.asarray(pattern, bool)
    if norms.ndim != 2 or pattern.ndim != 2 or norms.shape[0] != pattern.shape[0] \
            or norms.shape[1] < pattern.shape[1]:
        raise ValueError(f"norms: expected (G, L) with L >= the {pattern.shape[1]} factors and G "
                         f"= {pattern.shape[0]} groups, got {norms.shape}")
    score = norms.T @ (2.0 * pattern - 1.0)  # (L, F)
    rows, cols = linear_sum_assignment(-score)
    match = [int(j) for j in rows[np.argsort(cols)]]  # latent of each factor
    matched = norms[:, match]  # (G, F)
    others = [j for j in range(norms.shape[1]) if j not in match]
    return {"latent_of_factor": match, "matched_norms": matched,
            "agreement": float(((matched > threshold) == pattern).mean()),
            "unmatched_max": float(norms[:, others].max()) if others else 0.0}


def plot_agreement(pattern, matched, match, threshold, path):
    """The true pattern (left) beside the matched latents' norms (right), cells over the
    threshold outlined."""
    from matplotlib.figure import Figure

    g, f = pattern.shape
    fig = Figure(figsize=(8.4, 0.45 * g + 1.9), layout="constrained")
    panels = ((pattern.astype(float), "true pattern: group g depends on factor k",
               [f"factor {k}" for k in range(f)], "{:.0f}", "1 = depends"),
              (matched, f"learned |w^(g)_j| of the latent matched to each factor\n"
               f"(outlined: > threshold {threshold:g})",
               [f"z[{j}] ~ factor {k}" for k, j in enumerate(match)], "{:.2f}",
               "column norm |w^(g)_j|"))
    for i, (m, title, cols, fmt, cbar) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        im = ax.imshow(m, cmap="viridis", vmin=0, aspect="auto")
        fig.colorbar(im, ax=ax, label=cbar)
        ax.set_xticks(range(f), cols, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(g), [f"group {r}" for r in range(g)], fontsize=8)
        ax.set_xlabel("true factor" if i == 0 else "latent (matched factor)")
        ax.set_ylabel("observed group")
        ax.set_title(title, fontsize=9)
        for (r, c), v in np.ndenumerate(m):
            ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=7,
                    color="black" if v > 0.6 * max(m.max(), 1e-12) else "white")
            if i == 1 and v > threshold:
                ax.add_patch(_outline(c, r))
    fig.savefig(path, dpi=120)
    return path


def _outline(c, r):
    from matplotlib.patches import Rectangle

    return Rectangle((c - 0.46, r - 0.46), 0.92, 0.92, fill=False, edgecolor="red", lw=1.2)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads < 0:
        raise SystemExit(f"--threads: expected an integer >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = pyrovae.data.grouped_factors(args.n + 1000, seed=args.seed)
    x = torch.from_numpy(data["x"])
    train, test = x[:args.n], x[args.n:]
    pyro.set_rng_seed(args.seed)
    model = OIVAE(OIVAEConfig(group_sizes=data["group_sizes"], latent_dim=args.latent_dim))
    prox = ProximalGroupLasso(model.W, lam=args.lam, lr=args.w_lr, dim=1)
    pyrovae.fit(model, train, pyro.infer.TraceMeanField_ELBO(), epochs=args.epochs,
                batch_size=args.batch_size, lr=args.lr, optimizer="adamw",
                optimizer_args={"weight_decay": 1e-2}, callbacks=[prox], seed=args.seed)
    norms = model.group_weight_norms().numpy()  # (G, L)
    used = norms > args.threshold
    supports = sorted(tuple(int(g) for g in np.flatnonzero(c)) for c in used.T if c.any())
    truth = sorted(tuple(int(g) for g in np.flatnonzero(c)) for c in data["pattern"].T)
    elbo = metrics.summary(metrics.elbo(model, test, num_samples=10))
    # the best model with independent Gaussian coordinates, fitted to the training data
    mu, sd = train.mean(0), train.std(0, unbiased=False)
    indep = float(torch.distributions.Normal(mu, sd).log_prob(test).sum(1).mean())

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    groups = [f"group {g}" for g in range(len(norms))]
    n_factors = data["pattern"].shape[1]
    analysis.plot_matrix(norms, out / "latent_to_group.png", row_labels=groups,
                         col_labels=[f"z[{j}]" for j in range(norms.shape[1])],
                         title="learned latent-to-group weight norms |w^(g)_j|",
                         xlabel="latent dimension", ylabel="observed group",
                         cbar_label="column norm |w^(g)_j|")
    analysis.plot_matrix(data["pattern"].astype(float), out / "true_pattern.png",
                         row_labels=groups, col_labels=[f"factor {k}" for k in range(n_factors)],
                         title="true pattern (1: group g depends on factor k)",
                         xlabel="true factor", ylabel="observed group", fmt="{:.0f}",
                         cbar_label="depends (1) or not (0)")
    m = match_latents(norms, data["pattern"], args.threshold)
    plot_agreement(data["pattern"], m["matched_norms"], m["latent_of_factor"], args.threshold,
                   out / "pattern_agreement.png")
    result = {"recovered_supports": supports, "true_supports": truth,
              "recovered": supports == truth, "norms": norms.tolist(), "test_elbo": elbo,
              "independent_gaussian_log_lik": indep, "agreement": m["agreement"],
              "latent_of_factor": m["latent_of_factor"], "unmatched_max_norm": m["unmatched_max"]}
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    np.set_printoptions(precision=2, suppress=True)
    print("latent-to-group norms |w^(g)_j| (rows: groups):")
    print(norms)
    print(f"groups driven by each used latent: {supports}")
    print(f"groups of each true factor:        {truth}  -> recovered: {supports == truth}")
    print(f"test ELBO {elbo['mean']:.2f} nats (independent Gaussians: {indep:.2f})")
    print(f"figure: {out / 'pattern_agreement.png'} (true pattern beside the matched latents)")
    print(f"latent_of_factor: {m['latent_of_factor']}")
    print(f"agreement: {m['agreement']:.4f}")
    print(f"unmatched_max_norm: {m['unmatched_max']:.4f}")
    print(f"recovered: {supports == truth}")
    return result


if __name__ == "__main__":
    main()
