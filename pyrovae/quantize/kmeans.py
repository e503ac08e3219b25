r"""k-means as the optimal vector quantiser's fixed-point iteration (Lloyd 1957/1982; Linde, Buzo
and Gray 1980).

A quantiser with codebook :math:`c_1, \dots, c_K` and partition :math:`S_1, \dots, S_K` has
distortion :math:`\sum_i \sum_{x \in S_i} \lVert x - c_i \rVert^2` (the *inertia*). Two
necessary conditions for a minimum, each optimal given the other:

- the **nearest-neighbour rule**: :math:`S_i = \{x : \lVert x - c_i \rVert \le \lVert x - c_j
  \rVert\ \forall j\}`, the Voronoi cell of :math:`c_i`;
- the **centroid rule**: :math:`c_i = \frac{1}{|S_i|}\sum_{x \in S_i} x`, the cell's mean.

Lloyd's algorithm alternates them; the distortion never increases, and the iteration stops
when the assignments no longer change. In one dimension with a density instead of data points
the same two rules give the Lloyd-Max quantiser (:mod:`pyrovae.quantize.lloyd_max`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .. import checks
from .nearest import nearest_code


class KMeansResult(NamedTuple):
    centers: torch.Tensor  # (K, D)
    labels: torch.Tensor  # (N,) int64: the nearest center of each point
    inertia: float  # sum of squared distances to the nearest center
    n_iter: int  # Lloyd iterations run
    converged: bool  # assignments stopped changing (or centers moved less than tol)


def _as_points(x, name: str = "x") -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() == 1:
        x = x.unsqueeze(1)
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected points of shape (N, D) with N >= 1, got "
                         f"{tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.double()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite values")
    return x


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
    r"""k-means++ seeding (Arthur and Vassilvitskii 2007, §2.2): the first center uniformly from
    the points, each next one with probability proportional to :math:`D(x)^2`, the squared
    distance to the nearest center chosen so far. Returns ``(k, D)`` rows of ``x``."""
    x = _as_points(x)
    n = x.shape[0]
    checks.int_in(k, "k", 1, n)  # at most one center per point
    first = torch.randint(n, (1,), generator=generator, device=x.device)
    centers = [x[first]]
    d2 = ((x - centers[0]) ** 2).sum(1)  # (N,)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # every point coincides with a center: pick uniformly
            probs = torch.ones_like(d2)
        else:
            probs = d2 / total
        nxt = torch.multinomial(probs, 1, generator=generator)
        centers.append(x[nxt])
        d2 = torch.minimum(d2, ((x - x[nxt]) ** 2).sum(1))
    return torch.cat(centers)


def kmeans(x, k: int, *, init="k-means++", max_iter: int = 300, tol: float = 0.0,
           generator: torch.Generator | None = None) -> KMeansResult:
    """Lloyd's algorithm on points ``x: (N, D)`` (or ``(N,)``) with ``k`` centers.

    ``init`` is ``"k-means++"`` (:func:`kmeans_plus_plus`) or a ``(k, D)`` tensor of starting
    centers. Each iteration applies the nearest-neighbour rule, then the centroid rule; it stops
    when the assignments repeat (then the centers are exactly the means of their cells), when
    the centers' total squared shift is at most ``tol``, or after ``max_iter`` iterations. An
    empty cell's center is moved to the point farthest from its own center (as scikit-learn
    does), so every center keeps a cell. The returned labels and inertia are those of the
    returned centers.
    """
    x = _as_points(x)
    n, d = x.shape
    if isinstance(init, str):
        if init != "k-means++":
            raise ValueError(f"init: expected 'k-means++' or a (k, D) tensor, got {init!r}")
        centers = kmeans_plus_plus(x, k, generator)
    else:
        centers = torch.as_tensor(init, dtype=x.dtype, device=x.device).clone()
        if centers.shape != (k, d):
            raise ValueError(f"init: expected shape ({k}, {d}), got {tuple(centers.shape)}")
    checks.positive_int(max_iter, "max_iter")
    labels_old, converged, it = None, False, 0
    for it in range(1, max_iter + 1):
        labels, d2 = nearest_code(x, centers)  # nearest-neighbour rule
        if labels_old is not None and torch.equal(labels, labels_old):
            converged = True
            it -= 1  # this pass only confirmed the previous one
            break
        counts = torch.bincount(labels, minlength=k).to(x.dtype)  # (k,)
        sums = torch.zeros_like(centers).index_add_(0, labels, x)  # (k, D)
        new = torch.where(counts.unsqueeze(1) > 0, sums / counts.clamp(min=1).unsqueeze(1),
                          centers)  # centroid rule
        empty = (counts == 0).nonzero().squeeze(1)
        if empty.numel():
            far = torch.argsort(d2, descending=True)[:empty.numel()]
            new[empty] = x[far]
        shift = float(((new - centers) ** 2).sum())
        centers, labels_old = new, labels
        if shift <= tol:
            converged = True
            break
    labels, d2 = nearest_code(x, centers)
    # the exact inertia of these centers (the matrix-product distances are for the argmin only)
    inertia = float(((x - centers[labels]) ** 2).sum())
    return KMeansResult(centers, labels, inertia, it, converged)
