"""Where the time of pyrovae's VAE training step goes: a sampling profile (pyinstrument) of the
step ``step_overhead.py`` times, split into the work plain PyTorch does too and Pyro's own.

Every profiler sample is charged to the innermost of these kinds of frame on its stack (the
outermost where it says so):

- ``network``: an ``nn.Module`` call (encoder, decoder, the encoder's scale head);
- ``backward``: ``Tensor.backward`` / ``torch.autograd.backward`` (all gradients: networks and
  densities);
- ``optimizer``: ``torch.optim`` (zero_grad and the Adam step);
- ``distributions``: ``torch.distributions`` and ``pyro.distributions`` (building them,
  ``rsample``, ``log_prob``);
- ``param_store``: ``pyro.module``/``pyro.param`` and ``PyroModule.__getattr__`` (each access of
  a sub-network registers its parameters in the param store; everything below them counts here);
- ``handlers``: ``pyro.poutine`` (messengers, traces, replay, plates);
- ``elbo``: ``pyro.infer`` (Trace_ELBO's bookkeeping: log-prob sums, surrogate loss, ``item``);
- ``other``: the rest (pyrovae's model/guide bodies, the loop).

Prints the fractions, the plain-PyTorch step time for the same network and batch, and last
``frac_<kind>_<case>:`` lines and ``pyro_overhead_<case>:`` (handlers + param store + ELBO
bookkeeping, the part plain PyTorch has no counterpart for).

    python benchmarks/step_profile.py --cases mlp conv --steps 300 --threads 1
"""

from __future__ import annotations

import argparse
import time

import pyro
import torch
from _common import StepPair, environment, load_data, make_pair, warm_up
from step_overhead import BATCH, NETWORK

KINDS = ("network", "backward", "optimizer", "distributions", "param_store", "handlers", "elbo",
         "other")
PYRO_OWN = ("param_store", "handlers", "elbo")


def kind_of(frame) -> str | None:
    """The kind a frame anchors, or None."""
    path, fn = (frame.file_path or "").replace("\\", "/"), frame.function or ""
    if "/torch/nn/modules/module.py" in path and fn in ("_call_impl", "_wrapped_call_impl"):
        return "network"
    if "/torch/autograd/" in path and fn == "backward" or "/torch/_tensor.py" in path \
            and fn == "backward":
        return "backward"
    if "/torch/optim/" in path:
        return "optimizer"
    if "/torch/distributions/" in path or "/pyro/distributions/" in path:
        return "distributions"
    if "/pyro/params/" in path or "/pyro/nn/module.py" in path and fn == "__getattr__" \
            or "/pyro/primitives.py" in path and fn in ("module", "param"):
        return "param_store"
    if "/pyro/poutine/" in path:
        return "handlers"
    if "/pyro/infer/" in path:
        return "elbo"
    return None


def charge(frame, current: str, totals: dict) -> None:
    """Adds each frame's self time to the kind of its innermost anchor (param_store sticks)."""
    kind = kind_of(frame)
    if current != "param_store" and kind is not None:
        current = kind
    totals[current] += frame.total_self_time
    for child in frame.children:
        charge(child, current, totals)


def profile_case(case, train, batch_size, steps, interval):
    from pyinstrument import Profiler

    vae, ref = make_pair(NETWORK[case], train.event_shape)
    g = torch.Generator().manual_seed(0)
    x = train.batch(torch.arange(batch_size), g)["x"]
    pair = StepPair(vae, ref, x, compiled=False)
    pyro_step, torch_step = pair.pyro, pair.torch

    def timed(fn, n):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n * 1e3

    with pyro.validation_enabled(False):  # as fit runs every step after its first
        for _ in range(10):
            pyro_step(), torch_step()
        # unprofiled times, interleaved halves
        t_pyro = (timed(pyro_step, steps // 2) + timed(pyro_step, steps - steps // 2)) / 2
        t_torch = (timed(torch_step, steps // 2) + timed(torch_step, steps - steps // 2)) / 2
        profiler = Profiler(interval=interval)
        profiler.start()
        for _ in range(steps):
            pyro_step()
        profiler.stop()
    root = profiler.last_session.root_frame()
    totals = dict.fromkeys(KINDS, 0.0)
    charge(root, "other", totals)
    total = sum(totals.values())
    return {k: v / total for k, v in totals.items()}, t_pyro, t_torch


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=["mlp", "conv"], choices=sorted(NETWORK))
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--steps", type=int, default=300, help="profiled steps per case")
    p.add_argument("--interval", type=float, default=2e-4, help="sampling interval, seconds")
    p.add_argument("--data", default=None, help="pyrovae data spec (default: shared MNIST)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warm_up()
    train = load_data(args.data).train
    out = {}
    for case in args.cases:
        batch = args.batch_size or BATCH[case]
        fracs, t_pyro, t_torch = profile_case(case, train, batch, args.steps, args.interval)
        out[case] = {**fracs, "pyro_ms": t_pyro, "torch_ms": t_torch,
                     "pyro_overhead": sum(fracs[k] for k in PYRO_OWN)}
        print(f"{case} (batch {batch}): pyrovae step {t_pyro:.3f} ms, plain PyTorch "
              f"{t_torch:.3f} ms (ratio {t_pyro / t_torch:.3f}, unprofiled)")
        for k in KINDS:
            print(f"  {k:14}{100 * fracs[k]:6.1f} %  {fracs[k] * t_pyro:7.3f} ms")
    print(environment())
    for case, r in out.items():
        for k in KINDS:
            print(f"frac_{k}_{case}: {r[k]:.4f}")
        print(f"pyro_overhead_{case}: {r['pyro_overhead']:.4f}")
    return out


if __name__ == "__main__":
    main()
