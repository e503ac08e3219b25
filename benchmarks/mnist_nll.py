"""Trains pyrovae's VAE and the same VAE in plain PyTorch on MNIST; compares test NLL and time.

Both use Burda et al. (2016)'s network (784-200-200-50, tanh, Bernoulli), all 60,000 training
images with dynamic binarisation, Adam (lr 1e-3, eps 1e-4), the same batch size and the same
initial weights; they differ only in their random streams. The test set (10,000 images,
binarised once) is scored by the importance-weighted bound L_K. The printed NLL is -L_K in nats.

Prints a table, then ``name: value`` lines: ``nll_pyrovae:``, ``nll_torch:``, ``nll_diff:``,
``sec_per_epoch_pyrovae:``, ``sec_per_epoch_torch:``, ``epoch_time_ratio:``.

    python benchmarks/mnist_nll.py --epochs 30            # the spine issue's comparison
    python benchmarks/mnist_nll.py --epochs 2 --train-size 5000 --test-size 1000   # quick look
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import environment, load_data, make_pair, warm_up
from torch_vae import train_epoch

import pyrovae


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--num-samples", type=int, default=1000, help="K of the test bound L_K")
    p.add_argument("--data", default=None, help="pyrovae data spec (default: shared MNIST)")
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--test-size", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    warm_up()
    splits = load_data(args.data, seed=args.seed)
    train, test = splits.train, splits.test
    if args.train_size:
        train = train.subset(torch.arange(args.train_size))
    if args.test_size:
        test = test.subset(torch.arange(args.test_size))
    dev = torch.device(args.device)
    vae, ref = make_pair("burda", train.event_shape, args.seed)
    adam = {"betas": (0.9, 0.999), "eps": 1e-4}

    t0 = time.perf_counter()
    history = pyrovae.fit(vae, train, epochs=args.epochs, batch_size=args.batch_size,
                          optimizer=torch.optim.Adam, lr=args.lr, optimizer_args=adam,
                          device=args.device, seed=args.seed, progress=False)
    pyro_train = time.perf_counter() - t0

    ref.to(dev)
    opt = torch.optim.Adam(ref.parameters(), lr=args.lr, **adam)
    g = torch.Generator(device=dev).manual_seed(args.seed + 1)
    x_train = train.x.to(dev)
    t0 = time.perf_counter()
    torch_losses = [train_epoch(ref, opt, x_train, args.batch_size, g)
                    for _ in range(args.epochs)]
    torch_train = time.perf_counter() - t0

    t0 = time.perf_counter()
    ll_pyro = pyrovae.metrics.log_likelihood(vae, test, args.num_samples, seed=args.seed)
    pyro_eval = time.perf_counter() - t0
    torch.manual_seed(args.seed)
    ref.eval()
    t0 = time.perf_counter()
    x_test = test.x.to(dev)
    ll_torch = torch.cat([ref.log_likelihood(x_test[i:i + 100], args.num_samples).cpu()
                          for i in range(0, len(x_test), 100)])
    torch_eval = time.perf_counter() - t0

    nll_p, nll_t = -ll_pyro.mean().item(), -ll_torch.mean().item()
    se = ((ll_pyro.var() + ll_torch.var()) / len(ll_pyro)).sqrt().item()
    spe_p, spe_t = pyro_train / args.epochs, torch_train / args.epochs
    print(f"{args.epochs} epochs on {len(train)} images, batch {args.batch_size}; "
          f"L_{args.num_samples} on {len(test)} test images; {environment()}")
    print(f"{'':10}{'train loss':>12}{'test NLL':>10}{'s/epoch':>9}{'eval s':>8}")
    print(f"{'pyrovae':10}{history.epochs[-1]['loss']:12.2f}{nll_p:10.2f}{spe_p:9.2f}"
          f"{pyro_eval:8.1f}")
    print(f"{'torch':10}{torch_losses[-1]:12.2f}{nll_t:10.2f}{spe_t:9.2f}{torch_eval:8.1f}")
    print("(Burda et al. 2016 report 86.76 nats for this VAE after 3,280 epochs)")
    print(f"nll_pyrovae: {nll_p:.3f}")
    print(f"nll_torch: {nll_t:.3f}")
    print(f"nll_diff: {nll_p - nll_t:.3f}")
    print(f"nll_diff_se: {se:.3f}")
    print(f"sec_per_epoch_pyrovae: {spe_p:.3f}")
    print(f"sec_per_epoch_torch: {spe_t:.3f}")
    print(f"epoch_time_ratio: {spe_p / spe_t:.3f}")
    return {"nll_pyrovae": nll_p, "nll_torch": nll_t}


if __name__ == "__main__":
    main()
