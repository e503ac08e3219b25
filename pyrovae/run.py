"""Run folders: train, evaluate and sample as the CLI does, from Python.

A run folder holds

- ``config.json``: model spec and config, data spec, training and loss settings;
- ``checkpoint.pt``: model, optimiser, schedule and RNG states (see :mod:`pyrovae.checkpoint`);
- ``metrics.json``: importance-weighted log-likelihood and ELBO per split, the training history;
- ``reconstructions.png``, ``samples.png``, ``loss.png``, ``latent.png``;
- ``inference_data.nc``: an ArviZ ``InferenceData`` of test-set posteriors.

Everything is checked before the first file is written; files are replaced atomically.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import numpy as np
import pyro
import torch

from . import __version__, analysis, checkpoint, checks, infer, likelihoods, models
from . import data as data_mod
from . import distributed as ddp
from . import metrics as metrics_mod
from ._runtime import module_device, resolve_device
from .callbacks import Callback
from .infer.particles import ParticleTracer
from .protocol import config_of, input_names, to_jsonable
from .run_folder import CONFIG, INFERENCE_DATA, METRICS, load_run, read_json, write_json
from .train import TrainConfig, fit

log = logging.getLogger("pyrovae")

BINARIZE_CHOICES = ("auto", "dynamic", "fixed", "threshold", "none")


def _auto_binarize(model) -> str | None:
    return "dynamic" if isinstance(getattr(model, "likelihood", None),
                                   likelihoods.Bernoulli) else None


def _has_latents(model, batch) -> bool:
    kwargs = {k: batch[k] for k in input_names(model, batch)}
    return bool(ParticleTracer(model.model, model.guide, kwargs, batch["x"].shape[0]).latent)


def evaluate_model(model, splits: data_mod.Splits, num_samples: int = 1000, *,
                   batch_size: int = 100, seed: int = 0, which=("valid", "test")) -> dict:
    """Per-split summaries of the importance-weighted log-likelihood L_K and the ELBO.

    For a model with no latent sites (an auto-encoder) both reduce to the reconstruction
    log-likelihood log p(x | f(x)), reported as ``recon_log_prob``: not a density of x.
    """
    out = {}
    probe = splits.test.batch(torch.arange(min(2, len(splits.test))))
    latent = _has_latents(model, {k: v.to(module_device(model)) for k, v in probe.items()})
    for name in which:
        ds = getattr(splits, name)
        if ds is None:
            continue
        t0 = time.perf_counter()
        r = metrics_mod.importance_sampling(model, ds, num_samples if latent else 1,
                                            batch_size=batch_size, seed=seed)
        entry = {"seconds": time.perf_counter() - t0, "n": len(ds)}
        if latent:
            ll = metrics_mod.summary(r["log_likelihood"])
            entry.update(num_samples=num_samples, log_likelihood=ll, nll=-ll["mean"],
                         elbo=metrics_mod.summary(r["elbo"]),
                         ess_mean=float(r["ess"].mean()))
        else:
            entry.update(recon_log_prob=metrics_mod.summary(r["log_likelihood"]))
        out[name] = entry
    return out


def write_figures(model, splits: data_mod.Splits, history, out: Path, seed: int = 0) -> list[Path]:
    """reconstructions.png, samples.png, loss.png and latent.png for any model/guide pair.

    Images (data points with two or more axes) are drawn as image grids: test inputs beside
    their reconstructions, and E[x | z] for z ~ p(z). Data points that are vectors or scalars
    are drawn as plots (:func:`pyrovae.analysis.plot_vector_reconstructions`, each dimension's
    reconstruction against its input; :func:`pyrovae.analysis.plot_vector_samples`, a pair plot
    of x ~ p(x) against the test data)."""
    dev = module_device(model)
    test = splits.test.frozen(seed).to(dev)
    paths = []
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        was = getattr(model, "training", False)
        if hasattr(model, "eval"):
            model.eval()
        probe = test.batch(torch.arange(min(2, len(test)), device=dev))["x"]
        vectors = analysis.is_vector_data(probe)
        n = min(500 if vectors else 64, len(test))  # a scatter needs more points than a grid
        batch = test.batch(torch.arange(n, device=dev))
        x = batch["x"]
        rec = model.reconstruct(x) if hasattr(model, "reconstruct") else \
            analysis.reconstruct(model, batch)
        paths.append(analysis.plot_reconstructions(x, rec, out / "reconstructions.png"))
        if _has_latents(model, batch):
            if vectors:
                samples = analysis.prior_predictive_sample(model, batch)
                paths.append(analysis.plot_samples(
                    samples, out / "samples.png", data=x,
                    title="samples x ~ p(x | z), z ~ p(z), against test data"))
            else:
                samples = analysis.prior_predictive_mean(model, batch)
                paths.append(analysis.plot_samples(samples, out / "samples.png",
                                                   title="E[x | z], z ~ p(z)"))
        codes, labels = [], []
        for b in test.batches(256):
            means = analysis.latent_means(model, b)
            if means:
                codes.append(next(iter(means.values())).reshape(len(b["x"]), -1))
                labels.append(b.get("y"))
        if codes:
            z = torch.cat(codes)
            y = None if labels[0] is None else torch.cat(labels).cpu().numpy()
            paths.append(analysis.plot_latent(z, y, out / "latent.png",
                                              title="test-set posterior means"))
        if was:
            model.train()
    if history is not None and history.epochs:
        paths.append(analysis.plot_history(history, out / "loss.png"))
    return paths


def write_inference_data(model, splits, out: Path, num_points: int = 200, num_draws: int = 100,
                         seed: int = 0) -> Path:
    """ArviZ netCDF of ``num_draws`` posterior draws for the first ``num_points`` test points."""
    test = splits.test
    sub = test.subset(torch.arange(min(num_points, len(test))))
    idata = analysis.to_inference_data(model, sub, num_draws, seed=seed)
    return analysis.save_inference_data(idata, out / INFERENCE_DATA)


def train_run(out, *, model: str = "vae", model_config: dict | None = None,
              data: str = "digits", binarize: str = "auto", valid_size: int | None = None,
              data_seed: int = 0, loss: str = "trace_elbo", loss_args: dict | None = None,
              num_samples: int = 1000, eval_batch_size: int = 100, resume: bool = False,
              figures: bool = True, inference_data: bool = True,
              train: TrainConfig | None = None, **settings) -> dict | None:
    """Trains a model into the run folder ``out`` and evaluates it; returns the metrics
    (``None`` in processes other than rank 0 of a distributed run, which write nothing).

    The training settings are a :class:`~pyrovae.train.TrainConfig` (``train``) and/or its
    fields as keywords (``epochs``, ``lr``, ``seed``, ...; default 20 epochs). ``seed`` seeds
    the model's initial weights too (it is built after seeding), so the same call gives the
    same bits. ``data_seed`` fixes the data: the train/validation split and the one-time
    binarisation of validation and test images, whatever the training seed, so runs with
    different seeds are scored on the same test bits. ``binarize="auto"`` binarises
    dynamically for a Bernoulli likelihood and leaves data as is otherwise. ``resume=True``
    continues the run in ``out`` with its stored configuration (``epochs``/``steps`` may
    extend it; where it runs, ``device``, comes from this call).
    """
    out = Path(out)
    cfg_path = out / CONFIG
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise TypeError(f"train_run() got unexpected keyword argument(s) {unknown}")
    if resume:
        cfg = read_json(cfg_path)
        runtime = {k: v for k, v in settings.items() if k not in cfg["train"]
                   or k in ("epochs", "steps")}
        if "epochs" in runtime or "steps" in runtime:  # extend the run: both replaced
            runtime.setdefault("epochs", None)
            runtime.setdefault("steps", None)
        config = TrainConfig.from_dict(cfg["train"], **runtime)
    else:
        if cfg_path.exists() or (out / checkpoint.FILENAME).exists():
            raise FileExistsError(f"out: {out} already holds a run; pass resume to continue it "
                                  f"or choose another folder")
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"out: {out} exists and is not a folder")
        if binarize not in BINARIZE_CHOICES:
            raise ValueError(f"binarize: expected one of {BINARIZE_CHOICES}, got {binarize!r}")
        if train is None and settings.get("epochs") is None and settings.get("steps") is None:
            settings["epochs"] = 20
        config = TrainConfig(**settings) if train is None else \
            dataclasses.replace(train, **settings)
        cfg = {
            "pyrovae": __version__,
            "model": model, "model_config": dict(model_config or {}),
            "data": {**data_mod.portable_spec(data, out), "binarize": binarize,
                     "seed": data_seed, "valid_size": valid_size},
            "train": config.to_dict(),
            "loss": {"name": loss, "args": dict(loss_args or {})},
            "eval": {"num_samples": num_samples, "batch_size": eval_batch_size},
        }
    checks.positive_int(cfg["eval"]["num_samples"], "num_samples")
    checks.positive_int(cfg["eval"]["batch_size"], "eval_batch_size")
    # Build everything (data, model, loss) before writing anything.
    d = cfg["data"]
    splits = data_mod.load(data_mod.resolve_spec(d, out), seed=d["seed"],
                           valid_size=d.get("valid_size"))
    if config.seed is not None:
        pyro.set_rng_seed(config.seed)  # the initial weights follow the run's seed
    net = models.build(cfg["model"], cfg["model_config"], input_shape=splits.train.event_shape)
    if d["binarize"] == "auto":
        d["binarize"] = _auto_binarize(net)
    elif d["binarize"] == "none":
        d["binarize"] = None
    splits = splits.binarized(d["binarize"], d["seed"])
    cfg["loss"]["args"] = infer.loss_arguments(cfg["loss"]["name"], cfg["loss"]["args"],
                                               {"dataset_size": len(splits.train)})
    loss_obj = infer.make_loss(cfg["loss"]["name"], **cfg["loss"]["args"])
    cfg["model_config"] = config_of(net) or cfg["model_config"]
    try:
        cfg_json = to_jsonable(cfg)
    except TypeError as e:
        raise ValueError(f"train: a run folder stores its settings as JSON: {e}; pass names "
                         f"(optimizer='adam', lr_schedule='cosine') rather than objects") from None

    class WriteConfig(Callback):  # fit calls it after checking every argument
        def on_train_start(self, state):
            if state.is_main:  # one run folder, written by rank 0 of a distributed run
                out.mkdir(parents=True, exist_ok=True)
                write_json(cfg_path, cfg_json)

    t0 = time.perf_counter()
    history = fit(net, splits, loss_obj, config=config, checkpoint_dir=out, resume=resume,
                  callbacks=[WriteConfig()])
    train_seconds = time.perf_counter() - t0
    world = ddp.current()
    if world is not None and not world.is_main:
        return None  # rank 0 evaluates and writes the run folder
    metrics = {
        "model": cfg["model"], "data": d["spec"], "device": str(config.device),
        "epochs": len(history.epochs), "steps": history.epochs[-1]["step"] if history.epochs
        else 0, "train_seconds": train_seconds,
        "seconds_per_epoch": (sum(r["seconds"] for r in history.epochs) / len(history.epochs)
                              if history.epochs else math.nan),
        "final_train_loss": history.epochs[-1]["loss"] if history.epochs else math.nan,
        **evaluate_model(net, splits, cfg["eval"]["num_samples"],
                         batch_size=cfg["eval"]["batch_size"], seed=d["seed"]),
        "history": history.to_dict(),
    }
    write_json(out / METRICS, metrics)
    if figures:
        write_figures(net, splits, history, out, seed=d["seed"])
    if inference_data:
        write_inference_data(net, splits, out, seed=d["seed"])
    return metrics


def evaluate_run(run, *, num_samples: int = 1000, split: str = "test", device: str = "cpu",
                 batch_size: int = 100) -> dict:
    """Re-evaluates a run's model on ``split`` with K = ``num_samples``; updates metrics.json."""
    checks.positive_int(num_samples, "num_samples")
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split: expected 'train', 'valid' or 'test', got {split!r}")
    dev = resolve_device(device)
    run = Path(run)
    model, splits, cfg = load_run(run)
    model.to(dev)
    if getattr(splits, split) is None:
        raise ValueError(f"split: this run's data has no {split!r} split")
    result = evaluate_model(model, splits, num_samples, batch_size=batch_size,
                            seed=cfg["data"]["seed"], which=(split,))
    path = run / METRICS
    metrics = read_json(path) if path.exists() else {}
    metrics.setdefault("evaluations", {})[f"{split}_K{num_samples}"] = result[split]
    write_json(path, metrics)
    return result[split]


def sample_run(run, *, n: int = 64, seed: int = 0, out=None) -> tuple[Path, Path]:
    """Draws ``n`` samples from a run's model: a grid ``out`` (default
    ``RUN/sample_seed<SEED>.png``, beside, not over, the training-time ``samples.png``) and the
    samples themselves as an array ``(n, *event_shape)`` of E[x | z] in the ``.npy`` file of the
    same name. Returns both paths."""
    checks.positive_int(n, "n")
    run = Path(run)
    png = Path(out) if out else run / f"sample_seed{seed}.png"
    if png.suffix.lower() != ".png":
        raise ValueError(f"out: expected a .png path, got {str(png)!r}")
    model, splits, cfg = load_run(run)
    test = splits.test
    idx = torch.arange(n) % len(test)  # conditioning inputs (labels) come from test data
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        batch = test.frozen(seed).batch(idx)
        if not _has_latents(model, batch):
            raise ValueError(f"run: the {cfg['model']!r} model has no latent variables to "
                             f"sample from")
        samples = analysis.prior_predictive_mean(model, batch)
    npy = png.with_suffix(".npy")
    png.parent.mkdir(parents=True, exist_ok=True)
    np.save(npy, samples.detach().cpu().numpy())
    return analysis.plot_samples(samples, png), npy
