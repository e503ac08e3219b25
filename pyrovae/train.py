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
from . import distributed as ddp
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
    last_loss: float = math.nan  # per data point, last step (NaN when it was skipped)
    epoch_loss_sum: float = 0.0  # per-data-point losses of this epoch's good steps, summed
    epoch_good_steps: int = 0  # this epoch's steps whose update was applied
    nonfinite_streak: int = 0  # consecutive steps skipped for a non-finite loss or gradient
    nonfinite_total: int = 0  # all steps skipped so far
    stop: bool = False
    is_main: bool = True  # False in processes other than rank 0 of a distributed run


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


def _probe(model_fn, guide_fn, kwargs):
    """One run of guide and replayed model, in a forked RNG so the training stream is the same
    with or without it. Returns ``({param name: unconstrained tensor}, model_trace,
    guide_trace)``."""
    devices = sorted({v.device for v in kwargs.values() if torch.is_tensor(v)
                      and v.device.type == "cuda"}, key=str)
    # Validation off: the probe learns structure; values (a NaN network output, say) are the
    # first step's business, where the non-finite guard handles them.
    with torch.random.fork_rng(devices=devices), pyro.validation_enabled(False), \
            poutine.block(), poutine.trace(param_only=True) as capture:
        guide_tr = poutine.trace(guide_fn).get_trace(**kwargs)
        model_tr = poutine.trace(poutine.replay(model_fn, trace=guide_tr)).get_trace(**kwargs)
    params = {}
    for name, site in capture.trace.nodes.items():
        value = site["value"]
        params[name] = value.unconstrained() if hasattr(value, "unconstrained") else value
    return params, model_tr, guide_tr


def _discover_params(model, model_fn, guide_fn, kwargs):
    """The model's parameters plus ``pyro.param`` tensors kept outside its modules, and the
    probe's traces.

    In Pyro's default global param store a parameter name the model shares with another model
    (``encoder$$$net.0.weight``, say) can bring that model's tensor into the trace, although the
    computation uses this model's own. So the names this model's modules register are learnt
    first in an empty scratch store, and only other names count as external parameters.
    """
    def module_params():
        return list(model.parameters()) if isinstance(model, torch.nn.Module) else []

    with pyro.get_param_store().scope():
        scratch, _, _ = _probe(model_fn, guide_fn, kwargs)
    own_ids = {id(p) for p in module_params()}
    own_names = {n for n, v in scratch.items() if id(v) in own_ids}
    sites, model_tr, guide_tr = _probe(model_fn, guide_fn, kwargs)
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
    return params + list(extra.values()), extra, model_tr, guide_tr


def _sample_sites(trace):
    return {n: s for n, s in trace.nodes.items() if s["type"] == "sample"
            and not s["infer"].get("_deterministic")
            and type(s["fn"]).__name__ != "_Subsample"}


def check_sites(model_tr, guide_tr, loss=None) -> None:
    """Raises ``ValueError`` when model and guide do not pair up, before any training.

    Every guide sample site must exist in the model (else it only adds log q terms), and every
    latent model site must be in the guide unless it is enumerated (else Pyro silently draws it
    from the prior and the ELBO is not the one intended). A loss with a
    ``check_traces(model_trace, guide_trace)`` method checks the sites it needs.
    """
    model_sites, guide_sites = _sample_sites(model_tr), _sample_sites(guide_tr)
    for name, site in guide_sites.items():
        # auxiliary sites (an AutoNormal's ``*_unconstrained``) are the guide's own business
        if site["infer"].get("is_auxiliary"):
            continue
        if not site["is_observed"] and name not in model_sites:
            raise ValueError(
                f"model/guide: the guide samples site {name!r}, which the model does not have "
                f"(model sites: {sorted(model_sites)})"
            )
    for name, site in model_sites.items():
        if site["is_observed"] or name in guide_sites:
            continue
        if site["infer"].get("enumerate") is None:
            raise ValueError(
                f"model/guide: the model's latent site {name!r} has no site of that name in the "
                f"guide (guide sites: {sorted(guide_sites)}); Pyro would draw it from the prior. "
                f"Add it to the guide, or mark it infer={{'enumerate': 'parallel'}} and use "
                f"TraceEnum_ELBO"
            )
    check = getattr(loss, "check_traces", None)
    if callable(check):
        check(model_tr, guide_tr)


def _check_positive(value, name, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")


def _check_number(value, name, low=0.0, high=math.inf, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not (low < value < high):
        raise ValueError(f"{name}: expected a number in ({low:g}, {high:g}), got {value!r}")


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """Euclidean norm of all gradients together (inf or NaN if any entry is)."""
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads) if hasattr(torch, "_foreach_norm") else \
        [torch.linalg.vector_norm(g) for g in grads]
    return torch.linalg.vector_norm(torch.stack([n.to(grads[0].device) for n in norms]))


def _fmt(record: dict) -> str:
    keys = [k for k in ("loss", "recon", "kl", "valid_loss", "valid_recon", "valid_kl")
            if k in record]
    return "  ".join(f"{k} {record[k]:.3f}" for k in keys)


class _Fit:
    """One call of :func:`fit`: argument checks (no side effects), set-up, the loop."""

    def __init__(self, model, data, loss, *, epochs, steps, batch_size, optimizer, lr,
                 optimizer_args, lr_schedule, lr_schedule_interval, device, seed,
                 validation_data, callbacks, checkpoint_dir, checkpoint_every, keep_checkpoints,
                 resume, log_every, progress, clip_grad_norm, max_nonfinite, nonfinite_patience,
                 nonfinite_lr_factor, validation, distributed, precision):
        # --- every check before any work is done or any file written ------------------------
        self.model = as_model(model)
        if epochs is None and steps is None:
            raise ValueError("fit: give epochs, steps, or both")
        _check_positive(epochs, "epochs", allow_none=True)
        _check_positive(steps, "steps", allow_none=True)
        _check_positive(batch_size, "batch_size")
        _check_positive(checkpoint_every, "checkpoint_every")
        _check_positive(log_every, "log_every", allow_none=True)
        _check_positive(max_nonfinite, "max_nonfinite")
        _check_positive(nonfinite_patience, "nonfinite_patience")
        _check_number(lr, "lr")
        _check_number(clip_grad_norm, "clip_grad_norm", allow_none=True)
        _check_number(nonfinite_lr_factor, "nonfinite_lr_factor", 0.0, 1.0 + 1e-12)
        if validation not in ("first", "all", "none"):
            raise ValueError(f"validation: expected 'first', 'all' or 'none', got {validation!r}")
        self.validation = validation
        self.dev = resolve_device(device)
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision: expected 'fp32' or 'bf16', got {precision!r}")
        self.bf16 = precision == "bf16"
        self.world = ddp.join(distributed, self.dev)
        if self.world is not None and self.dev.type == "cuda" and self.dev.index is None:
            self.dev = torch.device("cuda", self.world.local_rank)
        self.main = self.world is None or self.world.is_main
        self.procs = 1 if self.world is None else self.world.size
        if isinstance(data, Splits):
            validation_data = data.valid if validation_data is None else validation_data
            data = data.train
        self.train = as_dataset(data, name="data").to(self.dev)
        self.valid = None if validation_data is None else \
            as_dataset(validation_data, name="validation_data").frozen(1).to(self.dev)
        if batch_size * self.procs > len(self.train):
            across = f" x {self.procs} processes" if self.procs > 1 else ""
            raise ValueError(f"batch_size: {batch_size}{across} is larger than the "
                             f"{len(self.train)} training data points")
        check = getattr(self.model, "check_data", None)
        if check is not None:
            # Dynamic binarisation draws from x, so check one draw rather than probabilities.
            check(self.train.frozen(0).x, "data")
            if self.valid is not None:
                check(self.valid.x, "validation_data")
        self.loss = pyro.infer.Trace_ELBO() if loss is None else loss
        if not (hasattr(self.loss, "loss_and_grads") or callable(self.loss)):
            raise TypeError(f"loss: expected a Pyro ELBO or a callable, got "
                            f"{type(self.loss).__name__}")
        callbacks = list(callbacks)
        for c in callbacks:
            if not isinstance(c, Callback) and not callable(c):
                raise TypeError(f"callbacks: expected Callback objects or callables, got {c!r}")
        self.callbacks = [c if isinstance(c, Callback) else _EpochEndCallback(c)
                          for c in callbacks]
        if isinstance(self.loss, Callback) and not any(c is self.loss for c in self.callbacks):
            self.callbacks.append(self.loss)  # a loss that follows the step (annealed target)
        self.ckpts = None if checkpoint_dir is None else \
            ckpt_io.CheckpointDir(checkpoint_dir, keep_checkpoints)
        self.saved = self.resume_path = None
        if resume is True:
            if self.ckpts is None:
                raise ValueError("resume=True needs checkpoint_dir (or pass the checkpoint's path)")
            self.saved, self.resume_path = self.ckpts.load_latest()
        elif resume:
            self.resume_path = Path(resume)
            self.saved = ckpt_io.load(self.resume_path)
        self.batch_size, self.optimizer_spec, self.lr = batch_size, optimizer, lr
        self.optimizer_args, self.lr_schedule = optimizer_args, lr_schedule
        self.lr_schedule_interval, self.seed, self.progress = lr_schedule_interval, seed, progress
        self.checkpoint_every, self.clip = checkpoint_every, clip_grad_norm
        self.max_nonfinite, self.patience = max_nonfinite, nonfinite_patience
        self.lr_factor = nonfinite_lr_factor
        self.global_batch = batch_size * self.procs  # one step's data across all processes
        self.n_batches = len(self.train) // self.global_batch
        # every 50 steps, at least once per epoch, never more often than every 10
        self.log_every = log_every or min(50, max(self.n_batches, 10))
        self.total_steps = steps if steps is not None else epochs * self.n_batches
        self.epochs = epochs if epochs is not None else math.ceil(steps / self.n_batches)

    # --- set-up ---------------------------------------------------------------------------------
    def setup(self) -> None:
        rank = 0 if self.world is None else self.world.rank
        if self.seed is not None:
            pyro.set_rng_seed(self.seed + rank)  # each process its own latent noise
        self.gen = torch.Generator(device=self.dev)  # data order: the same in every process
        self.gen.manual_seed(0 if self.seed is None else self.seed)
        model = self.model
        if isinstance(model, torch.nn.Module):
            model.to(self.dev)
            model.train()
        self.model_fn, self.guide_fn = model.model, model.guide
        for c in self.callbacks:
            self.model_fn, self.guide_fn = c.wrap(self.model_fn, self.guide_fn)
        # A two-point batch to learn the inputs, parameters and sites, drawn without `gen`.
        probe = self.train.batch(torch.arange(min(2, len(self.train)), device=self.dev),
                                 torch.Generator(device=self.dev).manual_seed(0))
        self.names = input_names(model, probe)
        kwargs = {k: probe[k] for k in self.names}
        self.params, self.extra, model_tr, guide_tr = _discover_params(
            model, self.model_fn, self.guide_fn, kwargs)
        check_sites(model_tr, guide_tr, self.loss)
        if not self.params:
            raise ValueError("model: found no trainable parameters in the model or guide")
        if self.world is not None:  # every process starts from rank 0's weights
            buffers = list(model.buffers()) if isinstance(model, torch.nn.Module) else []
            ddp.broadcast_(self.params + buffers)
        self.opt = _make_optimizer(self.optimizer_spec, self.params, self.lr,
                                   self.optimizer_args)
        self.scheduler, self.interval = _make_scheduler(
            self.lr_schedule, self.opt, self.total_steps, self.lr_schedule_interval)
        self.state = TrainState(model, self.opt, self.scheduler, self.loss, History(),
                                is_main=self.main)
        self.order = None
        if self.saved is not None:
            self._restore(self.saved)
        self.first_step = self.state.step + 1
        if self.world is not None:
            ddp.barrier()  # every process has passed its checks before any writes a file

    def _restore(self, saved: dict) -> None:
        state = self.state
        ckpt_io.restore_model(self.model, saved, self.extra)
        self.opt.load_state_dict(saved["optimizer"])
        if self.scheduler is not None and saved.get("scheduler") is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        ts = saved["train_state"]
        state.step, state.epoch = ts["step"], ts["epoch"]
        state.batch_in_epoch = ts["batch_in_epoch"]
        state.epoch_loss_sum = ts.get("epoch_loss_sum", 0.0)
        state.epoch_good_steps = ts.get("epoch_good_steps", state.batch_in_epoch)
        state.nonfinite_total = ts.get("nonfinite_total", 0)
        state.history = History.from_dict(ts["history"])
        for c, s in zip(self.callbacks, ts.get("callbacks", [])):
            c.load_state_dict(s)
        rng = saved["rng"]
        if "per_rank" in rng:
            ranks = rng["per_rank"]
            rank = 0 if self.world is None else self.world.rank
            if len(ranks) != self.procs:
                log.warning("checkpoint has RNG states of %d processes, this run has %d; "
                            "latent noise will not continue its stream", len(ranks), self.procs)
            rng = ranks[rank % len(ranks)]
        ckpt_io.set_rng_state(rng, self.gen)
        if ts.get("order") is not None:
            self.order = ts["order"].to(self.dev)
        log.info("resumed from %s at epoch %d, step %d", self.resume_path, state.epoch,
                 state.step)

    def write_checkpoint(self):
        """Rank 0 writes; in a distributed run every process must call this (RNG gather)."""
        if self.ckpts is None:
            return None
        rng = ckpt_io.rng_state(self.gen)
        if self.world is not None:
            rng = {"per_rank": ddp.gather(rng)}
            if not self.main:
                return None
        state = self.state
        return self.ckpts.save({
            **ckpt_io.model_payload(self.model, self.extra),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "train_state": {
                "step": state.step, "epoch": state.epoch,
                "batch_in_epoch": state.batch_in_epoch,
                "epoch_loss_sum": state.epoch_loss_sum,
                "epoch_good_steps": state.epoch_good_steps,
                "nonfinite_total": state.nonfinite_total,
                "order": self.order.cpu() if self.order is not None and state.batch_in_epoch
                else None,
                "history": state.history.to_dict(),
                "callbacks": [c.state_dict() for c in self.callbacks],
            },
            "rng": rng,
        }, state.step)

    # --- one step -------------------------------------------------------------------------------
    def step(self, kwargs) -> float:
        """One SVI step. Returns the loss per data point, or NaN when a non-finite loss or
        gradient made it skip the update (parameters and optimiser state untouched)."""
        opt, loss = self.opt, self.loss
        opt.zero_grad(set_to_none=True)
        validate = self.validation == "all" or (
            self.validation == "first" and self.state.step + 1 == self.first_step)
        try:
            with pyro.validation_enabled(validate), torch.autocast(
                    self.dev.type, dtype=torch.bfloat16, enabled=self.bf16):
                if hasattr(loss, "loss_and_grads"):
                    value = float(loss.loss_and_grads(self.model_fn, self.guide_fn, **kwargs))
                else:
                    t = loss(self.model_fn, self.guide_fn, **kwargs)
                    t.backward()
                    value = float(t.detach())
        except ValueError as e:
            # With validation on, a NaN distribution parameter raises in torch rather than
            # giving a NaN loss; it is the same numerical failure.
            if "found invalid values" not in str(e):
                raise
            value = math.nan
        if self.world is not None:  # sum gradients and losses over processes
            value = ddp.all_reduce_grads_(self.params, [value])[0]
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = float(_total_norm(grads))
        if not (math.isfinite(value) and math.isfinite(norm)):
            opt.zero_grad(set_to_none=True)
            self._nonfinite(value, norm)
            return math.nan
        self.state.nonfinite_streak = 0
        if self.clip is not None and norm > self.clip:
            torch._foreach_mul_(grads, self.clip / (norm + 1e-6))
        opt.step()
        if self.scheduler is not None and self.interval == "step":
            self.scheduler.step()
        return value / self.global_batch

    def _nonfinite(self, value, norm) -> None:
        state = self.state
        state.nonfinite_streak += 1
        state.nonfinite_total += 1
        step = state.step + 1
        warn = log.warning if self.main else log.debug
        warn("step %d: non-finite %s (loss %s, gradient norm %s); update skipped, "
                    "%d in a row", step, "loss" if not math.isfinite(value) else "gradient",
                    value, norm, state.nonfinite_streak)
        if state.nonfinite_streak % self.patience == 0:
            for group in self.opt.param_groups:
                group["lr"] *= self.lr_factor
            if self.scheduler is not None and hasattr(self.scheduler, "base_lrs"):
                self.scheduler.base_lrs = [b * self.lr_factor for b in self.scheduler.base_lrs]
            warn("learning rate lowered to %g after %d non-finite steps in a row",
                        self.opt.param_groups[0]["lr"], state.nonfinite_streak)
        if state.nonfinite_streak >= self.max_nonfinite:
            state.step += 1  # this batch is consumed
            state.batch_in_epoch += 1
            path = self.write_checkpoint()
            where = f"; they are saved in {path}" if path else ""
            raise FloatingPointError(
                f"fit: {state.nonfinite_streak} consecutive steps (up to step {step}, epoch "
                f"{state.epoch + 1}) gave a non-finite loss or gradient, so training stopped. "
                f"The parameters are those of the last good step{where}. Try a lower lr, "
                f"clip_grad_norm, or check the data and the model for values that overflow."
            )

    # --- the loop -------------------------------------------------------------------------------
    def validate(self) -> dict:
        sums, count, model = {}, 0, self.model
        was = getattr(model, "training", None)
        if was is not None:
            model.eval()
        for batch in self.valid.batches(max(self.batch_size, 256)):
            t = elbo_terms(model.model, model.guide, {k: batch[k] for k in self.names})
            for k, v in t.items():
                sums[k] = sums.get(k, 0.0) + v
            count += batch["x"].shape[0]
        if was:
            model.train()
        return {f"valid_{k}": v / count for k, v in sums.items()}

    def _log_step(self, kwargs, value, bar) -> None:
        state = self.state
        with torch.no_grad():
            terms = elbo_terms(self.model.model, self.model.guide, kwargs)
        b = next(iter(kwargs.values())).shape[0]  # this process's share of the batch
        rec = {"step": state.step, "epoch": state.epoch + 1, "loss": value,
               **{k: v / b for k, v in terms.items() if k != "loss"}}
        rec.update(getattr(self.loss, "last_terms", None) or {})
        state.history.steps.append(rec)
        if bar is not None:
            bar.set_postfix({k: f"{rec[k]:.2f}" for k in ("loss", "recon", "kl") if k in rec},
                            refresh=False)

    def _end_epoch(self, t0) -> None:
        state = self.state
        state.epoch += 1
        rec = {"epoch": state.epoch, "step": state.step,
               "loss": state.epoch_loss_sum / max(state.epoch_good_steps, 1),
               "lr": self.opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        skipped = self.n_batches - state.epoch_good_steps
        if skipped:
            rec["skipped_steps"] = skipped
        state.batch_in_epoch = state.epoch_good_steps = 0
        state.epoch_loss_sum = 0.0
        if self.scheduler is not None and self.interval == "epoch":
            self.scheduler.step()
        this_epoch = []  # this epoch's step records: the newest ones
        for r in reversed(state.history.steps):
            if r.get("epoch") != state.epoch:
                break
            this_epoch.append(r)
        for k in ("recon", "kl"):
            if this_epoch:
                rec[k] = sum(r.get(k, 0.0) for r in this_epoch) / len(this_epoch)
        if self.valid is not None:
            with torch.no_grad():
                rec.update(self.validate())
        state.history.epochs.append(rec)
        if self.main:
            log.info("epoch %d/%d  %s  (%.1f s)", state.epoch, self.epochs, _fmt(rec),
                     rec["seconds"])
        for c in self.callbacks:
            c.on_epoch_end(state)
        self._agree_on_stop()
        if state.epoch % self.checkpoint_every == 0:
            self.write_checkpoint()

    def _agree_on_stop(self) -> None:
        """A callback in any process may stop training; all processes must stop together."""
        if self.world is not None and self.callbacks:
            flag = torch.tensor([float(self.state.stop)], device=self.dev)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            self.state.stop = bool(flag.item())

    def _batch(self, i: int) -> dict:
        """Step ``i`` of the epoch: this process's slice of the global batch. The whole global
        batch is drawn (dynamic binarisation included) in every process from the shared data
        generator, so W processes see exactly the data one process with batch W·b would."""
        g = self.global_batch
        batch = self.train.batch(self.order[i * g:(i + 1) * g], self.gen)
        if self.world is None:
            return batch
        lo = self.world.rank * self.batch_size
        return {k: v[lo:lo + self.batch_size] for k, v in batch.items()}

    def run(self) -> History:
        state, train = self.state, self.train
        bar = None
        if self.main and (self.progress or self.progress is None):
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=state.step, unit="step",
                       disable=None if self.progress is None else not self.progress,
                       dynamic_ncols=True, leave=True)
        for c in self.callbacks:
            c.on_train_start(state)
        try:
            while state.epoch < self.epochs and not state.stop \
                    and state.step < self.total_steps:
                if self.order is None or state.batch_in_epoch == 0:
                    self.order = torch.randperm(len(train), generator=self.gen, device=self.dev)
                t0 = time.perf_counter()
                while state.batch_in_epoch < self.n_batches:
                    batch = self._batch(state.batch_in_epoch)
                    kwargs = {k: batch[k] for k in self.names}
                    value = self.step(kwargs)
                    state.step += 1
                    state.batch_in_epoch += 1
                    state.last_loss = value
                    if math.isfinite(value):
                        state.epoch_loss_sum += value
                        state.epoch_good_steps += 1
                        if state.step % self.log_every == 0:
                            self._log_step(kwargs, value, bar)
                    if bar is not None:
                        bar.update(1)
                    for c in self.callbacks:
                        c.on_step_end(state)
                    self._agree_on_stop()
                    if state.stop or state.step >= self.total_steps:
                        break
                if state.batch_in_epoch < self.n_batches:  # stopped mid-epoch
                    break
                self._end_epoch(t0)
            for c in self.callbacks:
                c.on_train_end(state)
            self.write_checkpoint()
        finally:
            if bar is not None:
                bar.close()
        if isinstance(self.model, torch.nn.Module):
            self.model.eval()
        return state.history


def fit(model, data, loss=None, *, epochs: int | None = None, steps: int | None = None,
        batch_size: int = 128, optimizer="adam", lr: float = 1e-3,
        optimizer_args: dict | None = None, lr_schedule=None,
        lr_schedule_interval: str = "epoch", device="cpu", seed: int | None = 0,
        validation_data=None, callbacks: Iterable = (),
        checkpoint_dir: str | Path | None = None, checkpoint_every: int = 1,
        keep_checkpoints: int = 1, resume: bool | str | Path = False,
        log_every: int | None = None, progress: bool | None = None,
        clip_grad_norm: float | None = None, max_nonfinite: int = 10,
        nonfinite_patience: int = 3, nonfinite_lr_factor: float = 0.5,
        validation: str = "first", distributed: bool | None = None,
        precision: str = "fp32") -> History:
    """Trains ``model`` (a model/guide pair) on ``data`` by stochastic variational inference.

    Every argument, the data against the model's likelihood, and the pairing of model and guide
    sites are checked before the first step and before any file is written.

    :param model: an object with ``model`` and ``guide`` (a ``PyroModule``), or a
        ``(model_fn, guide_fn)`` tuple. Batches reach them as keyword arguments named like
        their parameters (``x``, and ``y`` or ``index`` if they take them).
    :param data: a :class:`~pyrovae.data.Dataset`, :class:`~pyrovae.data.Splits` (its ``valid``
        split then validates), a tensor/array, an ``(x, y)`` tuple or a map-style torch dataset.
    :param loss: a Pyro ELBO (anything with ``loss_and_grads(model, guide, **kw)``) or a callable
        ``loss(model, guide, **kw) -> differentiable tensor``; default ``Trace_ELBO()``. A loss
        with a ``last_terms`` dict after each step has those terms logged too; one with
        ``check_traces(model_trace, guide_trace)`` checks the sites it needs up front; a loss
        that is also a :class:`Callback` is run as one (after ``callbacks``), so it can follow
        the step count and put its state into checkpoints.
    :param epochs: passes over the data; ``steps`` caps optimiser steps (one of them needed).
    :param optimizer: a name (``"adam"``, ``"sgd"``, ...), a ``torch.optim`` class (built with
        ``lr`` and ``optimizer_args``), a factory ``params -> Optimizer`` or a ``pyro.optim`` one.
    :param lr_schedule: ``"cosine"`` (per step, to zero), ``"burda"`` (Burda et al. 2016, per
        epoch) or a factory ``optimizer -> scheduler`` stepped per ``lr_schedule_interval``.
    :param device: ``"cpu"`` or ``"cuda[:N]"``; model and data move there once.
    :param seed: seeds torch, NumPy and Python (``pyro.set_rng_seed``) and the data order.
    :param callbacks: :class:`Callback` objects, or callables run at each epoch's end.
    :param checkpoint_dir: folder for ``checkpoint.pt`` (written atomically every
        ``checkpoint_every`` epochs, at the end, and when training stops on non-finite
        values); ``keep_checkpoints`` > 1 also keeps that many as ``checkpoint-step<N>.pt``.
    :param resume: ``True`` continues from ``checkpoint_dir``'s newest readable checkpoint if
        there is one; a path continues from that file. Optimiser, schedule, RNG and data-order
        states are restored, so a resumed run takes the same steps as an uninterrupted one.
    :param log_every: steps between logged records of the ELBO's terms (each costs one extra
        forward pass); default every 50 steps, at least once per epoch, at most every 10.
    :param progress: show a progress bar (default: when writing to a terminal).
    :param clip_grad_norm: clip the gradients' total norm to this value.
    :param max_nonfinite: a step whose loss or gradient is NaN/inf is skipped (parameters and
        optimiser state untouched) and logged; every ``nonfinite_patience`` such steps in a row
        multiply the learning rate by ``nonfinite_lr_factor``; ``max_nonfinite`` in a row stop
        training with ``FloatingPointError`` after writing a checkpoint.
    :param validation: when Pyro's validation (distribution arguments and supports, site
        shapes, model/guide agreement) runs: on the ``"first"`` step of each call (its messages
        name a mistake at once; later steps run faster, and a NaN reaches the guard above
        instead of raising inside torch), on ``"all"`` steps, or ``"none"``.
    :param distributed: data-parallel over a ``torch.distributed`` process group (see
        :mod:`pyrovae.distributed`): ``None`` joins one when launched by ``torchrun``.
        ``batch_size`` is then per process; rank 0 alone writes checkpoints and logs.
    :param precision: ``"bf16"`` runs the step under ``torch.autocast`` in bfloat16 (networks
        in bf16; pyrovae's models return their outputs in fp32, so log-densities and their sums
        stay fp32), ``"fp32"`` does not.
    :returns: the :class:`History`; the model is trained in place and left in eval mode.
    """
    run = _Fit(model, data, loss, epochs=epochs, steps=steps, batch_size=batch_size,
               optimizer=optimizer, lr=lr, optimizer_args=optimizer_args,
               lr_schedule=lr_schedule, lr_schedule_interval=lr_schedule_interval,
               device=device, seed=seed, validation_data=validation_data, callbacks=callbacks,
               checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
               keep_checkpoints=keep_checkpoints, resume=resume, log_every=log_every,
               progress=progress, clip_grad_norm=clip_grad_norm, max_nonfinite=max_nonfinite,
               nonfinite_patience=nonfinite_patience, nonfinite_lr_factor=nonfinite_lr_factor,
               validation=validation, distributed=distributed, precision=precision)
    with ddp.scope(run.world):  # statistics outside the gradients (VQ EMA) sync with the step
        run.setup()
        return run.run()
