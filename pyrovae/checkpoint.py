"""Checkpoints: written atomically, read without executing code.

A checkpoint is a dict of tensors and plain values saved with ``torch.save`` and read with
``torch.load(weights_only=True)``, so opening one never runs code from the file. It is written
to a temporary file in the same folder, flushed to disk, then renamed over the old one: a crash
mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro.distributions import constraints
from torch.distributions import transform_to

from . import checks
from .init_args import constructor_record
from .protocol import spec_of

log = logging.getLogger("pyrovae")

FORMAT = "pyrovae.checkpoint"
VERSION = 1
FILENAME = "checkpoint.pt"


def save(path: str | os.PathLike, payload: dict) -> Path:
    """Writes ``payload`` to ``path`` atomically: a temporary file in the same folder, flushed
    and fsynced, then renamed over ``path``. A failed or interrupted write (disk full, the
    process killed) leaves the previous file at ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # a fixed name: a killed writer's leftover is reused
    payload = {"format": FORMAT, "version": VERSION, **payload}
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"checkpoint: writing {path} failed ({e.strerror or e}); the "
                               f"previous checkpoint there, if any, is intact") from e
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Makes a rename in ``folder`` durable (not supported on every platform)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """Reads a checkpoint with ``weights_only=True``; refuses other files and newer formats."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] != b"PK" and head[:1] != b"\x80":  # torch.save's zip archive or legacy pickle
        raise ValueError(f"checkpoint: {path} is not a readable pyrovae checkpoint (it is not a "
                         f"file torch.save wrote; it starts with bytes {head.hex() or 'none'})")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError,
            ImportError, IndexError, KeyError, TypeError, UnicodeDecodeError, OSError) as e:
        # weights_only=True refuses any pickle that would construct arbitrary objects, so a
        # tampered file fails here without running code; truncated files fail here too.
        if isinstance(e, pickle.UnpicklingError) and "weights_only" in str(e).lower() \
                or "Weights only load failed" in str(e):
            why = ("it holds objects other than tensors and plain values, which the safe loader "
                   "refuses; nothing in it was run")
        else:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            why = f"corrupted or truncated: {first[:120]}"
        raise ValueError(f"checkpoint: {path} is not a readable pyrovae checkpoint "
                         f"({why})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"checkpoint: {path} is not a pyrovae checkpoint")
    if ckpt.get("version", 0) > VERSION:
        raise ValueError(
            f"checkpoint: {path} has format version {ckpt['version']}, newer than this pyrovae "
            f"reads ({VERSION}); upgrade pyrovae"
        )
    return ckpt


class CheckpointDir:
    """The checkpoints of one run: ``checkpoint.pt`` is always the newest; with ``keep > 1``
    the newest ``keep`` are also kept as ``checkpoint-step<N>.pt`` (``checkpoint.pt`` is a hard
    link to the newest, so nothing is written twice)."""

    def __init__(self, folder: str | os.PathLike, keep: int = 1):
        checks.positive_int(keep, "keep_checkpoints")  # fit()'s name for it
        self.folder, self.keep = Path(folder), keep

    @property
    def latest(self) -> Path:
        return self.folder / FILENAME

    def _numbered(self) -> list[Path]:
        """Step-numbered checkpoints, newest first."""
        return sorted(self.folder.glob("checkpoint-step*.pt"), reverse=True)

    def save(self, payload: dict, step: int) -> Path:
        if self.keep == 1:
            return save(self.latest, payload)
        path = save(self.folder / f"checkpoint-step{step:09d}.pt", payload)
        tmp = self.folder / f".{FILENAME}.link"
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError:  # no hard links on this file system: copy instead
            tmp.write_bytes(path.read_bytes())
        os.replace(tmp, self.latest)
        _fsync_dir(self.folder)
        for old in self._numbered()[self.keep:]:
            old.unlink(missing_ok=True)
        return path

    def load_latest(self, map_location="cpu") -> tuple[dict, Path] | tuple[None, None]:
        """The newest checkpoint that loads, skipping (and logging) unreadable ones; ``(None,
        None)`` when there is none at all. Raises if checkpoints exist but none loads."""
        candidates = [p for p in [self.latest, *self._numbered()] if p.is_file()]
        errors = []
        for p in candidates:
            try:
                return load(p, map_location), p
            except ValueError as e:
                log.warning("skipping unreadable checkpoint: %s", e)
                errors.append(str(e))
        if errors:
            raise ValueError("checkpoint: no readable checkpoint in "
                             f"{self.folder}: " + "; ".join(errors))
        return None, None


def model_payload(model, extra_params: dict[str, torch.Tensor], *, init_args: dict | None = None,
                  strict: bool = False) -> dict:
    """What rebuilds a model: its spec, constructor arguments, module state and the
    ``pyro.param`` tensors kept outside its modules.

    ``model_config`` holds the constructor arguments (our models' config; for other classes
    what :func:`pyrovae.init_args.init_args_of` recovers, ``init_args`` first). They are
    checked against the weights by building the class once on PyTorch's meta device (no
    memory, no random draws; once per class and arguments): a default taken for an argument
    the model keeps no attribute of would otherwise rebuild a different model. When the
    arguments cannot be recovered or do not rebuild the weights, ``strict=True`` raises
    ``ValueError`` naming the argument and the fix, before anything is written; otherwise
    (the trainer's checkpoints, which must not stop a run) ``model_config`` is ``None``, the
    reason is logged once and kept as ``model_init["problem"]`` for the loader's error.

    ``extra_params`` maps names to the *unconstrained* tensors (what the trainer optimises);
    their constraints (by name, where Pyro names them) and constrained values come along, so a
    loader can register them in a fresh param store.
    """
    state = model.state_dict() if isinstance(model, torch.nn.Module) else {}
    config, init = constructor_record(model, init_args, strict)
    return {
        "model_spec": spec_of(model),
        "model_config": config,
        "model_init": init,
        "model_state": state,
        **params_payload(extra_params),
    }


def params_payload(unconstrained: dict[str, torch.Tensor]) -> dict:
    """``pyro_params`` (unconstrained, as the trainer restores them), ``pyro_param_constraints``
    (a name such as ``"positive"``, ``["interval", 0.0, 1.0]``, or ``None`` when Pyro's
    constraint modules do not name it) and ``pyro_param_values`` (constrained)."""
    known = pyro.get_param_store().get_state()["constraints"]
    raw, codes, values = {}, {}, {}
    for name, u in unconstrained.items():
        u = u.detach().clone()
        c = known.get(name, constraints.real)
        raw[name], codes[name] = u, encode_constraint(c)
        with torch.no_grad():
            values[name] = transform_to(c)(u).detach().clone()
    return {"pyro_params": raw, "pyro_param_constraints": codes, "pyro_param_values": values}


_BOUNDED = {"greater_than": ("lower_bound",), "greater_than_eq": ("lower_bound",),
            "less_than": ("upper_bound",), "interval": ("lower_bound", "upper_bound"),
            "half_open_interval": ("lower_bound", "upper_bound")}


def encode_constraint(c):
    """A constraint as a plain value (``None`` when it has no name we can rebuild it from)."""
    for name in dir(constraints):
        if not name.startswith("_") and getattr(constraints, name) is c:
            return name
    for name, fields in _BOUNDED.items():
        if type(c) is type(getattr(constraints, name)(*[0.0] * len(fields))):
            try:
                return [name, *(float(getattr(c, f)) for f in fields)]
            except (TypeError, ValueError, RuntimeError):  # tensor-valued bounds
                return None
    return None


def decode_constraint(code):
    """Inverse of :func:`encode_constraint` (``None`` for ``None``)."""
    if code is None:
        return None
    if isinstance(code, str):
        return getattr(constraints, code)
    return getattr(constraints, code[0])(*code[1:])


def restore_model(model, ckpt: dict, extra_params: dict[str, torch.Tensor] | None = None) -> None:
    """Loads a checkpoint's weights into ``model`` (checked to be the same kind of model)."""
    spec = spec_of(model)
    if ckpt.get("model_spec") not in (None, spec):
        raise ValueError(
            f"checkpoint: it holds a {ckpt['model_spec']!r} model, not a {spec!r} one"
        )
    if isinstance(model, torch.nn.Module):
        problem = _state_mismatch(model.state_dict(), ckpt["model_state"])
        if problem:
            raise ValueError(f"checkpoint: its weights do not fit this model: {problem} (it was "
                             f"saved with model_config {ckpt.get('model_config')})")
        model.load_state_dict(ckpt["model_state"])
    saved = ckpt.get("pyro_params", {})
    if extra_params is not None:
        missing = sorted(set(saved) - set(extra_params))
        if missing:
            raise ValueError(f"checkpoint: params {missing} are not in this model/guide")
        with torch.no_grad():
            for name, value in saved.items():
                extra_params[name].copy_(value)


def _state_mismatch(ours: dict, saved: dict) -> str:
    """One line describing how two state dicts differ ('' when they fit)."""
    missing = sorted(set(ours) - set(saved))
    extra = sorted(set(saved) - set(ours))
    shapes = [f"{k} is {tuple(saved[k].shape)} there and {tuple(v.shape)} here"
              for k, v in ours.items() if k in saved and tuple(saved[k].shape) != tuple(v.shape)]
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[0]}")
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing from it, e.g. {missing[0]}")
    if extra:
        parts.append(f"{len(extra)} tensor(s) this model lacks, e.g. {extra[0]}")
    return "; ".join(parts)


def rng_state(generator: torch.Generator) -> dict:
    """Every random state a run draws from: torch (CPU, CUDA), the data generator, NumPy, Python."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "data": generator.get_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["data"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
