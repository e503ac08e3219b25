"""A VAE with discrete latents on binarised MNIST, trained by the estimator you choose.

Two models (``pyrovae.models``): ``sbn``, a sigmoid belief net with binary stochastic layers
(``BernoulliVAE``; Mnih and Gregor 2014), and ``categorical``, one one-hot code of K values
(``CategoricalVAE``, "deep k-means": a mixture of Bernoullis with an encoder for its E step).
Neither latent is reparametrisable, so the estimator matters:

- ``tracegraph``: TraceGraph_ELBO, score function Rao-Blackwellised over the dependency
  graph, with the baseline given by ``--baseline`` (none, average, neural, average+neural);
- ``trace``: Trace_ELBO, Rao-Blackwellised over the data plate only;
- ``score``: TraceScore_ELBO, the plain score function;
- ``concrete``: TraceConcrete_ELBO, the Concrete / Gumbel-softmax relaxation (biased, pathwise);
- ``enum``: TraceEnumGuide_ELBO, the exact sum over K values (categorical model only).

The model is scored by the importance-weighted bound L_K on test images (a lower bound on
log p(x)); ``--data digits`` runs on the embedded 8x8 digits with no download.

    python examples/discrete_vae.py --data mnist:~/data/mnist.npz --baseline average+neural
    python examples/discrete_vae.py --data digits --model categorical --estimator enum
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import pyro
import torch

import pyrovae
from pyrovae import analysis, metrics
from pyrovae.infer import TraceConcrete_ELBO, TraceEnumGuide_ELBO, TraceScore_ELBO
from pyrovae.models import BernoulliVAE, CategoricalVAE

ESTIMATORS = ("tracegraph", "trace", "score", "concrete", "enum")


def make_loss(name: str, temperature: float):
    if name == "tracegraph":
        return pyro.infer.TraceGraph_ELBO()
    if name == "trace":
        return pyro.infer.Trace_ELBO()
    if name == "score":
        return TraceScore_ELBO()
    if name == "concrete":
        return TraceConcrete_ELBO(temperature=temperature)
    return TraceEnumGuide_ELBO()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data", required=True,
                   help="mnist:PATH (IDX folder or npz), torchvision:MNIST:ROOT, or digits")
    p.add_argument("--model", choices=("sbn", "categorical"), default="sbn")
    p.add_argument("--latent-dims", type=int, nargs="+", default=[200, 200],
                   help="sbn: units per stochastic layer, x first")
    p.add_argument("--categories", type=int, default=20, help="categorical: K")
    p.add_argument("--hidden", type=int, nargs="*", default=[],
                   help="deterministic hidden widths in each conditional (none: linear SBN)")
    p.add_argument("--estimator", choices=ESTIMATORS, default="tracegraph")
    p.add_argument("--baseline", default="average+neural",
                   choices=("none", "average", "neural", "average+neural"))
    p.add_argument("--temperature", type=float, default=2 / 3, help="Concrete temperature")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--num-samples", type=int, default=100, help="K of the test bound L_K")
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/discrete_vae", help="folder for figures and metrics")
    args = p.parse_args(argv)
    if args.estimator == "enum" and args.model != "categorical":
        p.error("--estimator enum needs --model categorical: 2^L values of L bits cannot be "
                "enumerated")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    splits = pyrovae.data.load(args.data, binarize="dynamic", seed=args.seed, valid_size=0)
    train, test = splits.train, splits.test
    if args.train_size:
        train = train.subset(torch.arange(min(args.train_size, len(train))))
    test = test.subset(torch.arange(min(args.test_size, len(test))))
    common = dict(input_shape=train.event_shape, hidden=tuple(args.hidden),
                  baseline=args.baseline)
    torch.manual_seed(args.seed)
    if args.model == "sbn":
        model = BernoulliVAE(latent_dims=tuple(args.latent_dims), **common)
    else:
        model = CategoricalVAE(num_categories=args.categories, **common)
    pyro.clear_param_store()
    t0 = time.perf_counter()
    history = pyrovae.fit(model, train, make_loss(args.estimator, args.temperature),
                          epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          device=args.device, seed=args.seed)
    seconds = time.perf_counter() - t0
    r = metrics.importance_sampling(model, test, args.num_samples, seed=args.seed)
    ll, el = metrics.summary(r["log_likelihood"]), metrics.summary(r["elbo"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x = test.frozen(args.seed).x[:32].to(args.device)
    analysis.plot_reconstructions(x, model.reconstruct(x), out / "reconstructions.png")
    analysis.plot_samples(model.sample(64), out / "samples.png")
    analysis.plot_history(history, out / "loss.png")
    result = {"model": args.model, "estimator": args.estimator, "baseline": args.baseline,
              "test_log_likelihood": ll, "test_elbo": el, "num_samples": args.num_samples,
              "epochs": args.epochs, "train_seconds": seconds}
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.model} / {args.estimator} (baseline {args.baseline}): test log p(x) >= "
          f"L_{args.num_samples} = {ll['mean']:.2f} +- {ll['se']:.2f} nats (ELBO "
          f"{el['mean']:.2f}) after {args.epochs} epochs, {seconds:.0f} s")
    return result


if __name__ == "__main__":
    main()
