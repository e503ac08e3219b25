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


def broadcast_(tensors: list[torch.Tensor]) -> None:
    """Copies rank 0's values of ``tensors`` to every process (identical starting weights)."""
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=0)


def all_reduce_grads_(params: list[torch.Tensor], scalars: list[float]) -> list[float]:
    """Sums every parameter's gradient (missing ones as zeros) and ``scalars`` across processes,
    in one ``all_reduce`` of one flat buffer; gradients are updated in place."""
    ref = params[0]
    parts = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=ref.device,
             dtype=p.dtype) for p in params]
    parts.append(torch.tensor(scalars, device=ref.device, dtype=ref.dtype))
    flat = torch.cat([q.to(ref.dtype) for q in parts])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        g = flat[offset:offset + n].view_as(p)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
        offset += n
    return flat[offset:].tolist()


def gather(obj) -> list:
    """Every process's ``obj``, in rank order (on every process)."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    dist.barrier()
