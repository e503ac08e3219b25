"""Each lever on the eager SVI step's cost, alone and together, against plain PyTorch.

One Adam step (lr 1e-3) of pyrovae's VAE on a fixed batch, in these variants, each against the
plain-PyTorch twin stepped with the same Adam implementation (interleaved blocks, medians;
the spread is the interquartile range of the per-block ratios):

- ``trace_elbo``: Pyro's ``Trace_ELBO.loss_and_grads``, validation off (fit's old step);
- ``validation_on``: the same with Pyro's validation on (fit's first step);
- ``local_params``: the model built under ``pyro.settings.set(module_local_params=True)``
  (Pyro >= 1.8.3: modules keep their parameters instead of the global param store);
- ``differentiable``: ``Trace_ELBO.differentiable_loss`` and ``backward`` (no param sites
  needed, so the next lever applies);
- ``pinned``: that, with PyroModule sub-networks read as plain attributes
  (:func:`pyrovae.train.steps.pinned`: no param messages);
- ``lean``: :func:`pyrovae.infer.lean.lean_elbo` (one handler instead of trace, replay and
  their copies; no per-site host reads);
- ``lean_pinned``: both (fit's eager step);
- ``lean_pinned_z_formula``: the same, with log q by ``Normal.log_prob`` of the drawn z
  instead of from its noise (``lean_elbo(noise=False)``, fit's eager step before stop 18);
- ``lean_pinned_foreach`` / ``lean_pinned_fused``: and Adam ``foreach`` / ``fused`` on both sides.

Prints a table and ``lever_<variant>_<case>:`` lines (median ratio to plain PyTorch).

    python benchmarks/step_levers.py --cases mlp conv --repeats 9 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics

import pyro
import torch
from _common import environment, load_data, make_pair, warm_up
from step_overhead import BATCH, NETWORK, time_steps

from pyrovae.infer.lean import lean_elbo
from pyrovae.train.steps import pinned

VARIANTS = ("trace_elbo", "validation_on", "local_params", "differentiable", "pinned", "lean",
            "lean_pinned", "lean_pinned_z_formula", "lean_pinned_foreach", "lean_pinned_fused")


def _adam(params, variant):
    kw = {"foreach": True} if variant.endswith("foreach") else \
        {"fused": True} if variant.endswith("fused") else {}
    return torch.optim.Adam(params, lr=1e-3, **kw)


def make_steps(vae, ref, x, variant):
    """``(pyrovae step, torch step, context, model)`` for one variant, on copies of the
    networks (``model``: the pyrovae side's copy)."""
    ctx = contextlib.ExitStack()
    if variant == "local_params":  # the setting must hold when modules are built and run
        ctx.enter_context(pyro.settings.context(module_local_params=True))
        model = type(vae)(vae.config)
        model.load_state_dict(vae.state_dict())
    else:
        model = copy.deepcopy(vae)
    twin = copy.deepcopy(ref)
    opt_p, opt_t = _adam(model.parameters(), variant), _adam(twin.parameters(), variant)
    elbo = pyro.infer.Trace_ELBO()
    if "pinned" in variant:
        ctx.enter_context(pinned(model))
    if variant == "validation_on":
        ctx.enter_context(pyro.validation_enabled(True))

    def forward_backward():
        if variant in ("trace_elbo", "validation_on", "local_params"):
            elbo.loss_and_grads(model.model, model.guide, x)
        elif variant in ("differentiable", "pinned"):
            elbo.differentiable_loss(model.model, model.guide, x).backward()
        else:
            lean_elbo(model.model, model.guide, (), {"x": x},
                      noise=variant != "lean_pinned_z_formula")[0].backward()

    def pyro_step():
        opt_p.zero_grad(set_to_none=True)
        forward_backward()
        opt_p.step()

    def torch_step():
        opt_t.zero_grad(set_to_none=True)
        twin.loss(x).backward()
        opt_t.step()

    return pyro_step, torch_step, ctx, model


def measure(case, train, steps, repeats, variants):
    vae, ref = make_pair(NETWORK[case], train.event_shape)
    dev = torch.device("cpu")
    x = train.batch(torch.arange(BATCH[case]), torch.Generator().manual_seed(0))["x"]
    out = {}
    for variant in variants:
        p_step, t_step, ctx, _ = make_steps(vae, ref, x, variant)
        with ctx, pyro.validation_enabled(variant == "validation_on"):
            time_steps(p_step, 10, dev), time_steps(t_step, 10, dev)
            ratios = []
            for r in range(repeats):
                order = (p_step, t_step) if r % 2 == 0 else (t_step, p_step)
                times = {f: time_steps(f, steps, dev) for f in order}
                ratios.append(times[p_step] / times[t_step])
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        out[variant] = {"median": statistics.median(ratios), "q1": q[0], "q3": q[2]}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=["mlp", "conv"], choices=sorted(NETWORK))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--steps", type=int, default=100, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=7, help="interleaved blocks per variant")
    p.add_argument("--data", default=None, help="pyrovae data spec (default: shared MNIST)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warm_up()
    train = load_data(args.data).train
    results = {case: measure(case, train, args.steps, args.repeats, args.variants)
               for case in args.cases}
    print(f"{args.steps} steps x {args.repeats} interleaved repeats, CPU; {environment()}")
    print("step time over plain PyTorch's with the same Adam: median [interquartile range]")
    print(f"{'variant':22}" + "".join(f"{case:>22}" for case in args.cases))
    for v in args.variants:
        cells = "".join(f"{r[v]['median']:9.3f} [{r[v]['q1']:.3f}-{r[v]['q3']:.3f}]"
                        for r in results.values())
        print(f"{v:22}{cells}")
    for case, r in results.items():
        for v in args.variants:
            print(f"lever_{v}_{case}: {r[v]['median']:.4f}")
    return results


if __name__ == "__main__":
    main()
