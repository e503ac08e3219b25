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

import inspect
import json
import logging
import math
import os
import time
from pathlib import Path

import torch

from . import __version__, analysis, checkpoint, infer, likelihoods, models
from . import data as data_mod
from . import distributed as ddp
from . import metrics as metrics_mod
from ._runtime import module_device, resolve_device
from .infer.particles import ParticleTracer
from .models.base import input_names, to_jsonable
from .train import Callback, fit

log = logging.getLogger("pyrovae")

CONFIG = "config.json"
METRICS = "metrics.json"
INFERENCE_DATA = "inference_data.nc"
BINARIZE_CHOICES = ("auto", "dynamic", "fixed", "threshold", "none")


def write_json(path: Path, obj) -> None:
    """Writes JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"run: {path} is missing; is this a pyrovae run folder?") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"run: {path} is not valid JSON ({e})") from None


def _auto_binarize(model) -> str | None:
    return "dynamic" if isinstance(getattr(model, "likelihood", None),
                                   likelihoods.Bernoulli) else None


def _load_data(cfg: dict) -> data_mod.Splits:
    d = cfg["data"]
    splits = data_mod.load(d["spec"], seed=d["seed"], valid_size=d.get("valid_size"))
    return splits.binarized(d["binarize"], d["seed"])


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


def _check_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")


def train_run(out, *, model: str = "vae", model_config: dict | None = None,
              data: str = "digits", binarize: str = "auto", valid_size: int | None = None,
              epochs: int | None = 20, steps: int | None = None, batch_size: int = 128,
              lr: float = 1e-3, optimizer: str = "adam", lr_schedule: str | None = None,
              loss: str = "trace_elbo", loss_args: dict | None = None, device: str = "cpu",
              seed: int = 0, num_samples: int = 1000, eval_batch_size: int = 100,
              resume: bool = False, figures: bool = True, inference_data: bool = True,
              progress: bool | None = None, keep_checkpoints: int = 1,
              clip_grad_norm: float | None = None, precision: str = "fp32") -> dict | None:
    """Trains a model into the run folder ``out`` and evaluates it; returns the metrics
    (``None`` in processes other than rank 0 of a distributed run, which write nothing).

    ``binarize="auto"`` binarises dynamically for a Bernoulli likelihood and leaves data as is
    otherwise. ``resume=True`` continues the run in ``out`` with its stored configuration
    (``epochs``/``steps`` may extend it).
    """
    out = Path(out)
    cfg_path = out / CONFIG
    if resume:
        cfg = read_json(cfg_path)
        if epochs is not None or steps is not None:
            cfg["train"].update(epochs=epochs, steps=steps)
    else:
        if cfg_path.exists() or (out / checkpoint.FILENAME).exists():
            raise FileExistsError(f"out: {out} already holds a run; pass resume to continue it "
                                  f"or choose another folder")
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"out: {out} exists and is not a folder")
        if binarize not in BINARIZE_CHOICES:
            raise ValueError(f"binarize: expected one of {BINARIZE_CHOICES}, got {binarize!r}")
        cfg = {
            "pyrovae": __version__,
            "model": model, "model_config": dict(model_config or {}),
            "data": {"spec": data, "binarize": binarize, "seed": seed, "valid_size": valid_size},
            "train": {"epochs": epochs, "steps": steps, "batch_size": batch_size, "lr": lr,
                      "optimizer": optimizer, "lr_schedule": lr_schedule, "seed": seed,
                      "keep_checkpoints": keep_checkpoints, "clip_grad_norm": clip_grad_norm,
                      "precision": precision},
            "loss": {"name": loss, "args": dict(loss_args or {})},
            "eval": {"num_samples": num_samples, "batch_size": eval_batch_size},
        }
    _check_int(cfg["eval"]["num_samples"], "num_samples")
    _check_int(cfg["eval"]["batch_size"], "eval_batch_size")
    # Build everything (data, model, loss) before writing anything.
    d = cfg["data"]
    splits = data_mod.load(d["spec"], seed=d["seed"], valid_size=d.get("valid_size"))
    net = models.build(cfg["model"], cfg["model_config"], input_shape=splits.train.event_shape)
    if d["binarize"] == "auto":
        d["binarize"] = _auto_binarize(net)
    elif d["binarize"] == "none":
        d["binarize"] = None
    splits = splits.binarized(d["binarize"], d["seed"])
    factory = infer.LOSSES.get(cfg["loss"]["name"])
    if factory is not None and "dataset_size" not in cfg["loss"]["args"]:
        try:  # a minibatch estimator over the data set (β-TCVAE's) needs N: it is known here
            takes_n = "dataset_size" in inspect.signature(factory).parameters
        except (TypeError, ValueError):
            takes_n = False
        if takes_n:
            cfg["loss"]["args"]["dataset_size"] = len(splits.train)
    loss_obj = infer.make_loss(cfg["loss"]["name"], **cfg["loss"]["args"])
    cfg["model_config"] = models.base.config_of(net) or cfg["model_config"]
    t = cfg["train"]
    cfg_json = to_jsonable(cfg)

    class WriteConfig(Callback):  # fit calls it after checking every argument
        def on_train_start(self, state):
            if state.is_main:  # one run folder, written by rank 0 of a distributed run
                out.mkdir(parents=True, exist_ok=True)
                write_json(cfg_path, cfg_json)

    t0 = time.perf_counter()
    history = fit(net, splits, loss_obj, epochs=t["epochs"], steps=t["steps"],
                  batch_size=t["batch_size"], optimizer=t["optimizer"], lr=t["lr"],
                  lr_schedule=t["lr_schedule"], device=device, seed=t["seed"],
                  checkpoint_dir=out, resume=resume, progress=progress,
                  keep_checkpoints=t.get("keep_checkpoints", 1),
                  clip_grad_norm=t.get("clip_grad_norm"), precision=t.get("precision", "fp32"),
                  callbacks=[WriteConfig()])
    train_seconds = time.perf_counter() - t0
    world = ddp.current()
    if world is not None and not world.is_main:
        return None  # rank 0 evaluates and writes the run folder
    metrics = {
        "model": cfg["model"], "data": d["spec"], "device": str(device),
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


def load_run(run) -> tuple[object, data_mod.Splits, dict]:
    """(model with trained weights, data splits, config) of a run folder."""
    run = Path(run)
    cfg = read_json(run / CONFIG)
    splits = _load_data(cfg)
    # Rebuilt from config.json, which also holds settings of models that keep no config.
    model = models.build(cfg["model"], cfg["model_config"], input_shape=splits.train.event_shape)
    checkpoint.restore_model(model, checkpoint.load(run / checkpoint.FILENAME))
    model.eval()
    return model, splits, cfg


def evaluate_run(run, *, num_samples: int = 1000, split: str = "test", device: str = "cpu",
                 batch_size: int = 100) -> dict:
    """Re-evaluates a run's model on ``split`` with K = ``num_samples``; updates metrics.json."""
    _check_int(num_samples, "num_samples")
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


def sample_run(run, *, n: int = 64, seed: int = 0, out=None) -> Path:
    """Writes a grid of ``n`` samples from a run's model (default ``RUN/samples.png``)."""
    _check_int(n, "n")
    run = Path(run)
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
    return analysis.plot_samples(samples, Path(out) if out else run / "samples.png")
