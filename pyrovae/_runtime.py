"""Device, RNG and mode helpers shared by the trainer, metrics and analysis."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

import torch

_LIBC = None


def trim_heap() -> None:
    """Returns freed heap pages to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    glibc raises its mmap threshold after large blocks are freed, so later tensors of that size
    come from the heap, whose freed middle pages stay resident: a loop over equal-size chunks
    then grows its peak memory with the number of chunks although it holds only one at a time.
    """
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


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
