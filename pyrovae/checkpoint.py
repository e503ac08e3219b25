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
import torch

from .models.base import build, config_of, spec_of

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
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep_checkpoints: expected a positive int, got {keep!r}")
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


def model_payload(model, extra_params: dict[str, torch.Tensor]) -> dict:
    """What rebuilds a model: its spec, config, module state and params kept outside it."""
    return {
        "model_spec": spec_of(model),
        "model_config": config_of(model),
        "model_state": model.state_dict() if isinstance(model, torch.nn.Module) else {},
        "pyro_params": {k: v.detach().clone() for k, v in extra_params.items()},
    }


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


def load_model(path: str | os.PathLike, device="cpu"):
    """Rebuilds the model a checkpoint (or run folder) holds, weights loaded, on ``device``.

    Needs the checkpoint's ``model_spec`` to resolve (a registered name or an importable
    ``module:Name``). Parameters created by ``pyro.param`` outside the module are loaded on the
    first run of :func:`pyrovae.fit` or :func:`load_params`.
    """
    ckpt = load(path)
    if ckpt.get("model_spec") is None:
        raise ValueError("checkpoint: it records no model spec; build the model yourself and "
                         "use pyrovae.checkpoint.restore_model")
    model = build(ckpt["model_spec"], ckpt.get("model_config"))
    restore_model(model, ckpt)
    if isinstance(model, torch.nn.Module):
        model.to(device)
    return model


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
