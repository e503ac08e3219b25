"""Disentangling objectives on procedural dSprites, scored by MIG and drawn as figures.

One VAE (MLP 4096-256-256, a 10-d code, Bernoulli pixels) trained with one of

- ``vae``       the ELBO (Kingma and Welling 2014);
- ``beta``      β-VAE, β = 4 (Higgins et al. 2017), by scaling the latent sites;
- ``warmup``    the ELBO with linear KL warm-up over the first half (Sønderby et al. 2016);
- ``capacity``  γ|KL - C| with C rising to 25 nats (Burgess et al. 2018);
- ``tcvae``     β-TCVAE, β = 6, minibatch-stratified sampling (Chen et al. 2018);
- ``infovae``   InfoVAE with an MMD term, α = 0, λ = 100 (Zhao et al. 2019);

then scored on fresh images: MIG (Chen et al.'s estimator and the histogram variant), active
units, KL per dimension, the test ELBO. Figures: latent traversals, KL bars, the MIG matrix.
At the defaults (20,000 images, 3,000 steps of 128: about 90 s on one CPU thread) β-TCVAE
reaches MIG ≈ 0.1: scale and posY each mostly in one dimension, posX shared by two, shape
and orientation not encoded (benchmarks/RESULTS.md has every objective over three seeds).

    python examples/disentangle_dsprites.py --objective tcvae
    python examples/disentangle_dsprites.py --objective beta --steps 20000 --n 100000

Everything is generated in the library (``pyrovae.data.DSprites``): no download.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import pyro
import torch

import pyrovae
from pyrovae import analysis, infer, metrics
from pyrovae.data import DSprites

OBJECTIVES = ("vae", "beta", "warmup", "capacity", "tcvae", "infovae")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--objective", default="tcvae", choices=OBJECTIVES)
    p.add_argument("--n", type=int, default=20000, help="training images")
    p.add_argument("--eval-n", type=int, default=3000, help="fresh images for the scores")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/disentangle_dsprites")
    return p.parse_args(argv)


def objective(name: str, steps: int, n_train: int):
    """(loss, callbacks) for an objective name."""
    if name == "vae":
        return pyro.infer.Trace_ELBO(), []
    if name == "beta":
        return pyro.infer.Trace_ELBO(), [infer.Beta(4.0)]
    if name == "warmup":
        return pyro.infer.Trace_ELBO(), [infer.KLWarmup(max(steps // 2, 1))]
    if name == "capacity":
        return infer.TraceCapacity_ELBO(25.0, gamma=1000.0, steps=steps), []
    if name == "tcvae":
        return infer.TraceTC_ELBO(1.0, 6.0, 1.0, estimator="mss", dataset_size=n_train), []
    if name == "infovae":
        return infer.TraceMMD_ELBO(alpha=0.0, lam=100.0), []
    raise ValueError(f"objective: expected one of {OBJECTIVES}, got {name!r}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ds = DSprites()
    x, _ = ds.subset(args.n, seed=args.seed)
    f_eval = ds.sample_factors(args.eval_n, torch.Generator().manual_seed(10_000 + args.seed))
    x_eval = ds.images(f_eval)
    pyro.set_rng_seed(args.seed)
    vae = pyrovae.VAE(pyrovae.VAEConfig(input_shape=(1, 64, 64), latent_dim=args.latent_dim,
                                        hidden=tuple(args.hidden), activation="relu"))
    loss, callbacks = objective(args.objective, args.steps, len(x))
    t0 = time.perf_counter()
    history = pyrovae.fit(vae, x, loss, steps=args.steps, batch_size=args.batch_size,
                          lr=args.lr, seed=args.seed, callbacks=callbacks)
    train_seconds = time.perf_counter() - t0

    mom = metrics.posterior_moments(vae, x_eval)
    mig = metrics.mig(mom["loc"], mom["scale"], f_eval, num_samples=len(x_eval))
    mig_h = metrics.mig_histogram(mom["loc"], f_eval)
    kl = metrics.per_dimension_kl(vae, x_eval)  # (N, L)
    au = metrics.active_units(mom["loc"])
    elbo = metrics.summary(metrics.elbo(vae, x_eval, num_samples=1))
    # the best model of independent pixels: each pixel Bernoulli with its frequency in training
    p = x.mean(0).clamp(1e-6, 1 - 1e-6)
    pixel_nll = float(-(x_eval * p.log() + (1 - x_eval) * (1 - p).log()).sum((1, 2, 3)).mean())

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    analysis.plot_traversals(vae, {"x": x_eval[:1]}, out / "traversals.png",
                             values=torch.linspace(-2.5, 2.5, 9))
    analysis.plot_kl_per_dimension(kl, out / "kl_per_dimension.png")
    analysis.plot_mi_matrix(mig["normalized_mi"], out / "mig_matrix.png",
                            factor_names=DSprites.factor_names,
                            title=f"{args.objective}: MIG {mig['mig']:.3f}")
    analysis.plot_history(history, out / "loss.png")
    result = {
        "objective": args.objective, "steps": args.steps, "n": args.n,
        "mig": mig["mig"], "mig_per_factor": dict(zip(DSprites.factor_names,
                                                      mig["per_factor"].tolist())),
        "mig_histogram": mig_h["mig"], "active_units": au["count"],
        "kl_per_dimension": kl.mean(0).tolist(), "test_elbo": elbo,
        "independent_pixel_nll": pixel_nll, "train_seconds": train_seconds,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.objective}: MIG {mig['mig']:.3f} (histogram {mig_h['mig']:.3f}), "
          f"{au['count']} active units, KL {float(kl.mean(0).sum()):.1f} nats, test ELBO "
          f"{elbo['mean']:.1f} (independent pixels: {-pixel_nll:.1f})")
    print("MIG per factor: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                         result["mig_per_factor"].items()
                                         if not math.isnan(v)))
    print(f"figures and metrics in {out}")
    return result


if __name__ == "__main__":
    main()
