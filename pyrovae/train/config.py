"""The training settings, declared once: :func:`pyrovae.fit`'s keywords, the run folder's
``config.json`` ``train`` entry and ``pyrovae train``'s options all come from
:class:`TrainConfig`'s fields. Adding a setting is adding a field (with its help text and, if
the command line should take it, its option)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field

from .. import checks
from .optim import SCHEDULES

TRACKERS = ("tensorboard",)


# --- command-line value parsers (argparse ``type=``) -----------------------------------------
def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return v


def key_value(text: str) -> tuple[str, object]:
    """``"eps=1e-8"`` -> ``("eps", 1e-08)``: the value parsed as JSON when it can be (numbers,
    lists such as ``betas=[0.9,0.99]``, ``true``), else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _setting(default, help: str, *, cli: dict | None = None, stored: bool = True,
             factory=None):
    """A field of :class:`TrainConfig`: ``cli`` holds the ``add_argument`` keywords of its
    command-line option (``None``: not on the command line); ``stored=False`` keeps it out of
    a run's ``config.json`` (where the run happens, not what it is)."""
    meta = {"help": help, "cli": cli, "stored": stored}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """How :func:`pyrovae.fit` trains. Every field is also a keyword of ``fit`` and (where it
    has an option) of ``pyrovae train``; a run folder's ``config.json`` stores them."""

    epochs: int | None = _setting(
        None, "passes over the training data (give epochs, steps or both)",
        cli=dict(type=positive_int, help="passes over the training data (default 20 unless "
                                         "--steps)"))
    steps: int | None = _setting(None, "cap on optimiser steps",
                                 cli=dict(type=positive_int))
    batch_size: int = _setting(128, "data points per step (per process when distributed)",
                               cli=dict(type=positive_int))
    optimizer: object = _setting(
        "adam", "a name ('adam', 'sgd', ...), a torch.optim class (built with lr and "
                "optimizer_args), a factory params -> Optimizer, or a pyro.optim wrapper",
        cli=dict(help="torch.optim optimiser by name: adam, adamw, sgd, rmsprop, ..."))
    lr: float = _setting(1e-3, "learning rate", cli=dict(type=positive_float))
    optimizer_args: dict | None = _setting(
        None, "further arguments of the optimiser (betas, eps, weight_decay, ...)",
        cli=dict(type=key_value, action="append", metavar="KEY=VALUE", dest="optimizer_args",
                 flag="--optimizer-arg",
                 help="optimiser argument, repeatable: --optimizer-arg eps=1e-8 "
                      "--optimizer-arg betas=[0.9,0.99] --optimizer-arg weight_decay=0.01"))
    lr_schedule: object = _setting(
        None, "'cosine' (per step, to zero), 'burda' (Burda et al. 2016, per epoch), "
              "'constant', or a factory optimizer -> scheduler stepped per lr_schedule_interval",
        cli=dict(choices=SCHEDULES))
    lr_schedule_interval: str = _setting("epoch", "when a factory's scheduler steps: 'epoch' "
                                                  "or 'step'")
    device: str = _setting("cpu", "'cpu' or 'cuda[:N]'; model and data move there once",
                           cli=dict(help="cpu | cuda | cuda:N"), stored=False)
    seed: int | None = _setting(
        0, "seeds torch, NumPy and Python (pyro.set_rng_seed) and the data order; a run "
           "folder's model is built after seeding, so its initial weights follow it too",
        cli=dict(type=int))
    checkpoint_every: int = _setting(1, "epochs between checkpoints",
                                     cli=dict(type=positive_int))
    keep_checkpoints: int = _setting(
        1, "also keep the newest N checkpoints as checkpoint-step<N>.pt",
        cli=dict(type=positive_int))
    log_every: int | None = _setting(
        None, "steps between records of the loss and its terms in the history (default every "
              "50 steps, at least once per epoch, at most every 10)",
        cli=dict(type=positive_int))
    progress: bool | None = _setting(
        None, "progress bar (default: when writing to a terminal; elsewhere one line per "
              "epoch)", stored=False,
        cli=dict(action=argparse.BooleanOptionalAction,
                 help="progress bar with the loss and its terms (default: when stderr is a "
                      "terminal); --no-progress: only one line per epoch"))
    clip_grad_norm: float | None = _setting(
        None, "clip the gradients' total norm to this value", cli=dict(type=positive_float))
    max_nonfinite: int = _setting(
        10, "consecutive non-finite steps (each skipped, model untouched) that stop training",
        cli=dict(type=positive_int))
    nonfinite_patience: int = _setting(
        3, "every this many non-finite steps in a row, multiply lr by nonfinite_lr_factor")
    nonfinite_lr_factor: float = _setting(0.5, "see nonfinite_patience")
    validation: str = _setting(
        "first", "when Pyro's validation runs: on the 'first' step of each call (its messages "
                 "name a mistake at once; later steps run faster), on 'all' steps, or 'none'",
        cli=dict(choices=("first", "all", "none")))
    distributed: bool | None = _setting(
        None, "data-parallel over a torch.distributed process group: None joins one when "
              "launched by torchrun", stored=False)
    precision: str = _setting(
        "fp32", "'bf16' runs the networks under torch.autocast in bfloat16 (log-densities "
                "stay fp32)", cli=dict(choices=("fp32", "bf16")))
    lean_elbo: bool = _setting(
        True, "run Trace_ELBO / TraceMeanField_ELBO on a fully reparametrised guide through "
              "pyrovae.infer.lean (same estimator, same draws, no per-site Python)",
        cli=dict(action=argparse.BooleanOptionalAction))
    compile: bool | str = _setting(
        False, "trace model and guide once and run the ELBO as one function "
               "(pyrovae.train.compiled): True or 'inductor' compiles it with torch.compile, "
               "'trace' replays the traced graph; falls back to eager, saying why, when the "
               "program's structure is dynamic",
        cli=dict(nargs="?", const="inductor", choices=("inductor", "trace"),
                 help="trace model and guide once and run the ELBO as one torch.compile'd "
                      "function (inductor) or a replayed graph (trace)"))
    log: tuple = _setting(
        (), "experiment trackers besides the JSON-lines log: 'tensorboard'",
        cli=dict(action="append", choices=TRACKERS, help="also log to a tracker, repeatable: "
                                                         "tensorboard"),
        factory=tuple)
    early_stopping: int | None = _setting(
        None, "stop when the validation loss has not improved for this many epochs, and "
              "keep the best epoch's weights (needs validation data)",
        cli=dict(type=positive_int, metavar="PATIENCE"))

    def __post_init__(self):
        if self.epochs is None and self.steps is None:
            raise ValueError("fit: give epochs, steps, or both")
        for name in ("epochs", "steps", "log_every", "early_stopping"):
            checks.positive_int(getattr(self, name), name, allow_none=True)
        for name in ("batch_size", "checkpoint_every", "keep_checkpoints", "max_nonfinite",
                     "nonfinite_patience"):
            checks.positive_int(getattr(self, name), name)
        checks.number_in(self.lr, "lr")
        checks.number_in(self.clip_grad_norm, "clip_grad_norm", allow_none=True)
        checks.number_in(self.nonfinite_lr_factor, "nonfinite_lr_factor", 0.0, 1.0, bounds="(]")
        checks.one_of(self.validation, ("first", "all", "none"), "validation")
        checks.one_of(self.precision, ("fp32", "bf16"), "precision")
        checks.one_of(self.lr_schedule_interval, ("epoch", "step"), "lr_schedule_interval")
        if self.distributed not in (None, True, False):
            raise ValueError(f"distributed: expected None, True or False, got "
                             f"{self.distributed!r}")
        if self.seed is not None and not checks.is_int(self.seed):
            raise ValueError(f"seed: expected an int or None, got {self.seed!r}")
        if self.optimizer_args is not None:
            if isinstance(self.optimizer_args, (list, tuple)):  # [(key, value), ...] pairs
                self.optimizer_args = dict(self.optimizer_args)
            if not isinstance(self.optimizer_args, dict) \
                    or not all(isinstance(k, str) for k in self.optimizer_args):
                raise ValueError(f"optimizer_args: expected a dict of keyword arguments, got "
                                 f"{self.optimizer_args!r}")
        checks.boolean(self.lean_elbo, "lean_elbo")
        checks.one_of(self.compile, (False, True, "inductor", "trace"), "compile")
        self.log = tuple(self.log or ())
        for t in self.log:
            checks.one_of(t, TRACKERS, "log")

    def to_dict(self, stored_only: bool = True) -> dict:
        """The settings as a dict (``stored_only``: those a run folder keeps)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata["stored"] or not stored_only}

    @classmethod
    def from_dict(cls, d: dict, **overrides) -> TrainConfig:
        """Settings from a run folder's ``config.json`` (older files may lack newer fields,
        which take their defaults), with ``overrides`` applied."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in names}
        values.update(overrides)
        return cls(**values)


def add_options(parser: argparse.ArgumentParser) -> None:
    """``parser`` gains one option per command-line field of :class:`TrainConfig`."""
    for f in dataclasses.fields(TrainConfig):
        cli = f.metadata["cli"]
        if cli is None:
            continue
        cli = dict(cli)
        flag = cli.pop("flag", "--" + f.name.replace("_", "-"))
        cli.setdefault("help", f.metadata["help"])
        cli.setdefault("dest", f.name)
        if cli.get("action") != "append":
            cli.setdefault("default", f.default if f.default is not dataclasses.MISSING
                           else None)
        parser.add_argument(flag, **cli)


def from_options(args: argparse.Namespace, **overrides) -> dict:
    """The :class:`TrainConfig` settings a parsed command line gives (only the fields that have
    an option), with ``overrides`` applied."""
    out = {}
    for f in dataclasses.fields(TrainConfig):
        if f.metadata["cli"] is not None and hasattr(args, f.name):
            out[f.name] = getattr(args, f.name)
    if out.get("log") is None:
        out["log"] = ()
    out.update(overrides)
    return out
