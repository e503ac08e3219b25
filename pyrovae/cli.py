"""Command line: ``pyrovae train | evaluate | sample | analyze | compare | list``.

    pyrovae train --model vae --data digits --epochs 50 --out runs/vae-digits
    pyrovae train --model mypackage.models:MyVAE --set latent_dim=8 --data mnist:~/mnist \
        --loss mypackage.losses:MyLoss --optimizer-arg eps=1e-8 --out runs/my
    pyrovae evaluate runs/vae-digits --num-samples 5000
    pyrovae sample runs/vae-digits --n 64
    pyrovae analyze runs/vae-digits --num-points 500
    pyrovae compare runs/vae-digits runs/iwae-digits
    pyrovae list vae

``train``'s training options come from :class:`pyrovae.train.TrainConfig`'s fields.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .train.config import add_options, from_options, positive_float, positive_int

SETTING_HELP = ("model config entry KEY=VALUE (VALUE parsed as JSON when it can be, else taken "
                "as a string), repeatable: --set latent_dim=2 --set hidden=[256,256]")
_Help = argparse.ArgumentDefaultsHelpFormatter

# kept for code that imported them from here
_positive_int, _positive_float = positive_int, positive_float


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


def _train_parser(sub) -> None:
    t = sub.add_parser("train", formatter_class=_Help,
                       help="train a model into a run folder, evaluate it, draw figures")
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
    t.add_argument("--data-seed", type=int, default=0,
                   help="fixes the train/validation split and the test set's binarisation, "
                        "whatever --seed is, so runs are scored on the same test bits")
    t.add_argument("--loss", default="trace_elbo",
                   help="a registered loss (see `pyrovae list`), e.g. trace_elbo, tc_elbo, iwae, "
                        "or an import path module:Name")
    t.add_argument("--loss-arg", action="append", metavar="KEY=VALUE",
                   help="loss argument, e.g. --loss-arg num_particles=5")
    t.add_argument("--num-samples", type=positive_int, default=1000,
                   help="importance samples K for the test log-likelihood L_K")
    add_options(t)  # epochs, lr, seed, device, optimizer, ...: pyrovae.train.TrainConfig
    t.add_argument("--out", required=True, help="run folder to create")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--no-figures", action="store_true")
    t.add_argument("--no-inference-data", action="store_true",
                   help="skip writing the ArviZ netCDF file")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyrovae", description="Variational auto-encoders in Pyro.",
                                formatter_class=_Help)
    sub = p.add_subparsers(dest="command", required=True)
    _train_parser(sub)

    e = sub.add_parser("evaluate", formatter_class=_Help,
                       help="importance-weighted log-likelihood of a trained run")
    e.add_argument("run", help="run folder")
    e.add_argument("--num-samples", type=positive_int, default=1000)
    e.add_argument("--split", default="test", choices=("train", "valid", "test"))
    e.add_argument("--batch-size", type=positive_int, default=100)
    e.add_argument("--device", default="cpu")

    s = sub.add_parser("sample", formatter_class=_Help,
                       help="draw samples from a trained run's model")
    s.add_argument("run", help="run folder")
    s.add_argument("--n", type=positive_int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None,
                   help="PNG path; the samples are also written beside it as .npy "
                        "(default RUN/sample_seed<SEED>.png)")

    a = sub.add_parser("analyze", formatter_class=_Help,
                       help="posterior analysis of a run: ArviZ netCDF, per-data-point PSIS "
                            "k-hat, figures, written to the run folder")
    a.add_argument("run", help="run folder")
    a.add_argument("--num-points", type=positive_int, default=500,
                   help="data points of the split to analyse (the first N)")
    a.add_argument("--num-samples", type=positive_int, default=1000,
                   help="guide draws S per data point for PSIS")
    a.add_argument("--draws", type=positive_int, default=100,
                   help="guide draws per data point stored in inference_data.nc")
    a.add_argument("--split", default="test", choices=("train", "valid", "test"))
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--device", default="cpu")

    c = sub.add_parser("compare", formatter_class=_Help,
                       help="compare runs by held-out log-likelihood: elpd on the split, its "
                            "standard error, differences to the best run")
    c.add_argument("runs", nargs="+", help="run folders trained on the same data")
    c.add_argument("--num-points", type=positive_int, default=None,
                   help="score the first N points of the split (default all)")
    c.add_argument("--num-samples", type=positive_int, default=1000)
    c.add_argument("--estimator", default="psis", choices=("psis", "is"),
                   help="log p(x) per point: Pareto-smoothed or plain importance sampling")
    c.add_argument("--split", default="test", choices=("train", "valid", "test"))
    c.add_argument("--device", default="cpu")
    c.add_argument("--out", default=None, help="CSV file for the table")

    li = sub.add_parser("list", formatter_class=_Help,
                        help="registered models, losses, likelihoods and data sources; with a "
                             "NAME, that model's config fields or that loss's arguments")
    li.add_argument("name", nargs="?", default=None,
                    help="a registered model or loss (or an import path module:Name)")
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


def _train(args) -> None:
    from . import run as runs

    settings = from_options(args)
    if args.resume:  # the run's stored settings, extended by --epochs/--steps only
        keep = {"epochs", "steps", "device", "progress"}
        settings = {k: v for k, v in settings.items() if k in keep and v is not None}
    metrics = runs.train_run(
        args.out, model=args.model, model_config=parse_settings(args.set, "--set"),
        data=args.data, binarize=args.binarize, valid_size=args.valid_size,
        data_seed=args.data_seed, loss=args.loss,
        loss_args=parse_settings(args.loss_arg, "--loss-arg"), num_samples=args.num_samples,
        resume=args.resume, figures=not args.no_figures,
        inference_data=not args.no_inference_data, **settings)
    if metrics is not None:  # None: a distributed run's other processes
        _print_metrics(metrics)
        print(f"run folder: {args.out}")


def _list(name: str | None) -> None:
    from . import data, infer, likelihoods, models
    from .protocol import _import_all_models, config_fields, resolve

    if name is None:
        _import_all_models()
        print("models:      ", ", ".join(sorted(models.MODELS)))
        print("losses:      ", ", ".join(sorted(infer.LOSSES)))
        print("likelihoods: ", ", ".join(sorted(likelihoods.LIKELIHOODS)))
        print("data:        ", ", ".join(sorted(data.LOADERS)) + ", FILE.npz, FILE.npy")
        return
    _import_all_models()
    if name in models.MODELS or (":" in name and name not in infer.LOSSES):
        try:
            cls = resolve(name)
        except ValueError:
            cls = None
        if cls is not None and hasattr(cls, "model"):
            print(f"model {name} ({cls.__module__}.{cls.__qualname__}); set with --set KEY=VALUE")
            for field, default, text in config_fields(cls):
                print(f"  {field} = {default!r}" + (f"  # {text}" if text else ""))
            return
    if name in infer.LOSSES or ":" in name:
        print(f"loss {name}; set with --loss-arg KEY=VALUE")
        for arg, default, _ in config_fields(infer.resolve_loss(name)):
            print(f"  {arg} = {default!r}")
        return
    raise ValueError(f"list: {name!r} is neither a registered model ({sorted(models.MODELS)}) "
                     f"nor a registered loss ({sorted(infer.LOSSES)})")


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
            _train(args)
        elif args.command == "evaluate":
            r = runs.evaluate_run(args.run, num_samples=args.num_samples, split=args.split,
                                  device=args.device, batch_size=args.batch_size)
            _print_metrics({args.split: r})
        elif args.command == "sample":
            png, npy = runs.sample_run(args.run, n=args.n, seed=args.seed, out=args.out)
            print(png)
            print(npy)
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
            _list(args.name)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError,
            RuntimeError, ImportError, FloatingPointError, OSError) as e:
        print(f"pyrovae {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        logger.removeHandler(handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
