"""Per-step cost of training pyrovae's VAE against the same network and loss in plain PyTorch.

Cases: ``mlp`` (Burda et al. 2016's 784-200-200-50 network, batch 100) and ``conv`` (a conv
VAE on 28x28, batch 128), each on ``cpu`` and ``cuda`` (skipped, with the reason printed, when
no GPU is visible). In each case both sides run in one process on the same batch, interleaved,
so machine load hits both alike. Two measurements:

- ``step``: one optimiser step on a fixed batch (zero_grad; Pyro's ``Trace_ELBO.loss_and_grads``
  versus ``loss.backward()``; Adam step);
- ``fit``: the whole training loop per step (``pyrovae.fit`` with batching, dynamic
  binarisation and term logging versus a plain loop doing the same batching).

Prints a table of medians over repeats and, last, ``name: value`` lines ending with one
``ratio_<case>:`` line per case run (pyrovae step time over plain PyTorch step time).

    python benchmarks/step_overhead.py                        # all four cases
    python benchmarks/step_overhead.py --cases mlp_cpu conv_cpu --repeats 11
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import torch
from _common import StepPair, environment, load_data, make_pair, warm_up
from torch_vae import train_epoch

import pyrovae

NETWORK = {"mlp": "burda", "conv": "conv"}  # case prefix -> _common.NETWORKS entry
BATCH = {"mlp": 100, "conv": 128}  # the batch sizes
CASES = tuple(f"{n}_{d}" for n in NETWORK for d in ("cpu", "cuda"))


def time_steps(fn, n, device):
    """Mean seconds per call of ``fn`` over ``n`` calls (CUDA work included: synchronised)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - t0) / n


def skip_reason(case: str) -> str | None:
    if case.endswith("_cuda") and not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return None


def measure(case, train, batch_size, steps, repeats):
    """Medians (ms per step) of ``pyro_step``, ``torch_step``, ``pyro_fit``, ``torch_fit``."""
    network, dev = NETWORK[case.split("_")[0]], torch.device(case.split("_")[1])
    vae, ref = make_pair(network, train.event_shape)
    vae.to(dev), ref.to(dev)
    train = train.to(dev)
    g = torch.Generator(device=dev).manual_seed(0)
    x = train.batch(torch.arange(batch_size, device=dev), g)["x"]

    pair = StepPair(vae, ref, x)
    pyro_step, torch_step = pair.pyro, pair.torch

    # the whole loop: an epoch-sized slice of the data, `steps` batches
    sub = train.subset(torch.arange(steps * batch_size, device=dev))

    def pyro_fit():
        pyrovae.fit(vae, sub, pair.elbo, epochs=1, batch_size=batch_size, optimizer="adam",
                    progress=False, seed=None, device=dev)

    def torch_fit():
        train_epoch(ref, pair.opt_t, sub.x, batch_size, g)

    with pyro.validation_enabled(False):  # as fit runs every step after its first
        for f in (pyro_step, torch_step):  # warm-up: allocator, lazy imports, CUDA kernels
            time_steps(f, 10, dev)
        pyro_fit(), torch_fit()
        res = {"pyro_step": [], "torch_step": [], "pyro_fit": [], "torch_fit": []}
        for r in range(repeats):
            order = [("pyro", "torch"), ("torch", "pyro")][r % 2]
            for side in order:
                step = pyro_step if side == "pyro" else torch_step
                res[f"{side}_step"].append(time_steps(step, steps, dev))
            for side in order:
                fit_fn = pyro_fit if side == "pyro" else torch_fit
                res[f"{side}_fit"].append(time_steps(fit_fn, 1, dev) / steps)
    return {k: statistics.median(v) * 1e3 for k, v in res.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p.add_argument("--batch-size", type=int, default=None,
                   help="one batch size for every case (default: mlp 100, conv 128)")
    p.add_argument("--steps", type=int, default=100, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=7, help="interleaved timed blocks per side")
    p.add_argument("--data", default=None, help="pyrovae data spec (default: shared MNIST)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    warm_up()
    train = load_data(args.data).train
    results, batches = {}, {}
    for case in args.cases:
        reason = skip_reason(case)
        if reason is not None:
            print(f"{case}: skipped, {reason}")
            continue
        batches[case] = args.batch_size or BATCH[case.split("_")[0]]
        results[case] = measure(case, train, batches[case], args.steps, args.repeats)

    print(f"{args.steps} steps x {args.repeats} interleaved repeats; {environment()}")
    if torch.cuda.is_available() and any(c.endswith("_cuda") for c in results):
        print(f"cuda: {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}")
    print(f"{'case':10}{'batch':>7}{'pyrovae ms':>12}{'torch ms':>10}{'step ratio':>12}"
          f"{'fit ratio':>11}")
    ratios = {}
    for case, med in results.items():
        ratios[case] = (med["pyro_step"] / med["torch_step"], med["pyro_fit"] / med["torch_fit"])
        print(f"{case:10}{batches[case]:7d}{med['pyro_step']:12.3f}{med['torch_step']:10.3f}"
              f"{ratios[case][0]:12.3f}{ratios[case][1]:11.3f}")
    for case, med in results.items():
        print(f"pyrovae_step_ms_{case}: {med['pyro_step']:.4f}")
        print(f"torch_step_ms_{case}: {med['torch_step']:.4f}")
        print(f"fit_ratio_{case}: {ratios[case][1]:.4f}")
    for case in results:
        print(f"ratio_{case}: {ratios[case][0]:.4f}")
    return {case: {**med, "ratio": ratios[case][0], "fit_ratio": ratios[case][1]}
            for case, med in results.items()}


if __name__ == "__main__":
    main()
