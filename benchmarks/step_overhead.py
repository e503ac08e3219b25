"""Per-step cost of training pyrovae's VAE against the same network and loss in plain PyTorch,
eager and compiled, side by side in one process.

Cases: ``mlp`` (Burda et al. 2016's 784-200-200-50 network, batch 100) and ``conv`` (a conv
VAE on 28x28, batch 128), each on ``cpu`` and ``cuda`` (skipped, with the reason printed, when
no GPU is visible). Four sides per case, all with Adam (lr 1e-3, torch's default
implementation on both sides) and the same single-sample Monte-Carlo ELBO (no analytic KL on
either side):

- ``pyrovae``: the step ``fit`` takes on every step after its validated first one (the lean
  ELBO with sub-networks read as plain attributes; :mod:`pyrovae.train.steps`);
- ``pyrovae_traced``: ``fit(compile="trace")``'s step (the ELBO traced once, its graph replayed);
- ``pyrovae_compiled``: ``fit(compile=True)``'s step (the traced ELBO, ``torch.compile``'d);
- ``torch``, ``torch_compiled``: the plain-PyTorch twin, eager and with its loss compiled;
- ``trace_elbo``: Pyro's own ``Trace_ELBO.loss_and_grads`` on the same model (for reference);
- ``fit``: the whole ``pyrovae.fit`` loop per step (batching, dynamic binarisation, the
  non-finite guard, the history) against a plain loop doing the same batching.

Each timed block is ``--steps`` steps; the sides are interleaved block by block (order
alternating), so machine load hits them alike; medians over ``--repeats`` blocks. Prints a
table, then ``name: value`` lines ending with one ``ratio_<case>:`` line per case (eager
pyrovae over eager torch). Compilation time is reported, not included.

    python benchmarks/step_overhead.py                        # all four cases
    python benchmarks/step_overhead.py --cases mlp_cpu conv_cpu --repeats 11 --threads 2
    python benchmarks/step_overhead.py --no-compile           # eager only
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


def measure(case, train, batch_size, steps, repeats, compile_options=None, compiled=True,
            bf16=False):
    """Medians (ms per step) of every side, and the compile times (s)."""
    network, dev = NETWORK[case.split("_")[0]], torch.device(case.split("_")[1])
    vae, ref = make_pair(network, train.event_shape)
    vae.to(dev), ref.to(dev)
    train = train.to(dev)
    g = torch.Generator(device=dev).manual_seed(0)
    x = train.batch(torch.arange(batch_size, device=dev), g)["x"]
    pair = StepPair(vae, ref, x, compiled=compiled, compile_options=compile_options, bf16=bf16)
    sides = {"pyro": pair.pyro, "torch": pair.torch, "trace_elbo": pair.trace_elbo,
             "pyro_traced": pair.pyro_traced}
    if compiled:
        sides.update(pyro_compiled=pair.pyro_compiled, torch_compiled=pair.torch_compiled)

    # the whole loop: an epoch-sized slice of the data, `steps` batches
    sub = train.subset(torch.arange(steps * batch_size, device=dev))

    def pyro_fit():
        pyrovae.fit(vae, sub, pair.elbo, epochs=1, batch_size=batch_size, optimizer="adam",
                    progress=False, seed=None, device=dev, precision="bf16" if bf16 else "fp32")

    def torch_fit():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            train_epoch(ref, pair.opt_t, sub.x, batch_size, g)

    fits = {"pyro_fit": pyro_fit, "torch_fit": torch_fit}
    with pyro.validation_enabled(False):
        for f in sides.values():  # warm-up: allocator, lazy imports, kernels, compilation
            time_steps(f, 10, dev)
        pyro_fit(), torch_fit()
        res = {k: [] for k in (*sides, *fits)}
        for r in range(repeats):
            for group in (sides, fits):
                names = list(group) if r % 2 == 0 else list(reversed(group))
                for name in names:
                    n = steps if group is sides else 1
                    per = time_steps(group[name], n, dev) / (1 if group is sides else steps)
                    res[name].append(per)
    out = {k: statistics.median(v) * 1e3 for k, v in res.items()}
    out["compile_s_pyro"], out["compile_s_torch"] = pair.compile_seconds
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p.add_argument("--batch-size", type=int, default=None,
                   help="one batch size for every case (default: mlp 100, conv 128)")
    p.add_argument("--steps", type=int, default=100, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=7, help="interleaved timed blocks per side")
    p.add_argument("--data", default=None, help="pyrovae data spec (default: shared MNIST)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--no-compile", action="store_true", help="eager sides only")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="bf16: every side's networks under torch.autocast (log-densities fp32)")
    p.add_argument("--cudagraphs", action="store_true",
                   help="compiled sides also capture CUDA graphs (inductor's triton.cudagraphs)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    options = {"triton.cudagraphs": True} if args.cudagraphs else None

    warm_up()
    train = load_data(args.data).train
    results, batches = {}, {}
    for case in args.cases:
        reason = skip_reason(case)
        if reason is not None:
            print(f"{case}: skipped, {reason}")
            continue
        batches[case] = args.batch_size or BATCH[case.split("_")[0]]
        results[case] = measure(case, train, batches[case], args.steps, args.repeats,
                                options, compiled=not args.no_compile,
                                bf16=args.precision == "bf16")

    print(f"{args.steps} steps x {args.repeats} interleaved repeats, {args.precision}"
          f"{', CUDA graphs' if args.cudagraphs else ''}; {environment()}")
    if torch.cuda.is_available() and any(c.endswith("_cuda") for c in results):
        print(f"cuda: {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}")
    compiled = not args.no_compile
    head = f"{'case':10}{'batch':>7}{'pyrovae':>10}{'torch':>9}{'ratio':>8}"
    if compiled:
        head += f"{'pyro comp':>11}{'torch comp':>11}{'vs eager':>10}{'vs comp':>9}"
    print("ms per step (ratio: pyrovae / torch)")
    print(head + f"{'traced':>9}{'Trace_ELBO':>12}{'fit ratio':>11}")
    ratios = {}
    for case, m in results.items():
        r = {"ratio": m["pyro"] / m["torch"], "fit_ratio": m["pyro_fit"] / m["torch_fit"],
             "trace_elbo_ratio": m["trace_elbo"] / m["torch"],
             "traced_ratio": m["pyro_traced"] / m["torch"]}
        row = f"{case:10}{batches[case]:7d}{m['pyro']:10.3f}{m['torch']:9.3f}{r['ratio']:8.3f}"
        if compiled:
            r["compiled_vs_eager"] = m["pyro_compiled"] / m["torch"]
            r["compiled_vs_compiled"] = m["pyro_compiled"] / m["torch_compiled"]
            row += (f"{m['pyro_compiled']:11.3f}{m['torch_compiled']:11.3f}"
                    f"{r['compiled_vs_eager']:10.3f}{r['compiled_vs_compiled']:9.3f}")
        print(row + f"{r['traced_ratio']:9.3f}{m['trace_elbo']:12.3f}{r['fit_ratio']:11.3f}")
        ratios[case] = r
    for case, m in results.items():
        print(f"pyrovae_step_ms_{case}: {m['pyro']:.4f}")
        print(f"torch_step_ms_{case}: {m['torch']:.4f}")
        print(f"trace_elbo_step_ms_{case}: {m['trace_elbo']:.4f}")
        if compiled:
            print(f"pyrovae_compiled_step_ms_{case}: {m['pyro_compiled']:.4f}")
            print(f"torch_compiled_step_ms_{case}: {m['torch_compiled']:.4f}")
            print(f"compile_s_pyrovae_{case}: {m['compile_s_pyro']:.2f}")
            print(f"compile_s_torch_{case}: {m['compile_s_torch']:.2f}")
            print(f"ratio_compiled_vs_eager_torch_{case}: {ratios[case]['compiled_vs_eager']:.4f}")
            print(f"ratio_compiled_vs_compiled_torch_{case}: "
                  f"{ratios[case]['compiled_vs_compiled']:.4f}")
        print(f"pyrovae_traced_step_ms_{case}: {m['pyro_traced']:.4f}")
        print(f"ratio_traced_{case}: {ratios[case]['traced_ratio']:.4f}")
        print(f"trace_elbo_ratio_{case}: {ratios[case]['trace_elbo_ratio']:.4f}")
        print(f"fit_ratio_{case}: {ratios[case]['fit_ratio']:.4f}")
    for case in results:
        print(f"ratio_{case}: {ratios[case]['ratio']:.4f}")
    return {case: {**m, **ratios[case]} for case, m in results.items()}


if __name__ == "__main__":
    main()
