"""Nearest-neighbour search over a codebook without forming an (N, K, D) difference tensor."""

from __future__ import annotations

import torch


def _check_2d(t: torch.Tensor, name: str) -> None:
    if not isinstance(t, torch.Tensor) or t.dim() != 2:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name}: expected a 2-D tensor (rows, D), got {shape}")


def squared_distances(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    r"""``(N, K)`` squared distances between the rows of ``z: (N, D)`` and ``codebook: (K, D)``.

    Uses :math:`\lVert z - e \rVert^2 = \lVert z \rVert^2 - 2 z^\top e + \lVert e \rVert^2`: one
    ``(N, D) x (D, K)`` matrix product, so no ``(N, K, D)`` difference tensor is formed.
    Rounding can make entries slightly negative for (near-)coincident points.
    """
    _check_2d(z, "z")
    _check_2d(codebook, "codebook")
    if z.shape[1] != codebook.shape[1]:
        raise ValueError(f"z: expected rows of size {codebook.shape[1]} (the codebook's D), "
                         f"got {z.shape[1]}")
    z2 = (z * z).sum(1, keepdim=True)  # (N, 1)
    e2 = (codebook * codebook).sum(1)  # (K,)
    return torch.addmm(z2 + e2, z, codebook.t(), alpha=-2.0)  # (N, K)


def nearest_code(z: torch.Tensor, codebook: torch.Tensor, chunk_size: int = 65536
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest codebook row for each row of ``z: (N, D)`` and the squared distance
    to it, both ``(N,)``. Rows are processed ``chunk_size`` at a time, so peak memory is
    ``chunk_size x K`` whatever N is. Ties go to the lowest index."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
    idx, dist = [], []
    for start in range(0, max(z.shape[0], 1), chunk_size):
        d = squared_distances(z[start:start + chunk_size], codebook)  # (n, K)
        m = d.min(1)
        idx.append(m.indices)
        dist.append(m.values.clamp(min=0))
    return torch.cat(idx), torch.cat(dist)
