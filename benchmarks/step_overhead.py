"""Per-step cost of training pyrovae's VAE against the same network and loss in plain PyTorch.

Both run side by side in one process on the same batch, interleaved, so machine load hits both
alike. Two measurements:

- ``step``: one optimiser step on a fixed batch (zero_grad; Pyro's ``Trace_ELBO.loss_and_grads``
  versus ``loss.backward()``; Adam step);
- ``fit``: the whole training loop per step (``pyrovae.fit`` with batching, dynamic
  binarisation and term logging versus a plain loop doing the same batching).

Prints medians over repeats and, last, ``name: value`` lines ending with ``ratio:`` (pyrovae
step time over plain PyTorch step time).

    python benchmarks/step_overhead.py                      # Burda network, batch 100
    python benchmarks/step_overhead.py --network conv --batch-size 128
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import torch
from _common import environment, load_data, make_pair, warm_up
from torch_vae import train_epoch

import pyrovae


def time_steps(fn, n):
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", default="burda", choices=("burda", "conv"))
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--steps", type=int, default=100, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=7, help="interleaved timed blocks per side")
    p.add_argument("--data", default=None, help="pyrovae data spec (default: shared MNIST)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    warm_up()
    splits = load_data(args.data)
    train = splits.train
    vae, ref = make_pair(args.network, train.event_shape)
    g = torch.Generator().manual_seed(0)
    x = train.batch(torch.arange(args.batch_size), g)["x"]

    elbo = pyro.infer.Trace_ELBO()
    opt_p = torch.optim.Adam(vae.parameters(), lr=1e-3)
    opt_t = torch.optim.Adam(ref.parameters(), lr=1e-3)

    def pyro_step():
        opt_p.zero_grad(set_to_none=True)
        elbo.loss_and_grads(vae.model, vae.guide, x)
        opt_p.step()

    def torch_step():
        opt_t.zero_grad(set_to_none=True)
        ref.loss(x).backward()
        opt_t.step()

    # the whole loop: an epoch-sized slice of the data, args.steps batches
    sub = train.subset(torch.arange(args.steps * args.batch_size))

    def pyro_fit():
        pyrovae.fit(vae, sub, elbo, epochs=1, batch_size=args.batch_size, optimizer="adam",
                    progress=False, seed=None)

    def torch_fit():
        train_epoch(ref, opt_t, sub.x, args.batch_size, g)

    for f in (pyro_step, torch_step):  # warm-up: allocator, lazy imports
        time_steps(f, 10)
    pyro_fit(), torch_fit()
    res = {"pyro_step": [], "torch_step": [], "pyro_fit": [], "torch_fit": []}
    for r in range(args.repeats):
        order = [("pyro", "torch"), ("torch", "pyro")][r % 2]
        for side in order:
            step = pyro_step if side == "pyro" else torch_step
            res[f"{side}_step"].append(time_steps(step, args.steps))
        for side in order:
            t0 = time.perf_counter()
            (pyro_fit if side == "pyro" else torch_fit)()
            res[f"{side}_fit"].append((time.perf_counter() - t0) / args.steps)
    med = {k: statistics.median(v) * 1e3 for k, v in res.items()}
    print(f"network {args.network}, batch {args.batch_size}, {args.steps} steps x "
          f"{args.repeats} repeats; {environment()}")
    print(f"{'':12}{'pyrovae ms':>12}{'torch ms':>12}{'ratio':>8}")
    for kind in ("step", "fit"):
        print(f"{kind:12}{med['pyro_' + kind]:12.3f}{med['torch_' + kind]:12.3f}"
              f"{med['pyro_' + kind] / med['torch_' + kind]:8.3f}")
    print(f"pyrovae_step_ms: {med['pyro_step']:.3f}")
    print(f"torch_step_ms: {med['torch_step']:.3f}")
    print(f"fit_ratio: {med['pyro_fit'] / med['torch_fit']:.3f}")
    print(f"ratio: {med['pyro_step'] / med['torch_step']:.3f}")
    return med


if __name__ == "__main__":
    main()
