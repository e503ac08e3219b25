"""Optimisers and learning-rate schedules from the names and objects :func:`pyrovae.fit` takes."""

from __future__ import annotations

import pyro
import torch

OPTIMIZERS = {name.lower(): getattr(torch.optim, name)
              for name in ("Adam", "AdamW", "Adamax", "SGD", "RMSprop", "Adagrad", "Adadelta",
                           "NAdam", "RAdam")}
SCHEDULES = ("constant", "cosine", "burda")


def make_optimizer(optimizer, params, lr, optimizer_args) -> torch.optim.Optimizer:
    """A ``torch.optim`` optimiser over ``params`` from a name (``"adam"``), a ``torch.optim``
    class (built with ``lr`` and ``optimizer_args``), a ``pyro.optim`` wrapper or a factory
    ``params -> Optimizer``."""
    args = dict(optimizer_args or {})
    if isinstance(optimizer, str):
        try:
            cls = OPTIMIZERS[optimizer.lower()]
        except KeyError:
            raise ValueError(
                f"optimizer: expected one of {sorted(OPTIMIZERS)} or a torch.optim class or "
                f"factory, got {optimizer!r}"
            ) from None
        return _build(cls, params, lr, args)
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return _build(optimizer, params, lr, args)
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


def _build(cls, params, lr, args) -> torch.optim.Optimizer:
    try:
        return cls(params, lr=lr, **args)
    except TypeError as e:  # an argument the class does not take
        raise ValueError(f"optimizer_args: {cls.__name__} does not take {args}: {e}") from None


def burda_lr_lambda(epoch: int) -> float:
    """Burda et al. (2016, §5) schedule: ``10 ** (-i / 7)`` for ``3 ** i`` epochs, i = 0..7
    (3,280 epochs in all; the factor stays at its last value afterwards)."""
    i, end = 0, 1
    while epoch >= end and i < 7:
        i += 1
        end += 3**i
    return 10 ** (-i / 7)


def make_scheduler(lr_schedule, optimizer, total_steps, interval):
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
    return lr_schedule(optimizer), interval
