"""VQ-VAE-2 (Razavi et al. 2019): two levels of codes and their two learned priors.

A bottom code map (14x14 for 28x28 MNIST) holds local detail and a top map (7x7) global shape;
the bottom codes are computed from the image *and* the top codes. After the auto-encoder is
trained, a PixelCNN with causal multi-head self-attention learns the top codes, and a PixelCNN
conditioned on the top codes learns the bottom ones. Sampling runs top prior -> bottom prior ->
decoder. Writes to ``--out``:

    samples.png            images decoded from codes drawn from both learned priors
    reconstructions.png    test images beside their reconstructions
    code_usage.png         how often each code of each level is used on the test set
    metrics.json           usage, perplexity, reconstruction MSE and bits per code per level

The defaults are sized for a CPU (about half an hour on two busy cores); on a GPU pass
``--device cuda`` and larger ``--set`` values (e.g. num_codes_top=512, hidden=128).

    python examples/vqvae2.py --data mnist:~/data/mnist.npz --threads 1
    python examples/vqvae2.py --data digits --epochs 30   # 8x8: codes 4x4 and 2x2, no download
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

import pyrovae
from pyrovae import VQVAE2, VQVAE2Config, analysis, metrics
from pyrovae.cli import parse_settings

# CPU-sized defaults; anything here can be overridden with --set.
DEFAULTS = dict(num_codes_top=256, num_codes_bottom=256, code_dim=16, hidden=32, res_hidden=16,
                prior_channels=32, prior_layers=6, prior_kernel=3, prior_attention_heads=4,
                prior_attention_every=3)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data", required=True,
                   help="mnist:PATH (IDX folder or npz), FILE.npz, or digits (embedded 8x8)")
    p.add_argument("--epochs", type=int, default=3, help="VQ-VAE-2 training epochs")
    p.add_argument("--prior-epochs", type=int, default=2, help="epochs of both priors")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="VQVAE2Config entry, e.g. --set hidden=64 (repeatable)")
    p.add_argument("--train-size", type=int, default=None, help="first N training images")
    p.add_argument("--test-size", type=int, default=None, help="first N test images")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/vqvae2", help="folder for figures and metrics")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = pyrovae.data.load(args.data, binarize="dynamic", seed=args.seed, valid_size=0)
    train, test = splits.train, splits.test
    if args.train_size:
        train = train.subset(torch.arange(min(args.train_size, len(train))))
    if args.test_size:
        test = test.subset(torch.arange(min(args.test_size, len(test))))
    torch.manual_seed(args.seed)
    config = VQVAE2Config(input_shape=train.event_shape,
                          **{**DEFAULTS, **parse_settings(args.set, "--set")})
    model = VQVAE2(config)
    out = Path(args.out)

    t0 = time.perf_counter()
    history = pyrovae.fit(model, train, pyrovae.infer.TraceVQ_ELBO(), epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, device=args.device,
                          seed=args.seed, progress=False)
    vq_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.fit_prior(train, epochs=args.prior_epochs, batch_size=args.batch_size, lr=args.lr,
                    seed=args.seed, device=args.device, progress=False)
    prior_seconds = time.perf_counter() - t0

    torch.manual_seed(args.seed)
    samples = analysis.plot_samples(model.sample(args.samples).cpu(), out / "samples.png",
                                    title="VQ-VAE-2: top prior -> bottom prior -> decoder")
    x = test.frozen(args.seed).x[:32].to(args.device)
    analysis.plot_reconstructions(x.cpu(), model.reconstruct(x).cpu(),
                                  out / "reconstructions.png")
    usage = metrics.codebook_usage(model, test, seed=args.seed)
    analysis.plot_code_usage(usage, out / "code_usage.png", title="VQ-VAE-2 code usage")
    bpd = model.prior_bits_per_dim(test, seed=args.seed)
    result = {
        "usage": {k: v["usage"] for k, v in usage.items()},
        "perplexity": {k: v["perplexity"] for k, v in usage.items()},
        "dead_codes": {k: v["dead_codes"] for k, v in usage.items()},
        "recon_mse": float(metrics.reconstruction_mse(model, test, seed=args.seed).mean()),
        "prior_bpd": {k: float(v.mean()) for k, v in bpd.items()},
        "final_train_loss": history.epochs[-1]["loss"],
        "vq_seconds": vq_seconds, "prior_seconds": prior_seconds, "samples": str(samples),
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items()}, indent=2))
    return result


if __name__ == "__main__":
    main()
