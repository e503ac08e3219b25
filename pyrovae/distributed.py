"""Data-parallel training on ``torch.distributed``.

Pyro's ELBOs call ``backward`` themselves, so the model/guide pair is not wrapped in
``DistributedDataParallel``; instead each process computes the gradient of its share of the
global batch and the gradients are summed across processes with one ``all_reduce`` over a
flat buffer (the same communication DDP does, one bucket). Summing, not averaging, keeps
Pyro's convention that a loss is summed over the batch: W processes with batch b take the
same steps as one process with batch W·b.

Launch with ``torchrun`` (``torchrun --nproc_per_node 2 -m pyrovae train ...``); :func:`fit
<pyrovae.fit>` joins the process group from the environment ``torchrun`` sets (``gloo`` on CPU,
``nccl`` on CUDA). Across machines: ``torchrun --nnodes 2 --node_rank {0,1} --nproc_per_node G
--rdzv_endpoint HOST:PORT -m pyrovae train ...`` on each machine.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> World | None:
    """The process group this process belongs to, if one is initialised with 2+ processes."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return World(dist.get_rank(), dist.get_world_size(),
                 int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def join(distributed, device: torch.device) -> World | None:
    """Joins (or finds) the process group. ``distributed``: ``None`` joins when launched by
    ``torchrun`` with ``WORLD_SIZE`` > 1, ``True`` requires a group, ``False`` ignores one."""
    if distributed not in (None, True, False):
        raise ValueError(f"distributed: expected None, True or False, got {distributed!r}")
    if distributed is False:
        return None
    world = current()
    if world is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not dist.is_available():
            raise RuntimeError("distributed: torch.distributed is not available in this build")
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
        world = current()
    if world is None and distributed is True:
        raise RuntimeError("distributed=True, but no process group with 2+ processes exists; "
                           "launch with torchrun --nproc_per_node N (or init it yourself)")
    return world


_UNSET = object()
_scope = _UNSET  # the world fit trains in, while a fit runs


@contextmanager
def scope(world: World | None):
    """Within it, :func:`synced` returns ``world``: :func:`fit <pyrovae.fit>` declares the group
    its step is data-parallel over (``None``: a single-process fit, even when a group exists)."""
    global _scope
    previous, _scope = _scope, world
    try:
        yield
    finally:
        _scope = previous


def synced() -> World | None:
    """The group whose processes together make one step, for statistics a model keeps outside
    its gradients (a VQ codebook's EMA counts, say), which must then be reduced over the global
    batch: the world of the running :func:`fit <pyrovae.fit>`, else :func:`current` (a custom
    loop under ``torchrun``, as with ``SyncBatchNorm``). ``None``: no one to agree with."""
    return current() if _scope is _UNSET else _scope


def all_reduce_(tensors: list[torch.Tensor]) -> None:
    """Sums each of ``tensors`` across processes, in place, in one ``all_reduce`` of one flat
    buffer (all of one dtype and device)."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every process's rows of ``t: (n_r, ...)`` concatenated in rank order, ``(sum n_r, ...)``,
    on every process; the ``n_r`` may differ (rows are padded for the collective)."""
    sizes = [torch.zeros((), dtype=torch.int64, device=t.device) for _ in
             range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor(t.shape[0], dtype=torch.int64, device=t.device))
    sizes = [int(s) for s in sizes]
    most = max(sizes)
    padded = t if t.shape[0] == most else torch.cat(
        [t, t.new_zeros((most - t.shape[0], *t.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


def broadcast_(tensors: list[torch.Tensor]) -> None:
    """Copies rank 0's values of ``tensors`` to every process (identical starting weights)."""
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=0)


def all_reduce_grads_(params: list[torch.Tensor], scalars: list[float]) -> list[float]:
    """Sums every parameter's gradient (missing ones as zeros) and ``scalars`` across processes,
    in one ``all_reduce`` (:func:`all_reduce_`); gradients are updated in place."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    totals = torch.tensor(scalars, device=params[0].device, dtype=params[0].dtype)
    all_reduce_([p.grad for p in params] + [totals])
    return totals.tolist()


def gather(obj) -> list:
    """Every process's ``obj``, in rank order (on every process)."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    dist.barrier()
