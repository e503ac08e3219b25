"""Hooks into :func:`pyrovae.fit`'s loop.

A leaf module: it imports nothing from pyrovae, so objectives (``pyrovae.infer``), models and a
user's own code can subclass :class:`Callback` without importing the trainer.

The loop calls, in this order, for each optimiser step::

    wrap(model, guide)          once, before training: the programs the loss sees
    on_train_start(state)
        on_after_backward(state)    gradients filled, update not yet applied
        on_step_end(state)          update applied (or skipped), ``state.step`` advanced
        on_epoch_end(state)         after the epoch's record and validation
    on_train_end(state)
"""

from __future__ import annotations

from collections.abc import Callable


class Callback:
    """Hooks :func:`pyrovae.fit` calls. Override what you need; every hook receives the
    :class:`~pyrovae.train.TrainState` (set ``state.stop = True`` to end training after the
    current step).

    ``wrap`` lets a callback transform the model and guide programs the loss sees (a KL
    schedule wraps them in ``poutine.scale``, say) while metrics still see the originals.
    ``on_after_backward`` sees the gradients before the optimiser does (set
    ``state.skip_update = True`` to leave parameters and optimiser state as they are).
    ``state_dict``/``load_state_dict`` make a callback's own state part of checkpoints.
    """

    def wrap(self, model: Callable, guide: Callable) -> tuple[Callable, Callable]:
        return model, guide

    def on_train_start(self, state) -> None:
        pass

    def on_after_backward(self, state) -> None:
        pass

    def on_step_end(self, state) -> None:
        pass

    def on_epoch_end(self, state) -> None:
        pass

    def on_train_end(self, state) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class StepFollower(Callback):
    """A callback that keeps ``self.step`` equal to the trainer's step count (also across
    resumes), and counts the calls of ``advance`` when used outside :func:`pyrovae.fit`."""

    step: int = 0

    def advance(self) -> None:
        self.step += 1

    def on_train_start(self, state) -> None:
        self.step = state.step

    def on_step_end(self, state) -> None:
        self.step = state.step

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state.get("step", self.step))


class EpochEnd(Callback):
    """A plain callable ``fn(state)`` run at each epoch's end (what ``fit(callbacks=[fn])``
    makes of a function)."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def on_epoch_end(self, state) -> None:
        self.fn(state)


def as_callbacks(items) -> list[Callback]:
    """``items`` as :class:`Callback` objects (callables become :class:`EpochEnd`)."""
    out = []
    for c in items:
        if isinstance(c, Callback):
            out.append(c)
        elif callable(c):
            out.append(EpochEnd(c))
        else:
            raise TypeError(f"callbacks: expected Callback objects or callables, got {c!r}")
    return out
