"""Early stopping on the validation loss, keeping the best epoch's weights."""

from __future__ import annotations

import logging
import math

import torch

from ..callbacks import Callback

log = logging.getLogger("pyrovae")


class EarlyStopping(Callback):
    """Stops training when the epoch's ``valid_loss`` (the validation set's negative ELBO per
    data point) has not improved for ``patience`` epochs, and at the end of training puts back
    the weights of the best epoch (module state and external ``pyro.param`` tensors). The
    best epoch is recorded in the history's last epoch record as ``best_epoch``."""

    def __init__(self, patience: int, model, extra_params: dict):
        self.patience, self.model, self.extra = patience, model, extra_params
        self.best, self.best_epoch, self.wait, self.weights = math.inf, 0, 0, None

    def _snapshot(self) -> dict:
        state = self.model.state_dict() if isinstance(self.model, torch.nn.Module) else {}
        return {"model": {k: v.detach().clone() for k, v in state.items()},
                "extra": {k: v.detach().clone() for k, v in self.extra.items()}}

    def on_epoch_end(self, state) -> None:
        value = state.history.epochs[-1].get("valid_loss", math.nan)
        if not math.isfinite(value):
            return
        if value < self.best:
            self.best, self.best_epoch, self.wait = value, state.epoch, 0
            self.weights = self._snapshot()
            return
        self.wait += 1
        if self.wait >= self.patience:
            if state.is_main:
                log.info("early stopping: validation loss %.3f at epoch %d, no better in %d "
                         "epochs since", self.best, self.best_epoch, self.wait)
            state.stop = True

    def on_train_end(self, state) -> None:
        if self.weights is None:
            return
        with torch.no_grad():
            if isinstance(self.model, torch.nn.Module):
                self.model.load_state_dict(self.weights["model"])
            for k, v in self.weights["extra"].items():
                self.extra[k].copy_(v)
        if state.history.epochs:
            state.history.epochs[-1]["best_epoch"] = self.best_epoch

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state.get("best", math.inf), state.get("best_epoch", 0)
        self.wait, self.weights = state.get("wait", 0), state.get("weights")
