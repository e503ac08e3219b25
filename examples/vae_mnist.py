"""Burda et al. (2016)'s one-stochastic-layer VAE on dynamically binarised MNIST.

Network 784-200-200-50 with tanh, Bernoulli likelihood, Adam (betas (0.9, 0.999); eps
``--adam-eps``, by default torch's 1e-8 as ``pyrovae train`` uses it, the paper's 1e-4 with
``--full``), trained on all 60,000 training images with dynamic binarisation and evaluated by
the importance-weighted bound L_K on the 10,000 test images. On MNIST the paper reports
log p(x) >= -86.76 nats (VAE, k = 1, their Table 1) after 3,280 epochs.

Small defaults (batch 100, 10 epochs) finish in minutes on a laptop CPU; ``--full`` runs the
paper's protocol (minibatch 20, 3,280 epochs under its learning-rate schedule, then L_5000).

    python examples/vae_mnist.py --data mnist:~/data/mnist          # IDX folder or npz
    python examples/vae_mnist.py --data mnist:~/data/mnist --full --device cuda
    python examples/vae_mnist.py --data digits --epochs 50          # no download: 8x8 digits
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import pyro
import torch

import pyrovae
from pyrovae import VAE, VAEConfig, analysis, metrics


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data", required=True,
                   help="mnist:PATH (folder of IDX files, or npz with x_train/y_train/x_test/"
                        "y_test), torchvision:MNIST:ROOT, or digits (embedded 8x8, no download)")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training set")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--adam-eps", type=float, default=None,
                   help="Adam's eps (default 1e-8, torch's and pyrovae train's; 1e-4, the "
                        "paper's, with --full); pyrovae train takes it as --optimizer-arg eps=")
    p.add_argument("--num-samples", type=int, default=1000, help="K for the test bound L_K")
    p.add_argument("--train-size", type=int, default=None,
                   help="train on the first N training images only (quick runs)")
    p.add_argument("--test-size", type=int, default=None,
                   help="evaluate on the first N test images only")
    p.add_argument("--full", action="store_true",
                   help="the paper's protocol: batch 20, 3,280 epochs, its lr schedule, L_5000")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/vae_mnist", help="folder for figures and metrics")
    return p.parse_args(argv)


def is_mnist(spec: str) -> bool:
    """Whether the data spec names MNIST itself (not Fashion-MNIST or KMNIST, which the
    ``mnist:`` loader also reads): the only data the paper's figure is for."""
    name, _, arg = spec.partition(":")
    if name == "torchvision":
        return arg.partition(":")[0] == "MNIST"
    return name == "mnist" and not any(w in arg.lower() for w in ("fashion", "kmnist"))


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.full:
        args.epochs, args.num_samples, args.batch_size = 3280, 5000, 20
    if args.adam_eps is None:
        args.adam_eps = 1e-4 if args.full else 1e-8
    # Burda et al. train on all 60,000 images: no validation split.
    splits = pyrovae.data.load(args.data, binarize="dynamic", seed=args.seed, valid_size=0)
    train, test = splits.train, splits.test
    if args.train_size:
        train = train.subset(torch.arange(min(args.train_size, len(train))))
    if args.test_size:
        test = test.subset(torch.arange(min(args.test_size, len(test))))

    vae = VAE(VAEConfig(input_shape=train.event_shape, latent_dim=50, hidden=(200, 200),
                        activation="tanh", likelihood="bernoulli"))
    t0 = time.perf_counter()
    history = pyrovae.fit(
        vae, train, pyro.infer.Trace_ELBO(), epochs=args.epochs, batch_size=args.batch_size,
        optimizer=torch.optim.Adam, lr=args.lr,
        optimizer_args={"betas": (0.9, 0.999), "eps": args.adam_eps},
        lr_schedule="burda" if args.full else None, device=args.device, seed=args.seed)
    train_seconds = time.perf_counter() - t0

    r = metrics.importance_sampling(vae, test, args.num_samples, seed=args.seed)
    ll, el = metrics.summary(r["log_likelihood"]), metrics.summary(r["elbo"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    batch = test.batch(torch.arange(min(32, len(test)), device=test.device))
    x = batch["x"].to(args.device)
    analysis.plot_reconstructions(x, vae.reconstruct(x), out / "reconstructions.png")
    analysis.plot_samples(vae.sample(64), out / "samples.png")
    analysis.plot_history(history, out / "loss.png")
    result = {
        "test_log_likelihood": ll, "test_elbo": el, "num_samples": args.num_samples,
        "epochs": args.epochs, "train_seconds": train_seconds, "adam_eps": args.adam_eps,
    }
    mnist = is_mnist(args.data)
    if mnist:
        result["paper_log_likelihood"] = -86.76
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"test log p(x) >= L_{args.num_samples} = {ll['mean']:.2f} +- {ll['se']:.2f} nats "
          f"(ELBO {el['mean']:.2f})" + ("; on MNIST Burda et al. report -86.76 after 3,280 "
                                       "epochs" if mnist else ""))
    print(f"figures and metrics in {out}")
    return result


if __name__ == "__main__":
    main()
