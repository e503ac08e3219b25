"""``fit``: stochastic variational inference for any model/guide pair.

The loop is Pyro's SVI step (the loss fills the gradients, an optimiser steps) with a
``torch.optim`` optimiser over the model's parameters, so optimiser and learning-rate schedule
states checkpoint like any PyTorch run. Parameters created with ``pyro.param`` outside the
model's modules are found by tracing model and guide once and are trained and checkpointed too.

The package: :mod:`~pyrovae.train.trainer` (the loop), :mod:`~pyrovae.train.config` (the
settings), :mod:`~pyrovae.train.state` (history and state), :mod:`~pyrovae.train.optim`,
:mod:`~pyrovae.train.probe` (parameters and site checks), :mod:`~pyrovae.train.steps` (the
forward/backward pass), and the callbacks around the loop: :mod:`~pyrovae.train.guard`,
:mod:`~pyrovae.train.checkpointing`, :mod:`~pyrovae.train.progress`,
:mod:`~pyrovae.train.early_stopping`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable
from pathlib import Path

from .. import distributed as ddp
from ..callbacks import Callback, StepFollower
from .config import TrainConfig
from .optim import burda_lr_lambda, make_optimizer, make_scheduler
from .probe import check_autoguides, check_observations, check_sites, discover_params, probe
from .state import History, TrainState
from .trainer import Trainer

_OWN = ("validation_data", "callbacks", "checkpoint_dir", "resume", "config")


def fit(model, data, loss=None, *, validation_data=None, callbacks: Iterable = (),
        checkpoint_dir: str | Path | None = None, resume: bool | str | Path = False,
        config: TrainConfig | None = None, **settings) -> History:
    """Trains ``model`` (a model/guide pair) on ``data`` by stochastic variational inference.

    Every argument, the data against the model's likelihood, and the pairing of model and guide
    sites are checked before the first step and before any file is written.

    :param model: an object with ``model`` and ``guide`` (a ``PyroModule``), or a
        ``(model_fn, guide_fn)`` tuple (a Pyro autoguide as the guide, say). Batches reach them
        as keyword arguments named like their parameters (``x``, and ``y`` or ``index`` if
        they take them).
    :param data: a :class:`~pyrovae.data.Dataset`, :class:`~pyrovae.data.Splits` (its ``valid``
        split then validates), a tensor/array, an ``(x, y)`` tuple or a map-style torch dataset.
    :param loss: a Pyro ELBO (anything with ``loss_and_grads(model, guide, **kw)``) or a callable
        ``loss(model, guide, **kw) -> differentiable tensor``; default ``Trace_ELBO()``. A loss
        with a ``last_terms`` dict after each step has those terms logged too; one with
        ``check_traces(model_trace, guide_trace)`` checks the sites it needs up front; a loss
        that is also a :class:`~pyrovae.callbacks.Callback` is run as one (after
        ``callbacks``), so it can follow the step count and put its state into checkpoints.
    :param validation_data: data scored (the ELBO's terms, eval mode) after every epoch.
    :param callbacks: :class:`~pyrovae.callbacks.Callback` objects, or callables run at each
        epoch's end.
    :param checkpoint_dir: folder for ``checkpoint.pt`` (written atomically every
        ``checkpoint_every`` epochs, at the end, and when training stops on non-finite
        values; ``keep_checkpoints`` > 1 also keeps that many as ``checkpoint-step<N>.pt``)
        and ``log.jsonl`` (every history record, one JSON object per line).
    :param resume: ``True`` continues from ``checkpoint_dir``'s newest readable checkpoint if
        there is one; a path continues from that file. Optimiser, schedule, RNG and data-order
        states are restored, so a resumed run takes the same steps as an uninterrupted one.
    :param config: a :class:`TrainConfig`; keywords given beside it override its fields.
    :param settings: the fields of :class:`TrainConfig` as keywords: ``epochs``, ``steps``,
        ``batch_size`` (128), ``optimizer`` ("adam"), ``lr`` (1e-3), ``optimizer_args``,
        ``lr_schedule``, ``device`` ("cpu"), ``seed`` (0: seeds torch, NumPy, Python and the
        data order; not the model's initial weights, which exist before ``fit`` is called —
        seed before building the model for those), ``clip_grad_norm``, ``max_nonfinite``,
        ``validation``, ``distributed``, ``precision``, ``lean_elbo``, ``compile``, ``log``,
        ``early_stopping``, ... (see :class:`TrainConfig` for each).
    :returns: the :class:`History`; the model is trained in place and left in eval mode.
    """
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise TypeError(f"fit() got unexpected keyword argument(s) {unknown}")
    config = TrainConfig(**settings) if config is None else \
        dataclasses.replace(config, **settings)
    trainer = Trainer(model, data, loss, config, validation_data=validation_data,
                      callbacks=callbacks, checkpoint_dir=checkpoint_dir, resume=resume)
    with ddp.scope(trainer.world):  # statistics outside the gradients (VQ EMA) sync with the step
        trainer.setup()
        return trainer.run()


def _signature() -> inspect.Signature:
    """``fit``'s signature with every :class:`TrainConfig` field as a keyword, so
    ``help(fit)``, IDEs and Sphinx show the settings with their defaults."""
    own = list(inspect.signature(fit).parameters.values())[:-1]  # without **settings
    kw = inspect.Parameter.KEYWORD_ONLY
    fields = [inspect.Parameter(f.name, kw, default=f.default if f.default is not
                                dataclasses.MISSING else f.default_factory())
              for f in dataclasses.fields(TrainConfig)]
    return inspect.Signature(own + fields, return_annotation=History)


fit.__signature__ = _signature()

__all__ = [
    "Callback",
    "History",
    "StepFollower",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "burda_lr_lambda",
    "check_autoguides",
    "check_observations",
    "check_sites",
    "discover_params",
    "fit",
    "make_optimizer",
    "make_scheduler",
    "probe",
]
