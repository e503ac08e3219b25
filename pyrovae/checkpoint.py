"""Checkpoints: written atomically, read without executing code.

A checkpoint is a dict of tensors and plain values saved with ``torch.save`` and read with
``torch.load(weights_only=True)``, so opening one never runs code from the file. It is written
to a temporary file in the same folder, flushed to disk, then renamed over the old one: a crash
mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch

from .models.base import build, config_of, spec_of

FORMAT = "pyrovae.checkpoint"
VERSION = 1
FILENAME = "checkpoint.pt"


def save(path: str | os.PathLike, payload: dict) -> Path:
    """Writes ``payload`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    payload = {"format": FORMAT, "version": VERSION, **payload}
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """Reads a checkpoint with ``weights_only=True``; refuses other files and newer formats."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise ValueError(f"checkpoint: {path} is not a readable pyrovae checkpoint ({e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"checkpoint: {path} is not a pyrovae checkpoint")
    if ckpt.get("version", 0) > VERSION:
        raise ValueError(
            f"checkpoint: {path} has format version {ckpt['version']}, newer than this pyrovae "
            f"reads ({VERSION}); upgrade pyrovae"
        )
    return ckpt


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
        try:
            model.load_state_dict(ckpt["model_state"])
        except RuntimeError as e:
            raise ValueError(f"checkpoint: its weights do not fit this model: {e}") from None
    saved = ckpt.get("pyro_params", {})
    if extra_params is not None:
        missing = sorted(set(saved) - set(extra_params))
        if missing:
            raise ValueError(f"checkpoint: params {missing} are not in this model/guide")
        with torch.no_grad():
            for name, value in saved.items():
                extra_params[name].copy_(value)


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
