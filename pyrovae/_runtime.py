"""Device, RNG and mode helpers shared by the trainer, metrics and analysis."""

from __future__ import annotations

import contextlib

import torch


def resolve_device(device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or a torch.device) checked against this machine."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device: {device!r} was asked for, but CUDA is not available here "
                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device: {device!r} does not exist; this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    elif dev.type not in ("cpu", "mps"):
        raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
    return dev


def module_device(model) -> torch.device:
    """Device of the first parameter or buffer of ``model`` (CPU when it has none)."""
    if isinstance(model, torch.nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device):
    """Runs the block with torch's RNG seeded, restoring the caller's RNG state afterwards."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def eval_mode(model):
    """``model.eval()`` for the block (batch norm uses running statistics), then restored."""
    if not isinstance(model, torch.nn.Module):
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
