"""The non-finite policy: a step whose loss or gradient is NaN/inf leaves the model as it was.

Every step's gradients are checked before the optimiser sees them (one fused norm over all of
them, which gradient clipping needs anyway). A non-finite step is skipped: gradients dropped,
parameters and optimiser state untouched, the event logged. Every ``patience`` such steps in a
row multiply the learning rate by ``lr_factor``; ``max_nonfinite`` in a row stop training with
:class:`NonFiniteError` (the trainer then writes a checkpoint of the last good state).
"""

from __future__ import annotations

import logging
import math

import torch

from ..callbacks import Callback

log = logging.getLogger("pyrovae")


class NonFiniteError(FloatingPointError):
    """Training stopped after too many non-finite steps in a row."""

    def __init__(self, streak: int, step: int, epoch: int):
        self.streak, self.step, self.epoch = streak, step, epoch
        super().__init__(self.message(None))

    def message(self, saved_at) -> str:
        where = f"; they are saved in {saved_at}" if saved_at else ""
        return (f"fit: {self.streak} consecutive steps (up to step {self.step}, epoch "
                f"{self.epoch}) gave a non-finite loss or gradient, so training stopped. The "
                f"parameters are those of the last good step{where}. Try a lower lr, "
                f"clip_grad_norm, or check the data and the model for values that overflow.")


def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """Euclidean norm of all gradients together (inf or NaN if any entry is)."""
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads)
    return torch.linalg.vector_norm(torch.stack([n.to(grads[0].device) for n in norms]))


class NonFiniteGuard(Callback):
    """Checks each step's loss and gradients (module docstring) and clips the gradients' total
    norm to ``clip`` when given. Runs first among the ``on_after_backward`` hooks."""

    def __init__(self, params, *, clip: float | None, max_nonfinite: int, patience: int,
                 lr_factor: float):
        self.params, self.clip = params, clip
        self.max_nonfinite, self.patience, self.lr_factor = max_nonfinite, patience, lr_factor

    def on_after_backward(self, state) -> None:
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = total_norm(grads)
        value = state.loss_value
        if torch.is_tensor(value):  # loss and norm to the host in one read (one GPU sync)
            value, norm = torch.stack([value.detach().float().reshape(()),
                                       norm.to(value.device, torch.float32)]).tolist()
        else:
            norm = float(norm)
        state.loss_value, state.grad_norm = float(value), norm
        if not (math.isfinite(value) and math.isfinite(norm)):
            state.optimizer.zero_grad(set_to_none=True)
            state.skip_update = True
            self._skipped(state, value, norm)
            return
        state.nonfinite_streak = 0
        if self.clip is not None and norm > self.clip:
            torch._foreach_mul_(grads, self.clip / (norm + 1e-6))

    def _skipped(self, state, value, norm) -> None:
        state.nonfinite_streak += 1
        state.nonfinite_total += 1
        step = state.step + 1
        warn = log.warning if state.is_main else log.debug
        warn("step %d: non-finite %s (loss %s, gradient norm %s); update skipped, %d in a row",
             step, "loss" if not math.isfinite(value) else "gradient", value, norm,
             state.nonfinite_streak)
        if state.nonfinite_streak % self.patience == 0:
            for group in state.optimizer.param_groups:
                group["lr"] *= self.lr_factor
            scheduler = state.scheduler
            if scheduler is not None and hasattr(scheduler, "base_lrs"):
                scheduler.base_lrs = [b * self.lr_factor for b in scheduler.base_lrs]
            warn("learning rate lowered to %g after %d non-finite steps in a row",
                 state.optimizer.param_groups[0]["lr"], state.nonfinite_streak)
        if state.nonfinite_streak >= self.max_nonfinite:
            raise NonFiniteError(state.nonfinite_streak, step, state.epoch + 1)
