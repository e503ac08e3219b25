"""Checkpoints of a training run: what is saved, when, and how a run resumes from one.

A checkpoint holds the model (spec, config, weights, external ``pyro.param`` tensors), the
optimiser and schedule states, the loop's counters and history, the callbacks' own states,
every RNG state and the epoch's data order, so a resumed run takes exactly the steps an
uninterrupted one would (mid-epoch included). Files are written by
:mod:`pyrovae.checkpoint` (atomic, read back without running code).
"""

from __future__ import annotations

import logging

from .. import checkpoint as ckpt_io
from .. import distributed as ddp
from ..callbacks import Callback
from .state import History

log = logging.getLogger("pyrovae")


class Checkpointer(Callback):
    """Writes ``trainer``'s checkpoint every ``every`` epochs and at the end of training. In a
    distributed run every process takes part (the RNG states are gathered) and rank 0
    writes."""

    def __init__(self, trainer, folder: ckpt_io.CheckpointDir, every: int):
        self.trainer, self.folder, self.every = trainer, folder, every

    def on_epoch_end(self, state) -> None:
        if state.epoch % self.every == 0:
            self.save()

    def on_train_end(self, state) -> None:
        self.save()

    def save(self):
        """Writes the checkpoint; returns its path (``None`` in processes other than rank 0)."""
        t = self.trainer
        rng = ckpt_io.rng_state(t.gen)
        if t.world is not None:
            rng = {"per_rank": ddp.gather(rng)}
            if not t.main:
                return None
        state = t.state
        return self.folder.save({
            **ckpt_io.model_payload(t.model, t.extra),
            "optimizer": t.opt.state_dict(),
            "scheduler": t.scheduler.state_dict() if t.scheduler is not None else None,
            "train_state": {
                "step": state.step, "epoch": state.epoch,
                "batch_in_epoch": state.batch_in_epoch,
                "epoch_loss_sum": state.epoch_loss_sum,
                "epoch_good_steps": state.epoch_good_steps,
                "nonfinite_total": state.nonfinite_total,
                "order": t.order.cpu() if t.order is not None and state.batch_in_epoch
                else None,
                "history": state.history.to_dict(),
                "callbacks": [c.state_dict() for c in t.callbacks],
                **t.extra_state(),
            },
            "rng": rng,
        }, state.step)


def restore(trainer, saved: dict, source) -> None:
    """Puts a checkpoint's model, optimiser, schedule, loop and RNG states into ``trainer``."""
    t, state = trainer, trainer.state
    ckpt_io.restore_model(t.model, saved, t.extra)
    t.opt.load_state_dict(saved["optimizer"])
    if t.scheduler is not None and saved.get("scheduler") is not None:
        t.scheduler.load_state_dict(saved["scheduler"])
    ts = saved["train_state"]
    state.step, state.epoch = ts["step"], ts["epoch"]
    state.batch_in_epoch = ts["batch_in_epoch"]
    state.epoch_loss_sum = ts.get("epoch_loss_sum", 0.0)
    state.epoch_good_steps = ts.get("epoch_good_steps", state.batch_in_epoch)
    state.nonfinite_total = ts.get("nonfinite_total", 0)
    state.history = History.from_dict(ts["history"])
    for c, s in zip(t.callbacks, ts.get("callbacks", [])):
        c.load_state_dict(s)
    t.load_extra_state(ts)
    rng = saved["rng"]
    if "per_rank" in rng:
        ranks = rng["per_rank"]
        rank = 0 if t.world is None else t.world.rank
        if len(ranks) != t.procs:
            log.warning("checkpoint has RNG states of %d processes, this run has %d; latent "
                        "noise will not continue its stream", len(ranks), t.procs)
        rng = ranks[rank % len(ranks)]
    ckpt_io.set_rng_state(rng, t.gen)
    if ts.get("order") is not None:
        t.order = ts["order"].to(t.dev)
    log.info("resumed from %s at epoch %d, step %d", source, state.epoch, state.step)
