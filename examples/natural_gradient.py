"""Gradient ascent, Adam and the natural gradient on a conjugate Gaussian; stochastic VI.

The model (``pyrovae.vi.ConjugateGaussian``) has theta ~ N(0, I) in D dimensions and N
observations x_i ~ N(theta, diag(sigma^2)) with unequal sigma_d, so the exact posterior is a
Gaussian with precisions 1 + N / sigma_d^2 that differ by two orders of magnitude. A mean-field
Gaussian guide can match it exactly; we count the steps each optimiser needs until
KL(q || posterior) < tol, at each step size of a grid, and report each method's best:

- gradient ascent (SGD on loc and log-scale, the unconstrained parameters Pyro optimises);
- Adam;
- the natural gradient (``pyrovae.vi.natural_gradient``), whose step with lr = 1 is exact here.

With the closed-form ELBO gradient (``--loss analytic``) the counts are deterministic; with
``--loss mc`` Pyro's Trace_ELBO estimates it by sampling, and we report the KL each reaches in
``--mc-steps`` steps instead. Last, stochastic VI: mini-batches of ``--batch-size`` with
``pyro.plate`` subsampling (scaled by N/B) and natural-gradient steps rho_t = 1/t reach the
same posterior as full-batch VI.

Step sizes beyond a method's stability limit (for gradient ascent 2 / the largest posterior
precision) are in the grid on purpose: such a run diverges, ``pyrovae.fit`` skips each update
whose loss or gradient is not finite and stops after ``max_nonfinite`` (10) in a row. The sweep
silences the trainer's per-step warnings and reports each such run once, as diverged, with the
number of steps it skipped.

    python examples/natural_gradient.py
    python examples/natural_gradient.py --loss mc --particles 16
"""

from __future__ import annotations

import argparse
import logging
import math
from contextlib import contextmanager

import pyro
import torch

import pyrovae
from pyrovae.vi import ConjugateGaussian, natural_gradient

GRIDS = {  # step sizes tried per method
    "gradient_ascent": [1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 4e-3, 4.5e-3, 5e-3, 1e-2],
    "adam": [3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0],
    "natural_gradient": [0.1, 0.25, 0.5, 1.0],
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--num-data", type=int, default=100)
    p.add_argument("--obs-scales", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0, 8.0],
                   help="sigma_d, one per dimension")
    p.add_argument("--tol", type=float, default=1e-3, help="KL(q || posterior) to reach, nats")
    p.add_argument("--max-steps", type=int, default=3000, help="cap per run (analytic loss)")
    p.add_argument("--loss", choices=("analytic", "mc"), default="analytic")
    p.add_argument("--particles", type=int, default=16, help="Trace_ELBO particles (mc)")
    p.add_argument("--mc-steps", type=int, default=500, help="budget per run (mc loss)")
    p.add_argument("--batch-size", type=int, default=10, help="mini-batch for stochastic VI")
    p.add_argument("--grid-scale", type=float, default=1.0,
                   help="keep every k-th step size only when < 1 (quick runs)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_data(n, scales, seed):
    g = torch.Generator().manual_seed(seed)
    obs = torch.tensor(scales)
    theta = torch.randn(len(scales), generator=g)
    return theta + obs * torch.randn(n, len(scales), generator=g)


@contextmanager
def quiet_trainer(level=logging.ERROR):
    """Raises the ``pyrovae`` logger to ``level`` for the block and restores it after: the
    sweep's divergent runs are expected, and reported once each instead of per skipped step."""
    logger = logging.getLogger("pyrovae")
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def run(x, scales, method, lr, steps, *, loss="analytic", particles=16, tol=None,
        batch_size=None, schedule=None, seed=0, info=None):
    """Trains a fresh guide; returns (model, KL after each step). A run that diverges ends with
    KL = inf; when ``info`` is a dict it receives ``skipped``, the number of updates
    ``pyrovae.fit`` skipped for a non-finite loss or gradient, and ``diverged``."""
    n = x.shape[0]
    pyro.clear_param_store()
    model = ConjugateGaussian(n, len(scales), obs_scale=scales)
    kls = []
    seen = {}

    class Track(pyrovae.Callback):
        def on_train_start(self, state):
            seen["state"] = state  # read after fit, which may end by raising

        def on_step_end(self, state):
            kls.append(model.kl_to_posterior(x))
            if tol is not None and kls[-1] < tol:
                state.stop = True

    objective = model.analytic_loss if loss == "analytic" else \
        pyro.infer.Trace_ELBO(num_particles=particles, vectorize_particles=True,
                              max_plate_nesting=1)
    optimizer = {"gradient_ascent": "sgd", "adam": "adam"}.get(method) or \
        natural_gradient({"loc": "scale"}, lr, module=model)
    try:
        pyrovae.fit(model, x, objective, steps=steps, batch_size=batch_size or n,
                    optimizer=optimizer, lr=lr, lr_schedule=schedule,
                    lr_schedule_interval="step", seed=seed, progress=False,
                    log_every=10**9, callbacks=[Track()])
    except FloatingPointError:  # diverged: the step size is too large
        kls.append(math.inf)
    except ValueError as e:  # diverged so far that the scale underflowed to 0
        if "scale" not in str(e):
            raise
        kls.append(math.inf)
    if info is not None:
        state = seen.get("state")
        info["skipped"] = state.nonfinite_total if state is not None else 0
        info["diverged"] = bool(kls) and not math.isfinite(kls[-1])
    return model, kls


def describe_divergence(method, lr, info) -> str:
    """One line for a run of the sweep that diverged."""
    why = f"{info['skipped']} non-finite steps skipped" if info["skipped"] else \
        "the guide's scale underflowed to 0"
    return f"{method} lr={lr:g}: diverged ({why}, as expected at this step size)"


def main(argv=None) -> dict:
    args = parse_args(argv)
    x = make_data(args.num_data, args.obs_scales, args.seed)
    prec = [1 + args.num_data / s**2 for s in args.obs_scales]
    print(f"posterior precisions {min(prec):.3g} .. {max(prec):.3g} (ratio "
          f"{max(prec) / min(prec):.0f}); loss {args.loss}")
    result = {"best": {}, "best_lr": {}, "diverged": [], "diverging": []}
    print("the largest step sizes of each grid are expected to diverge: pyrovae.fit then skips "
          "non-finite steps (its per-step warnings are silenced here) and stops after 10 in a "
          "row; such runs are marked 'diverged' and summed up after the sweep")
    with quiet_trainer():
        for method, grid in GRIDS.items():
            if args.grid_scale < 1:
                grid = grid[::-max(1, round(1 / args.grid_scale))][::-1]  # keeps the largest
            scores = {}
            for lr in grid:
                info = {}
                if args.loss == "analytic":
                    _, kls = run(x, args.obs_scales, method, lr, args.max_steps, tol=args.tol,
                                 info=info)
                    hit = next((i + 1 for i, k in enumerate(kls) if k < args.tol), None)
                    scores[lr] = hit if hit is not None else math.inf
                    shown = hit if hit is not None else \
                        f">{args.max_steps} (KL still {kls[-1]:.3g})"
                    if hit is None and math.isfinite(kls[-1]) and kls[-1] > kls[0]:
                        shown = f">{args.max_steps} (diverging: KL rose to {kls[-1]:.3g})"
                        result["diverging"].append({"method": method, "lr": lr,
                                                    "kl": kls[-1]})
                else:
                    _, kls = run(x, args.obs_scales, method, lr, args.mc_steps, loss="mc",
                                 particles=args.particles, seed=args.seed, info=info)
                    tail = kls[-max(1, len(kls) // 10):]
                    scores[lr] = sum(tail) / len(tail) if all(map(math.isfinite, tail)) \
                        else math.inf
                    shown = f"{scores[lr]:.3g}"
                if info["diverged"]:
                    shown = f"diverged ({info['skipped']} non-finite steps skipped)"
                    result["diverged"].append({"method": method, "lr": lr,
                                               "skipped": info["skipped"]})
                print(f"  {method:17s} lr {lr:<8g} {shown}")
            best = min(scores, key=scores.get)
            result["best"][method], result["best_lr"][method] = scores[best], best
    for d in result["diverged"]:
        print(describe_divergence(d["method"], d["lr"], d))
    for d in result["diverging"]:
        print(f"{d['method']} lr={d['lr']:g}: diverging (KL rose to {d['kl']:.3g} in "
              f"{args.max_steps} steps with every step finite), as expected at this step size")
    if not result["diverged"]:
        print("no run of the sweep diverged")

    # stochastic VI: one epoch of mini-batches with rho_t = 1/t against one full-batch step
    def one_over_t(opt):
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (t + 1))

    b = args.batch_size
    mini, _ = run(x, args.obs_scales, "natural_gradient", 1.0, args.num_data // b,
                  batch_size=b, schedule=one_over_t)
    full, _ = run(x, args.obs_scales, "natural_gradient", 1.0, 1)
    result["kl_svi_one_epoch"] = mini.kl_to_posterior(x)
    result["kl_full_batch_one_step"] = full.kl_to_posterior(x)
    result["svi_full_max_loc_diff"] = float((mini.loc - full.loc).detach().abs().max())
    mc_steps = 20 * (args.num_data // b)
    mini_mc, kls = run(x, args.obs_scales, "natural_gradient", 1.0, mc_steps, loss="mc",
                       particles=args.particles, batch_size=b, schedule=one_over_t)
    result["kl_svi_mc_20_epochs"] = kls[-1]

    unit = "steps to KL < tol" if args.loss == "analytic" else f"KL after {args.mc_steps} steps"
    print(f"\nbest over the step-size grid ({unit}):")
    for method in GRIDS:
        print(f"  {method:17s} {result['best'][method]:<10g} (lr {result['best_lr'][method]:g})")
    print(f"stochastic VI, batch {b}, rho_t = 1/t: KL after one epoch "
          f"{result['kl_svi_one_epoch']:.3g} (analytic gradients), after 20 epochs "
          f"{result['kl_svi_mc_20_epochs']:.3g} (Trace_ELBO, {args.particles} particles); "
          f"full batch, one step: {result['kl_full_batch_one_step']:.3g}\n")
    key = "steps" if args.loss == "analytic" else "kl"
    for method in GRIDS:
        print(f"{key}_{method}: {result['best'][method]:g}")
        print(f"lr_{method}: {result['best_lr'][method]:g}")
    for k in ("kl_svi_one_epoch", "kl_full_batch_one_step", "kl_svi_mc_20_epochs"):
        print(f"{k}: {result[k]:.6g}")
    return result


if __name__ == "__main__":
    main()
