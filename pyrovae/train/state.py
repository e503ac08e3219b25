"""What a training run knows about itself: the records it keeps and where it stands."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


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
    # --- the step in flight (valid inside on_after_backward / on_step_end) -----------------
    batch: dict | None = None  # this process's batch: the keyword arguments model and guide got
    loss_value: float = math.nan  # this step's loss, summed over the global batch
    grad_norm: float = math.nan  # total gradient norm (before clipping), when computed
    skip_update: bool = False  # set in on_after_backward to leave the parameters as they are
    total_steps: int = 0  # the step count training runs to
    epochs: int = 0  # the epoch count training runs to
