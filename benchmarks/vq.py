"""VQ-VAE on MNIST: codebook usage, perplexity, reconstruction error and the learned prior.

Trains pyrovae's VQ-VAE (K = 512 codes of size 16 on a 7x7 map, EMA codebook with k-means
initialisation and dead-code restarts) on all 60,000 dynamically binarised training images,
then fits a gated PixelCNN prior to the training codes. Measured on the 10,000 test images
(binarised once):

- ``usage``: fraction of the 512 codes used at least once; ``perplexity``: exp of the entropy
  of the code frequencies; ``dead_codes``: codes never used;
- ``recon_mse``: mean squared error per pixel between x and E[x | z_q(x)];
- ``prior_bpd``: the PixelCNN prior's bits per code position, -log2 p(k) / 49;
- ``nll_uniform_prior`` / ``nll_learned_prior``: -log p(x, k*), the point-mass-guide bound on
  -log p(x) in nats, with the training-time uniform prior and with the learned one.

``step_ratio`` compares one training step of the Pyro program (Trace_ELBO with the guide
factors) with the same networks and loss written in plain PyTorch, interleaved in this process.
The figures are printed last as ``name: value`` lines; the prior-sample grid, code-usage
histogram and reconstructions go to ``--out``.

    python benchmarks/vq.py                      # MNIST from ../shared/data/mnist.npz
    python benchmarks/vq.py --data mnist:PATH --epochs 4 --prior-epochs 3 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from _common import environment, load_data, warm_up

import pyrovae
from pyrovae import VQVAE, VQVAEConfig, analysis, metrics


def torch_loss(model: VQVAE, x: torch.Tensor) -> torch.Tensor:
    """The VQ-VAE loss of van den Oord et al. (2017, eq. 3) written directly on pyrovae's
    networks: Bernoulli reconstruction, the constant KL h w log K, beta * commitment (EMA
    codebook: no codebook term), summed over the batch as Pyro does."""
    q = model.quantizer(model.encode(x))  # straight-through codes (B, h, w, D)
    logits = model.decode(q.z_q)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = x.shape[0] * math.prod(model.code_shape) * math.log(model.config.num_codes)
    return recon + kl + model.config.beta * q.commitment.sum()


def time_steps(model: VQVAE, x: torch.Tensor, steps: int = 10, repeats: int = 3
               ) -> tuple[float, float]:
    """Median ms per step of Trace_ELBO on the Pyro program and of :func:`torch_loss`,
    interleaved (on a copy of the model, so training is not disturbed)."""
    import copy

    warm_up()
    elbo = pyro.infer.Trace_ELBO()
    times = {"pyro": [], "torch": []}
    for _ in range(repeats):
        for name in ("pyro", "torch"):
            m = copy.deepcopy(model).train()
            opt = torch.optim.Adam(m.parameters(), lr=1e-4)
            t0 = time.perf_counter()
            for _ in range(steps):
                opt.zero_grad()
                if name == "pyro":
                    elbo.loss_and_grads(m.model, m.guide, x)
                else:
                    torch_loss(m, x).backward()
                opt.step()
            times[name].append((time.perf_counter() - t0) / steps * 1000)
    return statistics.median(times["pyro"]), statistics.median(times["torch"])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="pyrovae data spec (default: shared MNIST)")
    p.add_argument("--epochs", type=int, default=4, help="VQ-VAE epochs")
    p.add_argument("--prior-epochs", type=int, default=3,
                   help="PixelCNN prior epochs (0: no prior, for codebook ablations)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--num-codes", type=int, default=512)
    p.add_argument("--code-dim", type=int, default=16)
    p.add_argument("--downsample", type=int, default=2, help="stride-2 convs (28 -> 7)")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--prior-channels", type=int, default=32)
    p.add_argument("--prior-layers", type=int, default=8)
    p.add_argument("--prior-kernel", type=int, default=3)
    p.add_argument("--prior-attention-heads", type=int, default=0)
    p.add_argument("--no-ema", action="store_true", help="codebook loss instead of EMA")
    p.add_argument("--kmeans-init", type=int, default=1, help="batches for k-means (0: off)")
    p.add_argument("--restart-threshold", type=float, default=1.0, help="0: no restarts")
    p.add_argument("--train-size", type=int, default=None, help="first N training images")
    p.add_argument("--test-size", type=int, default=None, help="first N test images")
    p.add_argument("--timing-steps", type=int, default=10, help="steps per timing block")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench-vq", help="folder for the figures")
    args = p.parse_args(argv)
    logging.getLogger("pyrovae").setLevel(logging.INFO)  # epoch lines on stderr
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = load_data(args.data, args.seed)
    train, test = splits.train, splits.test
    if args.train_size:
        train = train.subset(torch.arange(min(args.train_size, len(train))))
    if args.test_size:
        test = test.subset(torch.arange(min(args.test_size, len(test))))
    out = Path(args.out)
    print(environment())

    torch.manual_seed(args.seed)
    model = VQVAE(VQVAEConfig(
        input_shape=train.event_shape, num_codes=args.num_codes, code_dim=args.code_dim,
        downsample=args.downsample, hidden=args.hidden, res_hidden=max(args.hidden // 2, 1),
        prior_channels=args.prior_channels, prior_layers=args.prior_layers,
        prior_kernel=args.prior_kernel, prior_attention_heads=args.prior_attention_heads,
        ema=not args.no_ema, kmeans_init=args.kmeans_init,
        restart_threshold=args.restart_threshold))
    probe = train.frozen(args.seed).x[:args.batch_size]
    pyro_ms, torch_ms = time_steps(model, probe, args.timing_steps)

    t0 = time.perf_counter()
    history = pyrovae.fit(model, train, pyrovae.infer.TraceVQ_ELBO(), epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          progress=False)
    vq_seconds = time.perf_counter() - t0
    usage = metrics.codebook_usage(model, test, seed=args.seed)["codes"]
    mse = metrics.reconstruction_mse(model, test, seed=args.seed)
    nll_uniform = -metrics.log_likelihood(model, test, 1, seed=args.seed)

    prior_seconds, bpd, nll_learned = 0.0, torch.full((1,), math.nan), torch.full((1,), math.nan)
    if args.prior_epochs > 0:
        t0 = time.perf_counter()
        model.fit_prior(train, epochs=args.prior_epochs, batch_size=args.batch_size,
                        lr=args.lr, seed=args.seed, progress=False)
        prior_seconds = time.perf_counter() - t0
        bpd = model.prior_bits_per_dim(test, seed=args.seed)["total"]
        nll_learned = -metrics.log_likelihood(model, test, 1, seed=args.seed)
        torch.manual_seed(args.seed)
        analysis.plot_samples(model.sample(64), out / "prior_samples.png",
                              title="VQ-VAE: codes from the PixelCNN prior")
    analysis.plot_code_usage({"codes": usage}, out / "code_usage.png")
    x = test.frozen(args.seed).x[:32]
    analysis.plot_reconstructions(x, model.reconstruct(x), out / "reconstructions.png")

    def se(v):
        return float(v.double().std() / len(v) ** 0.5)

    result = {
        "usage": usage["usage"], "perplexity": usage["perplexity"],
        "dead_codes": usage["dead_codes"],
        "recon_mse": float(mse.mean()), "recon_mse_se": se(mse),
        "prior_bpd": float(bpd.mean()), "prior_bpd_se": se(bpd),
        "nll_uniform_prior": float(nll_uniform.mean()),
        "nll_learned_prior": float(nll_learned.mean()), "nll_learned_prior_se": se(nll_learned),
        "final_train_loss": history.epochs[-1]["loss"],
        "vq_seconds_per_epoch": vq_seconds / args.epochs,
        "prior_seconds_per_epoch": prior_seconds / max(args.prior_epochs, 1),
        "pyrovae_step_ms": pyro_ms, "torch_step_ms": torch_ms, "step_ratio": pyro_ms / torch_ms,
    }
    print(f"figures in {out}: prior_samples.png, code_usage.png, reconstructions.png")
    for k, v in result.items():
        print(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}")
    return result


if __name__ == "__main__":
    main()
