"""Command line: ``pyrovae train | evaluate | sample | analyze | compare | list``.

    pyrovae train --model vae --data digits --epochs 50 --out runs/vae-digits
    pyrovae train --model mypackage.models:MyVAE --set latent_dim=8 --data mnist:~/mnist \
        --out runs/my
    pyrovae evaluate runs/vae-digits --num-samples 5000
    pyrovae sample runs/vae-digits --n 64
    pyrovae analyze runs/vae-digits --num-points 500
    pyrovae compare runs/vae-digits runs/iwae-digits
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

SETTING_HELP = ("model config entry KEY=VALUE (VALUE parsed as JSON when it can be, else taken "
                "as a string), repeatable: --set latent_dim=2 --set hidden=[256,256]")


def parse_settings(items, what: str) -> dict:
    """``["a=1", "b=[2,3]", "c=tanh"]`` -> ``{"a": 1, "b": [2, 3], "c": "tanh"}``."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what}: expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyrovae", description="Variational auto-encoders in Pyro.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model into a run folder, evaluate it, draw figures")
    t.add_argument("--model", default="vae",
                   help="registered model name (see `pyrovae list`) or import path module:Name")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help=SETTING_HELP)
    t.add_argument("--data", default="digits",
                   help="digits (embedded) | dsprites[:N] (procedural) | dsprites:PATH.npz[:N] | "
                        "mnist:PATH (IDX folder or npz) | torchvision:NAME[:ROOT] | FILE.npz | "
                        "FILE.npy")
    t.add_argument("--binarize", default="auto",
                   choices=("auto", "dynamic", "fixed", "threshold", "none"),
                   help="auto: dynamic for a Bernoulli likelihood, none otherwise")
    t.add_argument("--valid-size", type=int, default=None,
                   help="training points held out for validation (MNIST-like data)")
    t.add_argument("--epochs", type=_positive_int, default=None,
                   help="passes over the training data (default 20 unless --steps)")
    t.add_argument("--steps", type=_positive_int, default=None, help="cap on optimiser steps")
    t.add_argument("--batch-size", type=_positive_int, default=128)
    t.add_argument("--lr", type=_positive_float, default=1e-3)
    t.add_argument("--optimizer", default="adam")
    t.add_argument("--lr-schedule", default=None, choices=("constant", "cosine", "burda"))
    t.add_argument("--loss", default="trace_elbo",
                   help="a registered loss (see `pyrovae list`), e.g. trace_elbo, tc_elbo, iwae")
    t.add_argument("--loss-arg", action="append", metavar="KEY=VALUE",
                   help="loss argument, e.g. --loss-arg num_particles=5")
    t.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--num-samples", type=_positive_int, default=1000,
                   help="importance samples K for the test log-likelihood L_K")
    t.add_argument("--clip-grad-norm", type=_positive_float, default=None,
                   help="clip the gradients' total norm to this value")
    t.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="bf16: networks under torch.autocast, log-densities in fp32")
    t.add_argument("--keep-checkpoints", type=_positive_int, default=1,
                   help="also keep the newest N checkpoints as checkpoint-step<N>.pt")
    t.add_argument("--out", required=True, help="run folder to create")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--no-figures", action="store_true")
    t.add_argument("--no-inference-data", action="store_true",
                   help="skip writing the ArviZ netCDF file")

    e = sub.add_parser("evaluate", help="importance-weighted log-likelihood of a trained run")
    e.add_argument("run", help="run folder")
    e.add_argument("--num-samples", type=_positive_int, default=1000)
    e.add_argument("--split", default="test", choices=("train", "valid", "test"))
    e.add_argument("--batch-size", type=_positive_int, default=100)
    e.add_argument("--device", default="cpu")

    s = sub.add_parser("sample", help="draw samples from a trained run's model")
    s.add_argument("run", help="run folder")
    s.add_argument("--n", type=_positive_int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None, help="PNG path (default RUN/samples.png)")

    a = sub.add_parser("analyze", help="posterior analysis of a run: ArviZ netCDF, per-data-"
                                       "point PSIS k-hat, figures, written to the run folder")
    a.add_argument("run", help="run folder")
    a.add_argument("--num-points", type=_positive_int, default=500,
                   help="data points of the split to analyse (the first N)")
    a.add_argument("--num-samples", type=_positive_int, default=1000,
                   help="guide draws S per data point for PSIS")
    a.add_argument("--draws", type=_positive_int, default=100,
                   help="guide draws per data point stored in inference_data.nc")
    a.add_argument("--split", default="test", choices=("train", "valid", "test"))
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--device", default="cpu")

    c = sub.add_parser("compare", help="compare runs by held-out log-likelihood (ArviZ's "
                                       "compare table: elpd, standard errors, differences)")
    c.add_argument("runs", nargs="+", help="run folders trained on the same data")
    c.add_argument("--num-points", type=_positive_int, default=None,
                   help="score the first N points of the split (default all)")
    c.add_argument("--num-samples", type=_positive_int, default=1000)
    c.add_argument("--estimator", default="psis", choices=("psis", "is"),
                   help="log p(x) per point: Pareto-smoothed or plain importance sampling")
    c.add_argument("--split", default="test", choices=("train", "valid", "test"))
    c.add_argument("--device", default="cpu")
    c.add_argument("--out", default=None, help="CSV file for the table")

    sub.add_parser("list", help="registered models, losses, likelihoods and data sources")
    return p


def _print_metrics(m: dict) -> None:
    for split in ("valid", "test"):
        r = m.get(split)
        if not r:
            continue
        if "log_likelihood" in r:
            ll, el = r["log_likelihood"], r["elbo"]
            print(f"{split}: log p(x) >= L_{r['num_samples']} = {ll['mean']:.3f} "
                  f"+- {ll['se']:.3f} nats, ELBO = {el['mean']:.3f} (n = {r['n']})")
        else:
            rl = r["recon_log_prob"]
            print(f"{split}: reconstruction log p(x | f(x)) = {rl['mean']:.3f} +- {rl['se']:.3f}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("pyrovae")  # ours only: other libraries' INFO stays quiet
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False
    from . import run as runs

    try:
        if args.command == "train":
            epochs = args.epochs if (args.epochs or args.steps) else 20
            metrics = runs.train_run(
                args.out, model=args.model, model_config=parse_settings(args.set, "--set"),
                data=args.data, binarize=args.binarize, valid_size=args.valid_size,
                epochs=epochs if not args.resume or args.epochs else None, steps=args.steps,
                batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                lr_schedule=args.lr_schedule, loss=args.loss,
                loss_args=parse_settings(args.loss_arg, "--loss-arg"), device=args.device,
                seed=args.seed, num_samples=args.num_samples, resume=args.resume,
                figures=not args.no_figures, inference_data=not args.no_inference_data,
                keep_checkpoints=args.keep_checkpoints, clip_grad_norm=args.clip_grad_norm,
                precision=args.precision)
            if metrics is not None:  # None: a distributed run's other processes
                _print_metrics(metrics)
                print(f"run folder: {args.out}")
        elif args.command == "evaluate":
            r = runs.evaluate_run(args.run, num_samples=args.num_samples, split=args.split,
                                  device=args.device, batch_size=args.batch_size)
            _print_metrics({args.split: r})
        elif args.command == "sample":
            print(runs.sample_run(args.run, n=args.n, seed=args.seed, out=args.out))
        elif args.command == "analyze":
            from .analysis import report

            r = report.analyze_run(args.run, num_points=args.num_points,
                                   num_samples=args.num_samples, draws=args.draws,
                                   split=args.split, seed=args.seed, device=args.device)
            print(report.format_summary(r))
            print(f"wrote {', '.join(r['files'])} in {args.run}")
        elif args.command == "compare":
            from .analysis import report

            table = report.compare_runs(args.runs, num_points=args.num_points,
                                        num_samples=args.num_samples, split=args.split,
                                        estimator=args.estimator, device=args.device,
                                        out=args.out)
            print(table.to_string())
        elif args.command == "list":
            from . import data, infer, likelihoods, models
            from .models.base import _import_all_models

            _import_all_models()
            print("models:      ", ", ".join(sorted(models.MODELS)))
            print("losses:      ", ", ".join(sorted(infer.LOSSES)))
            print("likelihoods: ", ", ".join(sorted(likelihoods.LIKELIHOODS)))
            print("data:        ", ", ".join(sorted(data.LOADERS)) + ", FILE.npz, FILE.npy")
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError,
            RuntimeError, ImportError, FloatingPointError, OSError) as e:
        print(f"pyrovae {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
