"""Lloyd-Max scalar quantisers (Max 1960) and their Voronoi cells.

For a density on the line the optimal N-level quantiser satisfies two conditions: each decision
threshold lies halfway between neighbouring reconstruction levels (the nearest-neighbour rule:
cells are Voronoi regions), and each level is the mean of its cell (the centroid rule).
Alternating them is Lloyd's algorithm, which in several dimensions with data points instead of a
density is k-means - the quantiser inside a VQ-VAE.

This script quantises N(0, 1) with N = 2, 4, 8, 16 levels and prints the mean squared error
next to Max's Table I (0.3634, 0.1175, 0.03454, 0.009497), then repeats the N = 8 design from
samples (1-D k-means) and draws the density with its cells and levels.

    python examples/lloyd_max.py
    python examples/lloyd_max.py --source laplace --levels 2 4 8 --samples 100000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyro.distributions as dist
import torch
from matplotlib.figure import Figure

from pyrovae.quantize import kmeans, lloyd_max

MAX_1960_MSE = {2: 0.3634, 4: 0.1175, 8: 0.03454, 16: 0.009497}  # Max (1960), Table I
SOURCES = {
    "normal": lambda: dist.Normal(0.0, 1.0),
    "laplace": lambda: dist.Laplace(0.0, 2**-0.5),  # unit variance
    "uniform": lambda: dist.Uniform(-3**0.5, 3**0.5),  # unit variance
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--source", choices=sorted(SOURCES), default="normal",
                   help="unit-variance density to quantise")
    p.add_argument("--levels", type=int, nargs="+", default=[2, 4, 8, 16])
    p.add_argument("--samples", type=int, default=20000,
                   help="samples for the data-driven (k-means) design")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/lloyd_max", help="folder for the figure and table")
    return p.parse_args(argv)


def plot(d, result, sample_result, path: Path):
    x = torch.linspace(-4, 4, 801, dtype=torch.float64)
    fig = Figure(figsize=(7, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(x, d.log_prob(x).exp(), color="black", label="density")
    for i, t in enumerate(result.thresholds.tolist()):
        ax.axvline(t, color="tab:blue", ls="--", lw=0.8,
                   label="thresholds (Voronoi cell edges)" if i == 0 else None)
    ax.plot(result.levels, torch.zeros_like(result.levels), "o", color="tab:red",
            label=f"levels, density (MSE {result.mse:.5f})")
    ax.plot(sample_result.levels, torch.full_like(sample_result.levels, 0.02), "x",
            color="tab:green", label=f"levels, k-means on samples (MSE {sample_result.mse:.5f})")
    ax.set_xlabel("source value x")
    ax.set_ylabel("density p(x)")
    ax.set_title(f"Lloyd-Max quantiser, N = {len(result.levels)}")
    ax.set_ylim(-0.02, 0.62)
    ax.legend(fontsize="small", loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def main(argv=None) -> dict:
    args = parse_args(argv)
    d = SOURCES[args.source]()
    rows = {}
    print(f"{'N':>3}  {'MSE':>10}  {'Max 1960':>9}  iterations")
    for n in args.levels:
        r = lloyd_max(d, n)
        ref = MAX_1960_MSE.get(n) if args.source == "normal" else None
        rows[n] = {"mse": r.mse, "max_1960": ref, "thresholds": r.thresholds.tolist(),
                   "levels": r.levels.tolist(), "iterations": r.n_iter}
        print(f"{n:>3}  {r.mse:>10.6f}  {ref if ref is not None else '-':>9}  {r.n_iter}")
    n = 8 if 8 in args.levels else args.levels[-1]
    g = torch.Generator().manual_seed(args.seed)
    samples = d.sample((args.samples,)) if not hasattr(d, "icdf") else \
        d.icdf(torch.rand(args.samples, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12))
    from_samples = lloyd_max(samples, n)
    # k-means (the vector quantiser) on the same samples reaches the same fixed point
    km = kmeans(samples.unsqueeze(1), n, init=from_samples.levels.unsqueeze(1))
    out = Path(args.out)
    figure = plot(d, lloyd_max(d, n), from_samples, out / "lloyd_max.png")
    result = {"source": args.source, "levels": rows,
              "samples": {"n": args.samples, "levels": n, "mse": from_samples.mse,
                          "kmeans_mse": km.inertia / args.samples},
              "figure": str(figure)}
    (out / "lloyd_max.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"N = {n} from {args.samples} samples: MSE {from_samples.mse:.6f} "
          f"(k-means: {km.inertia / args.samples:.6f}); figure: {figure}")
    return result


if __name__ == "__main__":
    main()
