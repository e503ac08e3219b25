"""``fit``: stochastic variational inference for any model/guide pair.

The loop is Pyro's SVI step (``loss.loss_and_grads`` fills the gradients, an optimiser steps)
with a ``torch.optim`` optimiser over the model's parameters, so optimiser and learning-rate
schedule states checkpoint like any PyTorch run. Parameters created with ``pyro.param`` outside
the model's modules are found by tracing model and guide once and are trained and checkpointed
too.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch
from pyro import poutine

from . import checkpoint as ckpt_io
from ._runtime import resolve_device
from .data import Splits, as_dataset
from .infer import elbo_terms
from .models.base import as_model, input_names

log = logging.getLogger("pyrovae")


class Callback:
    """Hooks :func:`fit` calls. Override what you need; every hook receives the
    :class:`TrainState` (set ``state.stop = True`` to end training after the current step).

    ``wrap`` lets a callback transform the model and guide programs the loss sees (a KL
    schedule wraps them in ``poutine.scale``, say) while metrics still see the originals.
    ``state_dict``/``load_state_dict`` make a callback's own state part of checkpoints.
    """

    def wrap(self, model: Callable, guide: Callable) -> tuple[Callable, Callable]:
        return model, guide

    def on_train_start(self, state: TrainState) -> None:
        pass

    def on_step_end(self, state: TrainState) -> None:
        pass

    def on_epoch_end(self, state: TrainState) -> None:
        pass

    def on_train_end(self, state: TrainState) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class _EpochEndCallback(Callback):
    def __init__(self, fn):
        self.fn = fn

    def on_epoch_end(self, state):
        self.fn(state)


@dataclass
class History:
    """Training records: one dict per epoch, one per logged step.

    Losses are per data point (Pyro ELBOs sum over the batch; we divide by its size).
    """

    epochs: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)

    def series(self, key: str, level: str = "epochs") -> list[float]:
        """Values of ``key`` over epochs (or ``level="steps"``), NaN where absent."""
        return [r.get(key, math.nan) for r in getattr(self, level)]

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, "steps": self.steps}

    @classmethod
    def from_dict(cls, d: dict) -> History:
        return cls(list(d.get("epochs", [])), list(d.get("steps", [])))


@dataclass
class TrainState:
    """What callbacks see: the objects being trained and where the run stands."""

    model: object
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    loss: object
    history: History
    step: int = 0  # optimiser steps taken
    epoch: int = 0  # completed epochs
    batch_in_epoch: int = 0  # batches of the current epoch already taken
    last_loss: float = math.nan  # per data point, last step
    epoch_loss_sum: float = 0.0  # per-data-point losses of this epoch's steps so far, summed
    stop: bool = False


_OPTIMIZERS = {name.lower(): getattr(torch.optim, name)
               for name in ("Adam", "AdamW", "Adamax", "SGD", "RMSprop", "Adagrad", "Adadelta",
                            "NAdam", "RAdam")}


def _make_optimizer(optimizer, params, lr, optimizer_args) -> torch.optim.Optimizer:
    args = dict(optimizer_args or {})
    if isinstance(optimizer, str):
        try:
            cls = _OPTIMIZERS[optimizer.lower()]
        except KeyError:
            raise ValueError(
                f"optimizer: expected one of {sorted(_OPTIMIZERS)} or a torch.optim class or "
                f"factory, got {optimizer!r}"
            ) from None
        return cls(params, lr=lr, **args)
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return optimizer(params, lr=lr, **args)
    if isinstance(optimizer, pyro.optim.PyroOptim):
        # Pyro's wrapper holds a torch optimiser class and its arguments.
        pt_args = optimizer.pt_optim_args
        if callable(pt_args):
            raise ValueError("optimizer: per-parameter PyroOptim arguments (a callable) are not "
                             "supported; pass a torch.optim class and optimizer_args")
        return optimizer.pt_optim_constructor(params, **pt_args)
    if callable(optimizer):
        opt = optimizer(params)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"optimizer factory returned {type(opt).__name__}, expected a "
                            f"torch.optim.Optimizer")
        return opt
    raise TypeError(f"optimizer: expected a name, torch.optim class or factory, got {optimizer!r}")


def burda_lr_lambda(epoch: int) -> float:
    """Burda et al. (2016, §5) schedule: ``10 ** (-i / 7)`` for ``3 ** i`` epochs, i = 0..7
    (3,280 epochs in all; the factor stays at its last value afterwards)."""
    i, end = 0, 1
    while epoch >= end and i < 7:
        i += 1
        end += 3**i
    return 10 ** (-i / 7)


def _make_scheduler(lr_schedule, optimizer, total_steps, interval):
    """Returns ``(scheduler or None, interval)``; named schedules fix their own interval."""
    if lr_schedule is None or lr_schedule == "constant":
        return None, interval
    if lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(total_steps, 1)), "step"
    if lr_schedule == "burda":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, burda_lr_lambda), "epoch"
    if isinstance(lr_schedule, str):
        raise ValueError(f"lr_schedule: expected 'constant', 'cosine', 'burda' or a factory "
                         f"optimizer -> scheduler, got {lr_schedule!r}")
    if not callable(lr_schedule):
        raise TypeError(f"lr_schedule: expected a name or a callable, got {lr_schedule!r}")
    if interval not in ("epoch", "step"):
        raise ValueError(f"lr_schedule_interval: expected 'epoch' or 'step', got {interval!r}")
    return lr_schedule(optimizer), interval


def _param_sites(model_fn, guide_fn, kwargs) -> dict[str, torch.Tensor]:
    """``{name: unconstrained tensor}`` of the param sites one run of guide and model records,
    run in a forked RNG so the training stream is the same with or without this probe."""
    devices = sorted({v.device for v in kwargs.values() if torch.is_tensor(v)
                      and v.device.type == "cuda"}, key=str)
    with torch.random.fork_rng(devices=devices), poutine.block(), \
            poutine.trace(param_only=True) as capture:
        guide_tr = poutine.trace(guide_fn).get_trace(**kwargs)
        poutine.replay(model_fn, trace=guide_tr)(**kwargs)
    out = {}
    for name, site in capture.trace.nodes.items():
        value = site["value"]
        out[name] = value.unconstrained() if hasattr(value, "unconstrained") else value
    return out


def _discover_params(model, model_fn, guide_fn, kwargs) -> tuple[list, dict]:
    """The model's parameters plus ``pyro.param`` tensors kept outside its modules.

    In Pyro's default global param store a parameter name the model shares with another model
    (``encoder$$$net.0.weight``, say) can bring that model's tensor into the trace, although the
    computation uses this model's own. So the names this model's modules register are learnt
    first in an empty scratch store, and only other names count as external parameters.
    """
    def module_params():
        return list(model.parameters()) if isinstance(model, torch.nn.Module) else []

    with pyro.get_param_store().scope():
        scratch = _param_sites(model_fn, guide_fn, kwargs)
    own_ids = {id(p) for p in module_params()}
    own_names = {n for n, v in scratch.items() if id(v) in own_ids}
    sites = _param_sites(model_fn, guide_fn, kwargs)
    params = module_params()
    if params and not sites:
        raise ValueError(
            f"model: it has {len(params)} parameter tensors, but its model and guide record no "
            f"pyro.param sites, so Pyro's ELBOs would compute no gradients. Decorate PyroModule "
            f"methods other than forward with pyro.nn.pyro_method, or register plain modules "
            f"with pyro.module(name, module)"
        )
    seen = {id(p) for p in params}
    extra = {}
    for name, value in sites.items():
        if id(value) in seen or name in own_names or not value.requires_grad:
            continue
        extra[name] = value
        seen.add(id(value))
    return params + list(extra.values()), extra


def _check_positive(value, name, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")


def _fmt(record: dict) -> str:
    keys = [k for k in ("loss", "recon", "kl", "valid_loss", "valid_recon", "valid_kl")
            if k in record]
    return "  ".join(f"{k} {record[k]:.3f}" for k in keys)


def fit(model, data, loss=None, *, epochs: int | None = None, steps: int | None = None,
        batch_size: int = 128, optimizer="adam", lr: float = 1e-3,
        optimizer_args: dict | None = None, lr_schedule=None,
        lr_schedule_interval: str = "epoch", device="cpu", seed: int | None = 0,
        validation_data=None, callbacks: Iterable = (),
        checkpoint_dir: str | Path | None = None, checkpoint_every: int = 1,
        resume: bool | str | Path = False, log_every: int | None = None,
        progress: bool | None = None,
        clip_grad_norm: float | None = None) -> History:
    """Trains ``model`` (a model/guide pair) on ``data`` by stochastic variational inference.

    :param model: an object with ``model`` and ``guide`` (a ``PyroModule``), or a
        ``(model_fn, guide_fn)`` tuple. Batches reach them as keyword arguments named like
        their parameters (``x``, and ``y`` or ``index`` if they take them).
    :param data: a :class:`~pyrovae.data.Dataset`, :class:`~pyrovae.data.Splits` (its ``valid``
        split then validates), a tensor/array, an ``(x, y)`` tuple or a map-style torch dataset.
    :param loss: a Pyro ELBO (anything with ``loss_and_grads(model, guide, **kw)``) or a callable
        ``loss(model, guide, **kw) -> differentiable tensor``; default ``Trace_ELBO()``. A loss
        with a ``last_terms`` dict after each step has those terms logged too; a loss that is
        also a :class:`Callback` is run as one (after ``callbacks``), so it can follow the
        step count and put its state into checkpoints.
    :param epochs: passes over the data; ``steps`` caps optimiser steps (one of them needed).
    :param optimizer: a name (``"adam"``, ``"sgd"``, ...), a ``torch.optim`` class (built with
        ``lr`` and ``optimizer_args``), a factory ``params -> Optimizer`` or a ``pyro.optim`` one.
    :param lr_schedule: ``"cosine"`` (per step, to zero), ``"burda"`` (Burda et al. 2016, per
        epoch) or a factory ``optimizer -> scheduler`` stepped per ``lr_schedule_interval``.
    :param device: ``"cpu"`` or ``"cuda[:N]"``; model and data move there once.
    :param seed: seeds torch, NumPy and Python (``pyro.set_rng_seed``) and the data order.
    :param callbacks: :class:`Callback` objects, or callables run at each epoch's end.
    :param checkpoint_dir: folder for ``checkpoint.pt`` (written atomically every
        ``checkpoint_every`` epochs and at the end).
    :param resume: ``True`` continues from ``checkpoint_dir``'s checkpoint if there is one; a
        path continues from that file. Optimiser, schedule, RNG and data-order states are
        restored, so a resumed run takes the same steps as an uninterrupted one.
    :param log_every: steps between logged records of the ELBO's terms (each costs one extra
        forward pass); default every 50 steps, at least once per epoch, at most every 10.
    :param progress: show a progress bar (default: when writing to a terminal).
    :param clip_grad_norm: clip the gradients' total norm to this value.
    :returns: the :class:`History`; the model is trained in place and left in eval mode.
    """
    # --- check everything before any work is done or any file written -------------------------
    model = as_model(model)
    if epochs is None and steps is None:
        raise ValueError("fit: give epochs, steps, or both")
    _check_positive(epochs, "epochs", allow_none=True)
    _check_positive(steps, "steps", allow_none=True)
    _check_positive(batch_size, "batch_size")
    _check_positive(checkpoint_every, "checkpoint_every")
    _check_positive(log_every, "log_every", allow_none=True)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr: expected a positive finite number, got {lr!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm: expected a positive number, got {clip_grad_norm!r}")
    dev = resolve_device(device)
    if isinstance(data, Splits):
        validation_data = data.valid if validation_data is None else validation_data
        data = data.train
    train = as_dataset(data, name="data").to(dev)
    valid = None if validation_data is None else \
        as_dataset(validation_data, name="validation_data").frozen(1).to(dev)
    if batch_size > len(train):
        raise ValueError(f"batch_size: {batch_size} is larger than the {len(train)} training "
                         f"data points")
    check = getattr(model, "check_data", None)
    if check is not None:
        # Dynamic binarisation draws from x, so check one draw rather than the probabilities.
        check(train.frozen(0).x, "data")
        if valid is not None:
            check(valid.x, "validation_data")
    loss = pyro.infer.Trace_ELBO() if loss is None else loss
    if not (hasattr(loss, "loss_and_grads") or callable(loss)):
        raise TypeError(f"loss: expected a Pyro ELBO or a callable, got {type(loss).__name__}")
    callbacks = list(callbacks)
    for c in callbacks:
        if not isinstance(c, Callback) and not callable(c):
            raise TypeError(f"callbacks: expected Callback objects or callables, got {c!r}")
    callbacks = [c if isinstance(c, Callback) else _EpochEndCallback(c) for c in callbacks]
    if isinstance(loss, Callback) and not any(c is loss for c in callbacks):
        callbacks.append(loss)  # a loss that follows the step (an annealed target, say)
    resume_path = None
    if resume is True:
        if checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir (or pass the checkpoint's path)")
        candidate = Path(checkpoint_dir) / ckpt_io.FILENAME
        resume_path = candidate if candidate.is_file() else None
    elif resume:
        resume_path = Path(resume)
    saved = ckpt_io.load(resume_path) if resume_path is not None else None

    # --- set up ------------------------------------------------------------------------------
    if seed is not None:
        pyro.set_rng_seed(seed)
    gen = torch.Generator(device=dev)
    gen.manual_seed(0 if seed is None else seed)
    if isinstance(model, torch.nn.Module):
        model.to(dev)
        model.train()
    model_fn, guide_fn = model.model, model.guide
    for c in callbacks:
        model_fn, guide_fn = c.wrap(model_fn, guide_fn)
    # A two-point batch to learn the model's inputs and parameters, drawn without touching `gen`.
    probe = train.batch(torch.arange(min(2, len(train)), device=dev),
                        torch.Generator(device=dev).manual_seed(0))
    names = input_names(model, probe)
    n_batches = len(train) // batch_size
    if log_every is None:  # every 50 steps, at least once per epoch, never more than every 10
        log_every = min(50, max(n_batches, 10))
    total_steps = steps if steps is not None else epochs * n_batches
    if epochs is None:
        epochs = math.ceil(steps / n_batches)

    params, extra = _discover_params(model, model_fn, guide_fn,
                                     {k: probe[k] for k in names})
    if not params:
        raise ValueError("model: found no trainable parameters in the model or guide")
    opt = _make_optimizer(optimizer, params, lr, optimizer_args)
    scheduler, interval = _make_scheduler(lr_schedule, opt, total_steps,
                                          lr_schedule_interval)
    state = TrainState(model, opt, scheduler, loss, History())
    order = None
    if saved is not None:
        ckpt_io.restore_model(model, saved, extra)
        opt.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved.get("scheduler") is not None:
            scheduler.load_state_dict(saved["scheduler"])
        ts = saved["train_state"]
        state.step, state.epoch = ts["step"], ts["epoch"]
        state.batch_in_epoch = ts["batch_in_epoch"]
        state.epoch_loss_sum = ts.get("epoch_loss_sum", 0.0)
        state.history = History.from_dict(ts["history"])
        for c, s in zip(callbacks, ts.get("callbacks", [])):
            c.load_state_dict(s)
        ckpt_io.set_rng_state(saved["rng"], gen)
        if ts.get("order") is not None:
            order = ts["order"].to(dev)
        log.info("resumed from %s at epoch %d, step %d", resume_path, state.epoch, state.step)

    def write_checkpoint():
        if checkpoint_dir is None:
            return
        ckpt_io.save(Path(checkpoint_dir) / ckpt_io.FILENAME, {
            **ckpt_io.model_payload(model, extra),
            "optimizer": opt.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "train_state": {
                "step": state.step, "epoch": state.epoch,
                "batch_in_epoch": state.batch_in_epoch,
                "epoch_loss_sum": state.epoch_loss_sum,
                "order": order.cpu() if order is not None and state.batch_in_epoch else None,
                "history": state.history.to_dict(),
                "callbacks": [c.state_dict() for c in callbacks],
            },
            "rng": ckpt_io.rng_state(gen),
        })

    def step_once(kwargs) -> float:
        opt.zero_grad(set_to_none=True)
        if hasattr(loss, "loss_and_grads"):
            value = float(loss.loss_and_grads(model_fn, guide_fn, **kwargs))
        else:
            t = loss(model_fn, guide_fn, **kwargs)
            t.backward()
            value = float(t.detach())
        if not math.isfinite(value):
            raise FloatingPointError(
                f"fit: the loss is {value} at step {state.step + 1} (epoch {state.epoch + 1});"
                f" the parameters are those after step {state.step}. Try a lower lr, "
                f"clip_grad_norm, or check the data."
            )
        if clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        opt.step()
        if scheduler is not None and interval == "step":
            scheduler.step()
        return value

    def validate() -> dict:
        sums, count = {}, 0
        was = getattr(model, "training", None)
        if was is not None:
            model.eval()
        for batch in valid.batches(max(batch_size, 256)):
            t = elbo_terms(model.model, model.guide, {k: batch[k] for k in names})
            for k, v in t.items():
                sums[k] = sums.get(k, 0.0) + v
            count += batch["x"].shape[0]
        if was:
            model.train()
        return {f"valid_{k}": v / count for k, v in sums.items()}

    bar = None
    if progress or progress is None:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=state.step, disable=None if progress is None
                   else not progress, unit="step", dynamic_ncols=True, leave=True)
    for c in callbacks:
        c.on_train_start(state)
    try:
        while state.epoch < epochs and not state.stop and state.step < total_steps:
            if order is None or state.batch_in_epoch == 0:
                order = torch.randperm(len(train), generator=gen, device=dev)
            t0 = time.perf_counter()
            while state.batch_in_epoch < n_batches:
                i = state.batch_in_epoch
                batch = train.batch(order[i * batch_size:(i + 1) * batch_size], gen)
                kwargs = {k: batch[k] for k in names}
                value = step_once(kwargs) / batch_size
                state.step += 1
                state.batch_in_epoch += 1
                state.last_loss = value
                state.epoch_loss_sum += value
                if state.step % log_every == 0:
                    with torch.no_grad():
                        terms = elbo_terms(model.model, model.guide, kwargs)
                    rec = {"step": state.step, "epoch": state.epoch + 1, "loss": value,
                           **{k: v / batch_size for k, v in terms.items() if k != "loss"}}
                    rec.update(getattr(loss, "last_terms", None) or {})
                    state.history.steps.append(rec)
                    if bar is not None:
                        bar.set_postfix({k: f"{rec[k]:.2f}" for k in ("loss", "recon", "kl")
                                         if k in rec}, refresh=False)
                if bar is not None:
                    bar.update(1)
                for c in callbacks:
                    c.on_step_end(state)
                if state.stop or state.step >= total_steps:
                    break
            if state.batch_in_epoch < n_batches:  # stopped mid-epoch
                break
            state.epoch += 1
            rec = {"epoch": state.epoch, "step": state.step,
                   "loss": state.epoch_loss_sum / n_batches,
                   "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
            state.batch_in_epoch = 0
            state.epoch_loss_sum = 0.0
            if scheduler is not None and interval == "epoch":
                scheduler.step()
            last_terms = []  # this epoch's step records: the newest ones
            for r in reversed(state.history.steps):
                if r.get("epoch") != state.epoch:
                    break
                last_terms.append(r)
            for k in ("recon", "kl"):
                if last_terms:
                    rec[k] = sum(r.get(k, 0.0) for r in last_terms) / len(last_terms)
            if valid is not None:
                with torch.no_grad():
                    rec.update(validate())
            state.history.epochs.append(rec)
            log.info("epoch %d/%d  %s  (%.1f s)", state.epoch, epochs, _fmt(rec),
                     rec["seconds"])
            for c in callbacks:
                c.on_epoch_end(state)
            if state.epoch % checkpoint_every == 0:
                write_checkpoint()
        for c in callbacks:
            c.on_train_end(state)
        write_checkpoint()
    finally:
        if bar is not None:
            bar.close()
    if isinstance(model, torch.nn.Module):
        model.eval()
    return state.history

