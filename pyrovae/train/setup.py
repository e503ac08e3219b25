"""The parts of a training run set up before its loop: its data, loss and callbacks, run
folder, step functions and the callbacks around the loop. Every check here runs before any
work is done or file written."""

from __future__ import annotations

import logging
from pathlib import Path

import pyro
import torch

from .. import checkpoint as ckpt_io
from ..callbacks import Callback, as_callbacks
from ..data import Splits, as_dataset
from ..infer import lean
from . import compiled
from .checkpointing import Checkpointer
from .early_stopping import EarlyStopping
from .guard import NonFiniteGuard
from .progress import JSONLinesLog, Progress, TensorBoardLog, tensorboard_missing
from .steps import CheckedLeanStep, LeanStep, LossStep

log = logging.getLogger("pyrovae")


def datasets(model, data, validation_data, device, batch_size: int, procs: int = 1):
    """``(train, valid)`` datasets on ``device``, checked against the batch size (of each of
    ``procs`` processes) and the model's likelihood."""
    if isinstance(data, Splits):
        validation_data = data.valid if validation_data is None else validation_data
        data = data.train
    train = as_dataset(data, name="data").to(device)
    valid = None if validation_data is None else \
        as_dataset(validation_data, name="validation_data").frozen(1).to(device)
    if batch_size * procs > len(train):
        across = f" x {procs} processes" if procs > 1 else ""
        raise ValueError(f"batch_size: {batch_size}{across} is larger than the {len(train)} "
                         f"training data points")
    check = getattr(model, "check_data", None)
    if check is not None:
        # Dynamically binarised data is a draw in {0, 1} from probabilities the dataset
        # checked: a draw of a few points shows its shape and support as well as all of them.
        shown = train if train.binarize != "dynamic" else \
            train.subset(torch.arange(min(len(train), 256), device=device)).frozen(0)
        check(shown.x, "data")
        if valid is not None:
            check(valid.x, "validation_data")
    return train, valid


def loss_and_callbacks(loss, callbacks) -> tuple[object, list[Callback]]:
    """The loss (default ``Trace_ELBO()``) and the user's callbacks, the loss appended when it
    is one itself (a loss that follows the step count)."""
    loss = pyro.infer.Trace_ELBO() if loss is None else loss
    if not (hasattr(loss, "loss_and_grads") or callable(loss)):
        raise TypeError(f"loss: expected a Pyro ELBO or a callable, got {type(loss).__name__}")
    callbacks = as_callbacks(callbacks)  # checkpointed by position
    if isinstance(loss, Callback) and not any(cb is loss for cb in callbacks):
        callbacks.append(loss)
    return loss, callbacks


def check_run_options(config, valid, checkpoint_dir) -> None:
    if config.early_stopping is not None and valid is None:
        raise ValueError("early_stopping: needs validation data (validation_data=, or Splits "
                         "with a valid split)")
    if config.log and checkpoint_dir is None:
        raise ValueError(f"log: {list(config.log)} writes into the run folder; pass "
                         f"checkpoint_dir")
    if "tensorboard" in config.log and tensorboard_missing():
        raise ImportError(f"log: 'tensorboard' needs the tensorboard package "
                          f"({tensorboard_missing()}); pip install 'pyrovae[tensorboard]'")


def checkpoints(checkpoint_dir, keep: int, resume):
    """``(CheckpointDir or None, saved checkpoint or None, its path or None)``."""
    ckpts = None if checkpoint_dir is None else ckpt_io.CheckpointDir(checkpoint_dir, keep)
    if resume is True:
        if ckpts is None:
            raise ValueError("resume=True needs checkpoint_dir (or pass the checkpoint's path)")
        saved, path = ckpts.load_latest()
        return ckpts, saved, path
    if resume:
        return ckpts, ckpt_io.load(Path(resume)), Path(resume)
    return ckpts, None, None


def probe_batch(train, size: int, seed: int) -> dict:
    """``size`` points of ``train`` drawn without the run's generators (so probing does not
    change the training stream): the first ones for ``seed=0``, a random set otherwise."""
    n, dev = min(size, len(train)), train.device
    idx = torch.arange(n) if seed == 0 else \
        torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    return train.batch(idx.to(dev), torch.Generator(device=dev).manual_seed(seed))


def step_functions(t, model_tr, guide_tr, kwargs):
    """``(checked, fast)`` step functions of trainer ``t``: the others run the lean ELBO if it
    computes the same thing as the loss (:func:`pyrovae.infer.lean.eligible`), and the
    validated step then runs the loss's own checks before it (:class:`CheckedLeanStep`), else
    the loss as given; traced once and compiled when ``compile`` asks and
    the programs allow (:mod:`pyrovae.train.compiled`). Sets ``t.lean_reason`` and
    ``t.compile_reason`` (``None``, or why not)."""
    originals = t.model_fn == t.model.model and t.guide_fn == t.model.guide
    t.lean_reason = lean.eligible(t.loss, model_tr, guide_tr) if t.config.lean_elbo \
        else "lean_elbo=False"
    analytic = isinstance(t.loss, pyro.infer.TraceMeanField_ELBO)
    checked = LossStep(t.loss, t.model_fn, t.guide_fn, terms=originals)
    fast = checked
    if t.lean_reason is None:
        fast = LeanStep(t.model_fn, t.guide_fn, terms=originals, analytic=analytic)
        if t.config.validation != "all":  # validated on one step: the same computation as the rest
            checked = CheckedLeanStep(t.loss, fast, t.dev)
    t.compile_reason = None
    if t.config.compile:
        t.compile_reason = t.lean_reason
        if t.compile_reason is None:
            other = probe_batch(t.train, t.config.batch_size, seed=1)
            batches = [kwargs, {k: other[k] for k in t.names}]
            t.compile_reason = compiled.why_not(t.model, t.model_fn, t.guide_fn, t.extra,
                                                originals, batches)
        if t.compile_reason is None:
            step, t.compile_reason = compiled.build(
                t.model, t.model_fn, t.guide_fn, kwargs, analytic=analytic,
                mode=t.config.compile, bf16=t.config.precision == "bf16")
            fast = step or fast
        if t.compile_reason is not None and t.main:
            log.warning("compile: running eager, because %s", t.compile_reason)
    return checked, fast


def hooks(t) -> list[Callback]:
    """Everything trainer ``t`` calls around its loop, in order: the non-finite guard, the
    user's callbacks (and the loss when it is one), early stopping, progress, the JSON-lines
    and TensorBoard logs, checkpoints. Sets ``t.guard``, ``t.early``, ``t.checkpointer``."""
    c = t.config
    t.guard = NonFiniteGuard(t.params, clip=c.clip_grad_norm, max_nonfinite=c.max_nonfinite,
                             patience=c.nonfinite_patience, lr_factor=c.nonfinite_lr_factor)
    t.early = None if c.early_stopping is None else \
        EarlyStopping(c.early_stopping, t.model, t.extra)
    trackers = []
    if t.folder is not None:
        trackers.append(JSONLinesLog(t.folder / "log.jsonl"))
        if "tensorboard" in c.log:
            images = None
            if t.train.x.dim() >= 3:  # image data: reconstructions and samples too
                src = t.valid if t.valid is not None else t.train
                batch = probe_batch(src, 16, seed=0)
                images = {k: batch[k] for k in t.names}
            trackers.append(TensorBoardLog(t.folder / "tensorboard", t.model, images))
    t.checkpointer = None if t.ckpts is None else Checkpointer(t, t.ckpts, c.checkpoint_every)
    after = [t.early, Progress(c.progress, t.total_steps, t.epochs, t.main), *trackers,
             t.checkpointer]
    return [t.guard, *t.callbacks, *(h for h in after if h is not None)]
