"""The training loop: Pyro's SVI step (the loss fills the gradients, a ``torch.optim``
optimiser steps) over batches of an in-memory dataset, with the parts around it — the
non-finite guard, checkpoints, progress, trackers — as callbacks (:mod:`pyrovae.callbacks`).

``Trainer(...)`` checks everything and touches nothing; :meth:`Trainer.setup` seeds, probes
the model/guide pair and builds the optimiser; :meth:`Trainer.run` trains.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path

import numpy as np
import pyro
import torch

from .. import distributed as ddp
from .._runtime import resolve_device
from ..infer.terms import elbo_terms
from ..protocol import as_model, input_names
from . import setup
from .checkpointing import restore
from .config import TrainConfig
from .guard import NonFiniteError
from .optim import make_optimizer, make_scheduler
from .probe import check_autoguides, check_observations, check_sites, discover_params
from .state import History, TrainState
from .steps import LeanStep, pinned, run_step

log = logging.getLogger("pyrovae")


def validation_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s validation draws: a function of the run's seed and the
    epoch only (NumPy's SeedSequence mixes the two)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> 1)


class Trainer:
    """One call of :func:`pyrovae.fit`. The constructor checks every argument, the data against
    the model's likelihood and the run folder, before any work is done or file written."""

    def __init__(self, model, data, loss, config: TrainConfig, *, validation_data=None,
                 callbacks=(), checkpoint_dir=None, resume=False):
        c = self.config = config
        self.model = as_model(model)
        self.dev = resolve_device(c.device)
        self.world = ddp.join(c.distributed, self.dev)
        if self.world is not None and self.dev.type == "cuda" and self.dev.index is None:
            self.dev = torch.device("cuda", self.world.local_rank)
        self.main = self.world is None or self.world.is_main
        self.procs = 1 if self.world is None else self.world.size
        self.train, self.valid = setup.datasets(self.model, data, validation_data, self.dev,
                                                c.batch_size, self.procs)
        self.loss, self.callbacks = setup.loss_and_callbacks(loss, callbacks)
        setup.check_run_options(c, self.valid, checkpoint_dir)
        self.folder = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.ckpts, self.saved, self.resume_path = setup.checkpoints(
            checkpoint_dir, c.keep_checkpoints, resume)
        self.global_batch = c.batch_size * self.procs  # one step's data across all processes
        self.n_batches = len(self.train) // self.global_batch
        # every 50 steps, at least once per epoch, never more often than every 10
        self.log_every = c.log_every or min(50, max(self.n_batches, 10))
        self.total_steps = c.steps if c.steps is not None else c.epochs * self.n_batches
        self.epochs = c.epochs if c.epochs is not None else math.ceil(c.steps / self.n_batches)

    def setup(self) -> None:
        """Seeds, probes the model/guide pair on one batch (inputs, parameters, sites), builds
        the optimiser, the step functions and the callbacks, and restores a checkpoint."""
        c, model = self.config, self.model
        rank = 0 if self.world is None else self.world.rank
        if c.seed is not None:
            pyro.set_rng_seed(c.seed + rank)  # each process its own latent noise
        self.gen = torch.Generator(device=self.dev)  # data order: the same in every process
        self.gen.manual_seed(0 if c.seed is None else c.seed)
        if isinstance(model, torch.nn.Module):
            model.to(self.dev)
            model.train()
        self.model_fn, self.guide_fn = model.model, model.guide
        for cb in self.callbacks:
            self.model_fn, self.guide_fn = cb.wrap(self.model_fn, self.guide_fn)
        # One batch's worth of points to learn inputs, parameters and sites (an autoguide
        # sizes its parameters by the plates it sees), drawn without `gen`.
        probe = setup.probe_batch(self.train, c.batch_size, seed=0)
        self.names = input_names(model, probe)
        kwargs = {k: probe[k] for k in self.names}
        self.params, self.extra, model_tr, guide_tr = discover_params(
            model, self.model_fn, self.guide_fn, kwargs)
        check_sites(model_tr, guide_tr, self.loss)
        check_autoguides(model, model_tr, kwargs, n_data=len(self.train),
                         batch_size=c.batch_size, validating=self.valid is not None)
        check_observations(model_tr)
        if not self.params:
            raise ValueError("model: found no trainable parameters in the model or guide")
        if self.world is not None:  # every process starts from rank 0's weights
            buffers = list(model.buffers()) if isinstance(model, torch.nn.Module) else []
            ddp.broadcast_(self.params + buffers)
        self.opt = make_optimizer(c.optimizer, self.params, c.lr, c.optimizer_args)
        self.scheduler, self.interval = make_scheduler(
            c.lr_schedule, self.opt, self.total_steps, c.lr_schedule_interval)
        self.state = TrainState(model, self.opt, self.scheduler, self.loss, History(),
                                is_main=self.main, total_steps=self.total_steps,
                                epochs=self.epochs)
        self.order = None
        self.checked_step, self.fast_step = setup.step_functions(self, model_tr, guide_tr, kwargs)
        self.pins, self.pinned = contextlib.ExitStack(), False
        self.hooks = setup.hooks(self)
        self.epoch_terms, self.epoch_term_steps = {}, 0
        if self.saved is not None:
            restore(self, self.saved, self.resume_path)
        self.first_step = self.state.step + 1
        if self.world is not None:
            ddp.barrier()  # every process has passed its checks before any writes a file

    # --- the loop -------------------------------------------------------------------------------
    def run(self) -> History:
        state = self.state
        for h in self.hooks:
            h.on_train_start(state)
        try:
            while state.epoch < self.epochs and not state.stop \
                    and state.step < self.total_steps:
                if self.order is None or state.batch_in_epoch == 0:
                    # A batch of all the data keeps its order, as plain SVI on it does: an
                    # autoguide's local parameters belong to plate positions.
                    self.order = torch.arange(len(self.train), device=self.dev) \
                        if self.global_batch == len(self.train) else \
                        torch.randperm(len(self.train), generator=self.gen, device=self.dev)
                t0 = time.perf_counter()
                while state.batch_in_epoch < self.n_batches:
                    self.step(self.batch(state.batch_in_epoch))
                    if state.stop or state.step >= self.total_steps:
                        break
                if state.batch_in_epoch < self.n_batches:  # stopped mid-epoch
                    break
                self.end_epoch(t0)
            for h in self.hooks:
                h.on_train_end(state)
        except NonFiniteError as e:
            path = self.checkpointer.save() if self.checkpointer is not None else None
            raise FloatingPointError(e.message(path)) from None
        finally:
            self.pins.close()
            for h in self.hooks:
                if hasattr(h, "close"):
                    h.close()
            self.checked_step.close()  # takes its tap off the loss object
        if isinstance(self.model, torch.nn.Module):
            self.model.eval()
        return state.history

    def batch(self, i: int) -> dict:
        """Step ``i`` of the epoch: this process's slice of the global batch, as the keyword
        arguments of model and guide. The whole global batch is drawn (dynamic binarisation
        included) in every process from the shared data generator, so W processes see exactly
        the data one process with batch W·b would."""
        g = self.global_batch
        batch = self.train.batch(self.order[i * g:(i + 1) * g], self.gen)
        if self.world is not None:
            lo = self.world.rank * self.config.batch_size
            batch = {k: v[lo:lo + self.config.batch_size] for k, v in batch.items()}
        return {k: batch[k] for k in self.names}

    def step(self, kwargs: dict) -> None:
        """One SVI step: forward and backward, the guard and callbacks' ``on_after_backward``,
        the update (unless skipped), the history record, ``on_step_end``."""
        state, c = self.state, self.config
        state.batch = kwargs
        self.opt.zero_grad(set_to_none=True)
        validate = c.validation == "all" or (c.validation == "first"
                                              and state.step + 1 == self.first_step)
        step_fn = self.checked_step if validate else self.fast_step
        if isinstance(step_fn, LeanStep) and not self.pinned:
            self.pins.enter_context(pinned(self.model))  # no param messages from here on
            self.pinned = True
        logged = (state.step + 1) % self.log_every == 0
        value, terms = run_step(step_fn, kwargs, validate=validate, bf16=c.precision == "bf16",
                                device=self.dev, detail=logged)
        if self.world is not None:  # sum gradients and losses over processes
            value = ddp.all_reduce_grads_(self.params, [float(value)])[0]
        state.loss_value, state.skip_update = value, False  # the guard reads it back
        try:
            for h in self.hooks:
                h.on_after_backward(state)
        except NonFiniteError:
            state.step += 1  # this batch is consumed
            state.batch_in_epoch += 1
            raise
        value = state.loss_value
        if not state.skip_update:
            self.opt.step()
            if self.scheduler is not None and self.interval == "step":
                self.scheduler.step()
        state.step += 1
        state.batch_in_epoch += 1
        state.last_loss = math.nan if state.skip_update else value / self.global_batch
        if not state.skip_update:
            state.epoch_loss_sum += state.last_loss
            state.epoch_good_steps += 1
            if terms is not None:
                for k in ("recon", "kl"):
                    self.epoch_terms[k] = self.epoch_terms.get(k, 0.0) + terms[k]
                self.epoch_term_steps += 1
            if logged:
                self.record_step(kwargs, state.last_loss, terms)
        for h in self.hooks:
            h.on_step_end(state)
        self._agree_on_stop()

    def record_step(self, kwargs: dict, value: float, terms: dict | None) -> None:
        """A history record of this step: its loss, the ELBO's terms (from the step itself,
        else from one extra forward pass of the original programs) and the loss's own
        ``last_terms``, all per data point."""
        state = self.state
        b = next(iter(kwargs.values())).shape[0]  # this process's share of the batch
        if terms is None:
            with torch.no_grad():
                terms = elbo_terms(self.model.model, self.model.guide, kwargs)
        rec = {"step": state.step, "epoch": state.epoch + 1, "loss": value,
               **{k: float(v) / b for k, v in terms.items() if k != "loss"}}
        rec.update(getattr(self.loss, "last_terms", None) or {})
        state.history.steps.append(rec)

    def end_epoch(self, t0: float) -> None:
        state = self.state
        state.epoch += 1
        rec = {"epoch": state.epoch, "step": state.step,
               "loss": state.epoch_loss_sum / max(state.epoch_good_steps, 1),
               "lr": self.opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        skipped = self.n_batches - state.epoch_good_steps
        if skipped:
            rec["skipped_steps"] = skipped
        rec.update(self._epoch_terms())
        state.batch_in_epoch = state.epoch_good_steps = 0
        state.epoch_loss_sum = 0.0
        if self.scheduler is not None and self.interval == "epoch":
            self.scheduler.step()
        if self.valid is not None:
            with torch.no_grad():
                rec.update(self.validate())
        state.history.epochs.append(rec)
        for h in self.hooks:
            h.on_epoch_end(state)
        self._agree_on_stop()

    def _epoch_terms(self) -> dict:
        """The epoch's mean recon and kl per data point: over all its good steps when every one
        reported them (then, for Trace_ELBO, recon + kl = loss), else over its logged steps."""
        state, out = self.state, {}
        if self.epoch_terms and self.epoch_term_steps == state.epoch_good_steps:
            n = self.epoch_term_steps * self.config.batch_size
            out = {k: float(v) / n for k, v in self.epoch_terms.items()}
        else:
            this_epoch = [r for r in state.history.steps if r.get("epoch") == state.epoch]
            for k in ("recon", "kl"):
                if this_epoch:
                    out[k] = sum(r.get(k, 0.0) for r in this_epoch) / len(this_epoch)
        self.epoch_terms, self.epoch_term_steps = {}, 0
        return out

    def validate(self) -> dict:
        """The ELBO's terms per data point on the validation data, in eval mode.

        Its draws of the latents come from a random state of its own (seeded by the run's seed
        and the epoch) and the training stream is restored after it, so validating or not, or
        on other data, leaves the training steps exactly as they were: the run with validation
        trains the same weights as the one without."""
        sums, count, model, c = {}, 0, self.model, self.config
        was = getattr(model, "training", None)
        if was is not None:
            model.eval()
        devices = [self.dev] if self.dev.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if c.seed is not None:
                torch.manual_seed(validation_seed(c.seed, self.state.epoch))
            for batch in self.valid.batches(max(c.batch_size, 256)):
                t = elbo_terms(model.model, model.guide, {k: batch[k] for k in self.names})
                for k, v in t.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += batch["x"].shape[0]
        if was:
            model.train()
        return {f"valid_{k}": v / count for k, v in sums.items()}

    def _agree_on_stop(self) -> None:
        """A callback in any process may stop training; all processes must stop together."""
        if self.world is not None and self.callbacks:
            flag = torch.tensor([float(self.state.stop)], device=self.dev)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            self.state.stop = bool(flag.item())

    # --- what checkpoints keep beyond the model, optimiser and counters --------------------------
    def extra_state(self) -> dict:
        return {"epoch_terms": {k: float(v) for k, v in self.epoch_terms.items()},
                "epoch_term_steps": self.epoch_term_steps,
                "early_stopping": None if self.early is None else self.early.state_dict()}

    def load_extra_state(self, ts: dict) -> None:
        self.epoch_terms = dict(ts.get("epoch_terms") or {})
        self.epoch_term_steps = ts.get("epoch_term_steps", 0)
        if self.early is not None and ts.get("early_stopping"):
            self.early.load_state_dict(ts["early_stopping"])
