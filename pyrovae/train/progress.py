"""What a run shows while it trains: a progress bar in a terminal, one line per epoch
elsewhere, and the records kept on disk (a JSON-lines log, TensorBoard)."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import torch

from .. import checks
from ..callbacks import Callback

log = logging.getLogger("pyrovae")

SHOWN = ("loss", "recon", "kl")  # always first on the bar and the epoch line, in this order


def format_record(record: dict, keys=None) -> str:
    """``"loss 95.312  recon 70.104  kl 25.208  valid_loss 96.001"`` for an epoch record."""
    keys = keys or [k for k in (*SHOWN, "valid_loss", "valid_recon", "valid_kl")
                    if k in record]
    return "  ".join(f"{k} {record[k]:.3f}" for k in keys)


def _scalars(record: dict) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if checks.is_number(v) and k not in ("step", "epoch")}


class Progress(Callback):
    """A ``tqdm`` bar with the latest loss and terms when ``enabled`` (``None``: when stderr is
    a terminal), else nothing per step; in both cases one line per epoch through the
    ``pyrovae`` logger, written to stderr if nothing listens to that logger (a script run
    outside a terminal is not silent, and a log file gets no carriage-return bars)."""

    def __init__(self, enabled: bool | None, total_steps: int, epochs: int, is_main: bool):
        self.enabled, self.total, self.epochs, self.main = enabled, total_steps, epochs, is_main
        self.bar = None

    def on_train_start(self, state) -> None:
        if not self.main or self.enabled is False:
            return
        if self.enabled is None and not _isatty(sys.stderr):
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, initial=state.step, unit="step",
                        dynamic_ncols=True, leave=True)

    def on_step_end(self, state) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        steps = state.history.steps
        if steps and steps[-1].get("step") == state.step:  # a record was just made
            rec = steps[-1]
            keys = [k for k in SHOWN if k in rec] + \
                [k for k in _scalars(rec) if k not in SHOWN][:4]
            self.bar.set_postfix({k: f"{rec[k]:.2f}" for k in keys}, refresh=False)

    def on_epoch_end(self, state) -> None:
        if not self.main:
            return
        rec = state.history.epochs[-1]
        line = f"epoch {state.epoch}/{self.epochs}  {format_record(rec)}  " \
               f"({rec['seconds']:.1f} s)"
        if log.isEnabledFor(logging.INFO) and log.hasHandlers():
            log.info(line) if self.bar is None else self._through_bar(line)
        elif self.enabled is not False:
            (self.bar.write if self.bar is not None else _stderr)(line)

    def _through_bar(self, line: str) -> None:
        with self.bar.external_write_mode():
            log.info(line)

    def on_train_end(self, state) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class JSONLinesLog(Callback):
    """Appends one JSON object per history record to ``path``: ``{"kind": "step", ...}`` for
    each logged step (loss and every reported term) and ``{"kind": "epoch", ...}`` per epoch.
    Plain text, one record per line, so ``tail -f`` follows a run and any tool reads it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.file = None

    def on_train_start(self, state) -> None:
        if state.is_main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a")

    def _write(self, kind: str, rec: dict) -> None:
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                 for k, v in rec.items()}
        self.file.write(json.dumps({"kind": kind, **clean}) + "\n")

    def on_step_end(self, state) -> None:
        steps = state.history.steps
        if self.file is not None and steps and steps[-1].get("step") == state.step:
            self._write("step", steps[-1])

    def on_epoch_end(self, state) -> None:
        if self.file is not None:
            self._write("epoch", state.history.epochs[-1])
            self.file.flush()

    def on_train_end(self, state) -> None:
        self.close()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def tensorboard_missing() -> str | None:
    """Why ``torch.utils.tensorboard`` cannot be used here (``None`` when it can)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as e:
        return str(e)
    return None


class TensorBoardLog(Callback):
    """TensorBoard event files in ``log_dir`` (``torch.utils.tensorboard``; needs the
    ``tensorboard`` package, ``pip install 'pyrovae[tensorboard]'``): ``train/<term>`` scalars
    for every logged step, ``epoch/<key>`` scalars per epoch (validation included), and per
    epoch ``reconstructions`` (inputs above their reconstructions) and ``samples`` images when
    ``images`` (a batch dict of image data) is given."""

    def __init__(self, log_dir: str | Path, model=None, images: dict | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError(f"log: 'tensorboard' needs the tensorboard package ({e}); "
                              f"install it with pip install 'pyrovae[tensorboard]'") from None
        self._writer_cls, self.log_dir = SummaryWriter, Path(log_dir)
        self.model, self.images, self.writer = model, images, None

    def on_train_start(self, state) -> None:
        if state.is_main:
            self.writer = self._writer_cls(str(self.log_dir))

    def on_step_end(self, state) -> None:
        steps = state.history.steps
        if self.writer is not None and steps and steps[-1].get("step") == state.step:
            for k, v in _scalars(steps[-1]).items():
                self.writer.add_scalar(f"train/{k}", v, state.step)

    def on_epoch_end(self, state) -> None:
        if self.writer is None:
            return
        for k, v in _scalars(state.history.epochs[-1]).items():
            self.writer.add_scalar(f"epoch/{k}", v, state.step)
        if self.images is not None and self.model is not None:
            self._add_images(state.step)
        self.writer.flush()

    @torch.no_grad()
    def _add_images(self, step: int) -> None:
        from ..infer.predictive import prior_predictive_mean, reconstruct

        x = self.images["x"]
        was = getattr(self.model, "training", False)
        if hasattr(self.model, "eval"):
            self.model.eval()
        try:
            rec = reconstruct(self.model, self.images)
            self.writer.add_images("reconstructions", _as_images(torch.cat([x, rec])), step)
            self.writer.add_images("samples", _as_images(
                prior_predictive_mean(self.model, self.images)), step)
        finally:
            if was:
                self.model.train()

    def on_train_end(self, state) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _as_images(t: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` in [0, 1] (grey ``(N, H, W)`` gains its channel)."""
    t = t.detach().float().cpu()
    if t.dim() == 3:
        t = t.unsqueeze(1)
    return t.clamp(0, 1)
