"""Gradient variance and NLL of the score-function estimators on a discrete-latent VAE (MNIST).

The model is a sigmoid belief net with an amortised guide (``pyrovae.models.BernoulliVAE``,
two stochastic layers of 200 binary units by default, linear conditionals as in Mnih and
Gregor 2014) on dynamically binarised MNIST; ``--model categorical`` runs the one-hot
"deep k-means" VAE instead, where exact enumeration is possible. Estimators:

- ``score``: TraceScore_ELBO, the plain score function (no Rao-Blackwellisation);
- ``trace``: Trace_ELBO (Rao-Blackwellised over the data plate);
- ``tracegraph``: TraceGraph_ELBO (and over the dependency graph), no baseline;
- ``tracegraph_avg``, ``tracegraph_nn``, ``tracegraph_avg_nn``: with the decaying-average,
  neural, or both baselines (Mnih and Gregor 2014);
- ``concrete``: TraceConcrete_ELBO (temperature 2/3), pathwise but biased;
- ``enum``: TraceEnumGuide_ELBO, exact (categorical model only).

1. Equal steps: each estimator trains the same initial model for ``--steps`` Adam steps; the
   test NLL is -L_K on ``--test-size`` test images (binarised once).
2. Variance: at the parameters the reference run (TraceGraph_ELBO with both baselines) reached,
   each estimator's gradient of the guide's (encoder's) parameters is drawn ``--draws`` times on
   one fixed batch, its rows shuffled per draw (Pyro's running-average baseline is kept per
   batch position, so on an unshuffled fixed batch it would turn into a per-datum oracle);
   baselines are first adapted to that point (the running average by warm-up draws, the
   neural baseline by ``--baseline-steps`` steps on its own loss). Variances are
   reported relative to the TraceGraph_ELBO variant with the lowest one (the best baseline).

3. Unbiasedness (categorical model, where ``enum`` gives the exact gradient g): for each
   estimator, ``||mean of n draws - g||^2 / (tr Cov / n)``, whose expectation is 1 for an
   unbiased estimator and which grows with n for a biased one.

Prints a table, then ``name: value`` lines: ``var_ratio_<estimator>:`` (variance relative to
the best baseline), ``nll_<estimator>:``, ``ms_per_step_<estimator>:``,
``rb_baseline_factor:`` (plain score variance / best-baseline variance), and for the
categorical model ``bias_ratio_<estimator>:``.

    python benchmarks/gradient_variance.py                       # ~25 min on 2 busy cores
    python benchmarks/gradient_variance.py --steps 200 --test-size 200 --draws 50   # quick look
"""

from __future__ import annotations

import argparse
import copy
import time

import pyro
import torch
from _common import environment, load_data, warm_up

import pyrovae
from pyrovae.infer import TraceConcrete_ELBO, TraceEnumGuide_ELBO, TraceScore_ELBO
from pyrovae.metrics import gradient_variance

# name -> (loss factory, model baseline setting)
ESTIMATORS = {
    "score": (TraceScore_ELBO, "none"),
    "trace": (pyro.infer.Trace_ELBO, "none"),
    "tracegraph": (pyro.infer.TraceGraph_ELBO, "none"),
    "tracegraph_avg": (pyro.infer.TraceGraph_ELBO, "average"),
    "tracegraph_nn": (pyro.infer.TraceGraph_ELBO, "neural"),
    "tracegraph_avg_nn": (pyro.infer.TraceGraph_ELBO, "average+neural"),
    "concrete": (lambda: TraceConcrete_ELBO(temperature=2 / 3), "none"),
    "enum": (TraceEnumGuide_ELBO, "none"),
}
REFERENCE = "tracegraph_avg_nn"


def make_model(kind: str, train, args, seed: int):
    torch.manual_seed(seed)
    if kind == "sbn":
        return pyrovae.models.BernoulliVAE(
            input_shape=train.event_shape, latent_dims=tuple(args.latent_dims), hidden=(),
            baseline="average+neural", baseline_hidden=(100,))
    model = pyrovae.models.CategoricalVAE(
        input_shape=train.event_shape, num_categories=args.categories, hidden=(200,),
        baseline="average+neural", baseline_hidden=(100,))
    # a mixture starts its components on data points, as k-means does (the same for all)
    model.init_prototypes(train.frozen(seed).x, torch.Generator().manual_seed(seed))
    return model


def encoder_names(model) -> list[str]:
    return [n for n, _ in model.named_parameters() if n.startswith("encoder")]


def adapt_baselines(model, loss, train, args, gen):
    """Trains only the neural baselines at the model's current parameters."""
    if "neural" not in model.config.baseline:
        return
    opt = torch.optim.Adam(model.baselines.parameters(), lr=1e-3)
    for _ in range(args.baseline_steps):
        idx = torch.randint(len(train), (args.batch_size,), generator=gen)
        model.zero_grad(set_to_none=True)
        loss.loss_and_grads(model.model, model.guide, train.batch(idx, gen)["x"])
        opt.step()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("sbn", "categorical"), default="sbn")
    p.add_argument("--latent-dims", type=int, nargs="+", default=[200, 200],
                   help="SBN stochastic layers, x first")
    p.add_argument("--categories", type=int, default=20, help="K of the categorical VAE")
    p.add_argument("--estimators", nargs="+", default=None,
                   help=f"subset of {sorted(ESTIMATORS)} (default: all that apply)")
    p.add_argument("--steps", type=int, default=2000, help="training steps per estimator")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--draws", type=int, default=200, help="gradient draws per estimator")
    p.add_argument("--baseline-steps", type=int, default=300,
                   help="steps adapting a neural baseline before its variance is measured")
    p.add_argument("--num-samples", type=int, default=100, help="K of the test bound L_K")
    p.add_argument("--data", default=None, help="pyrovae data spec (default: shared MNIST)")
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.estimators or [n for n in ESTIMATORS
                                if n != "enum" or args.model == "categorical"]
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown:
        p.error(f"--estimators: unknown {unknown}; choose from {sorted(ESTIMATORS)}")
    if args.model == "sbn" and "enum" in names:
        p.error("--estimators enum: a vector of bits cannot be enumerated; use --model "
                "categorical")
    if REFERENCE not in names:
        names.append(REFERENCE)

    warm_up()
    splits = load_data(args.data, seed=args.seed)
    train, test = splits.train, splits.test
    if args.train_size:
        train = train.subset(torch.arange(args.train_size))
    test = test.subset(torch.arange(min(args.test_size, len(test)))).frozen(args.seed)

    # --- 1. equal steps ---------------------------------------------------------------------
    trained, nll, ms = {}, {}, {}
    for name in names:
        factory, baseline = ESTIMATORS[name]
        pyro.clear_param_store()  # the decaying average lives in the param store
        model = make_model(args.model, train, args, args.seed)
        model.config.baseline = baseline
        t0 = time.perf_counter()
        pyrovae.fit(model, train, factory(), steps=args.steps, batch_size=args.batch_size,
                    lr=args.lr, seed=args.seed, progress=False, log_every=10**9)
        ms[name] = 1000 * (time.perf_counter() - t0) / args.steps
        ll = pyrovae.metrics.log_likelihood(model, test, args.num_samples, seed=args.seed)
        nll[name] = -float(ll.mean())
        trained[name] = model
        print(f"  trained {name:18s} {ms[name]:7.1f} ms/step  NLL {nll[name]:.2f}", flush=True)

    # --- 2. variance at the reference point -------------------------------------------------
    ref = trained[REFERENCE]
    gen = torch.Generator().manual_seed(args.seed + 1)
    fixed = train.subset(torch.randperm(len(train), generator=gen)[:args.batch_size])
    fixed = fixed.frozen(args.seed)
    var, moments = {}, {}
    for name in names:
        factory, baseline = ESTIMATORS[name]
        pyro.clear_param_store()
        model = copy.deepcopy(ref)
        model.config.baseline = baseline
        loss = factory()
        adapt_baselines(model, loss, train, args, gen)
        r = gradient_variance(model, fixed, loss, num_draws=args.draws,
                              params=encoder_names(model),
                              warmup=50 if "average" in baseline else 0, shuffle=True,
                              seed=args.seed)
        var[name] = r.total_variance()
        moments[name] = r
        print(f"  variance {name:18s} {var[name]:.4g}", flush=True)

    # unbiasedness: against the exact gradient from enumeration, the squared error of the mean
    # of n draws has expectation tr Cov / n for an unbiased estimator, so this ratio is about 1
    # (element-wise z-scores mislead here: a category q gives 1e-10 is never drawn in 200
    # draws, its elements' sample variance is ~0 and their z-scores explode).
    bias_ratio = {}
    if "enum" in names:
        exact = moments["enum"].mean
        for name in names:
            if name == "enum":
                continue
            sq_err = sum(float(((moments[name].mean[n] - exact[n]) ** 2).sum()) for n in exact)
            bias_ratio[name] = sq_err / (var[name] / args.draws)

    graph = [n for n in names if n.startswith("tracegraph")]
    best = min(graph, key=lambda n: var[n])
    print(f"\n{args.model} on {len(train)} training images, batch {args.batch_size}, "
          f"{args.steps} Adam steps (lr {args.lr}); test NLL = -L_{args.num_samples} on "
          f"{len(test)} images; variance over {args.draws} draws of the encoder gradient on one "
          f"batch at the {REFERENCE} point; best baseline: {best}")
    print(f"{environment()}\n")
    print(f"{'estimator':18s} {'var / best':>12s} {'NLL':>9s} {'ms/step':>9s}")
    for name in names:
        print(f"{name:18s} {var[name] / var[best]:12.4g} {nll[name]:9.2f} {ms[name]:9.1f}")
    print()
    for name in names:
        print(f"var_ratio_{name}: {var[name] / var[best]:.6g}")
    for name in names:
        print(f"nll_{name}: {nll[name]:.4f}")
    for name in names:
        print(f"ms_per_step_{name}: {ms[name]:.2f}")
    if "score" in names:
        print(f"rb_baseline_factor: {var['score'] / var[best]:.6g}")
    for name, r in bias_ratio.items():
        print(f"bias_ratio_{name}: {r:.4f}")
    return {"variance": var, "nll": nll, "ms_per_step": ms, "best": best,
            "bias_ratio": bias_ratio}


if __name__ == "__main__":
    main()
