r"""Lloyd-Max scalar quantisation (Lloyd 1957, published 1982; Max 1960, "Quantizing for minimum
distortion", IRE Trans. Information Theory 6(1)).

An N-level quantiser of a real random variable X has decision thresholds
:math:`t_1 < \dots < t_{N-1}` (with :math:`t_0 = -\infty`, :math:`t_N = +\infty`) and
reconstruction levels :math:`y_1 < \dots < y_N`; it maps :math:`x \in (t_{i-1}, t_i]` to
:math:`y_i`. Its mean squared error is

.. math:: D = \sum_{i=1}^N \int_{t_{i-1}}^{t_i} (x - y_i)^2\, p(x)\, dx,

and setting its derivatives to zero gives Max's two conditions (his eqs. 7 and 8):

- **nearest neighbour**: :math:`t_i = (y_i + y_{i+1}) / 2` - each threshold halves the gap
  between neighbouring levels, so the cells are the levels' Voronoi regions on the line;
- **centroid**: :math:`y_i = E[X \mid t_{i-1} < X \le t_i]` - each level is its cell's mean.

Alternating them (Lloyd's "method I") never increases D. Given samples instead of a density the
same iteration is one-dimensional k-means (:func:`pyrovae.quantize.kmeans`). For N(0, 1) the
result reproduces Max's Table I, e.g. D = 0.3634, 0.1175, 0.03454, 0.009497 for N = 2, 4, 8, 16.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from .. import checks


class LloydMaxResult(NamedTuple):
    thresholds: torch.Tensor  # (N - 1,) float64 decision thresholds t_1..t_{N-1}
    levels: torch.Tensor  # (N,) float64 reconstruction levels y_1..y_N
    mse: float  # mean squared error D of this quantiser on the source
    n_iter: int  # iterations run
    converged: bool  # levels moved less than tol (density) / cells stopped changing (samples)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Indices ``(...)`` of the cells holding ``x`` (x <= t_i goes to cell i)."""
        x = torch.as_tensor(x, dtype=torch.float64)
        return torch.searchsorted(self.thresholds, x.contiguous(), right=False)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction level of each entry of ``x``."""
        return self.levels[self.quantize(x)]


def _quantile(d, p: float) -> float:
    """The p-quantile of a scalar distribution: its icdf, or bisection on its cdf."""
    q = torch.tensor(p, dtype=torch.float64)
    try:
        return float(d.icdf(q))
    except NotImplementedError:
        pass
    try:
        d.cdf(torch.tensor(0.0, dtype=torch.float64))
    except NotImplementedError:
        raise ValueError(f"source: {type(d).__name__} has neither icdf nor cdf; pass samples "
                         f"instead") from None
    lo, hi = -1.0, 1.0
    while float(d.cdf(torch.tensor(lo, dtype=torch.float64))) > p:
        lo *= 2
    while float(d.cdf(torch.tensor(hi, dtype=torch.float64))) < p:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if float(d.cdf(torch.tensor(mid, dtype=torch.float64))) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class _Quadrature:
    """Moments :math:`\\int_a^b x^r p(x) dx`, r = 0, 1, 2, of a density on many cells at once:
    composite Gauss-Legendre, ``pieces`` sub-intervals of ``nodes`` points per cell (float64)."""

    def __init__(self, d, nodes: int = 24, pieces: int = 8):
        self.d = d
        t, w = np.polynomial.legendre.leggauss(nodes)  # on [-1, 1]
        u = (np.arange(pieces)[:, None] + (t[None, :] + 1) / 2) / pieces  # (pieces, nodes)
        self.u = torch.from_numpy(u.reshape(-1))  # points in [0, 1]
        self.w = torch.from_numpy(np.tile(w / (2 * pieces), pieces))  # weights on [0, 1]

    def moments(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, ...]:
        width = (b - a).unsqueeze(1)  # (N, 1)
        x = a.unsqueeze(1) + width * self.u  # (N, Q)
        p = torch.exp(self.d.log_prob(x).to(torch.float64)) * self.w * width  # (N, Q)
        return p.sum(1), (p * x).sum(1), (p * x * x).sum(1)


def _from_density(d, n: int, max_iter: int, tol: float, init, tail: float) -> LloydMaxResult:
    if tuple(d.batch_shape) or tuple(d.event_shape):
        raise ValueError(f"source: expected a scalar distribution (batch and event shape ()), "
                         f"got batch_shape {tuple(d.batch_shape)}, event_shape "
                         f"{tuple(d.event_shape)}")
    lo, hi = _quantile(d, tail), _quantile(d, 1 - tail)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"source: could not bracket its support (quantiles {lo}, {hi})")
    quad = _Quadrature(d)
    if init is None:
        y = torch.tensor([_quantile(d, (i + 0.5) / n) for i in range(n)], dtype=torch.float64)
    else:
        y = torch.as_tensor(init, dtype=torch.float64).sort().values
    edge_lo, edge_hi = torch.tensor([lo], dtype=torch.float64), torch.tensor([hi],
                                                                             dtype=torch.float64)
    converged, n_iter = False, 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        t = (y[:-1] + y[1:]) / 2  # nearest-neighbour rule
        edges = torch.cat([edge_lo, t, edge_hi])
        m0, m1, _ = quad.moments(edges[:-1], edges[1:])
        new = torch.where(m0 > 0, m1 / m0.clamp(min=1e-300), y)  # centroid rule
        step = float((new - y).abs().max())
        y = new
        if step <= tol:
            converged = True
            break
    t = (y[:-1] + y[1:]) / 2
    edges = torch.cat([edge_lo, t, edge_hi])
    m0, m1, m2 = quad.moments(edges[:-1], edges[1:])
    mse = float((m2 - 2 * y * m1 + y * y * m0).sum() / m0.sum())
    return LloydMaxResult(t, y, mse, n_iter, converged)


def _from_samples(x: torch.Tensor, n: int, max_iter: int, init) -> LloydMaxResult:
    x = x.reshape(-1).to(torch.float64).sort().values  # (M,)
    m = x.numel()
    if m < n:
        raise ValueError(f"source: {m} samples cannot fill {n} levels")
    c1 = torch.cat([x.new_zeros(1), x.cumsum(0)])  # (M + 1,) prefix sums
    if init is None:
        y = x[((torch.arange(n, dtype=torch.float64) + 0.5) / n * m).long().clamp(max=m - 1)]
    else:
        y = torch.as_tensor(init, dtype=torch.float64).sort().values
    bounds_old, converged, it = None, False, 0
    for it in range(1, max_iter + 1):
        t = (y[:-1] + y[1:]) / 2  # nearest-neighbour rule
        bounds = torch.cat([x.new_zeros(1, dtype=torch.long),
                            torch.searchsorted(x, t, right=True),
                            torch.tensor([m])])  # cell i holds x[bounds[i]:bounds[i+1]]
        if bounds_old is not None and torch.equal(bounds, bounds_old):
            converged = True
            it -= 1
            break
        count = (bounds[1:] - bounds[:-1]).to(torch.float64)
        total = c1[bounds[1:]] - c1[bounds[:-1]]
        y = torch.where(count > 0, total / count.clamp(min=1), y)  # centroid rule
        bounds_old = bounds
    t = (y[:-1] + y[1:]) / 2
    idx = torch.searchsorted(t, x, right=False)
    mse = float(((x - y[idx]) ** 2).mean())
    return LloydMaxResult(t, y, mse, it, converged)


def lloyd_max(source, num_levels: int, *, init=None, max_iter: int = 20000, tol: float = 1e-12,
              tail: float = 1e-16) -> LloydMaxResult:
    r"""The N-level Lloyd-Max quantiser of a scalar source (see the module docstring).

    :param source: a scalar ``torch.distributions.Distribution`` (``log_prob``, and ``icdf`` or
        ``cdf``), or a 1-D tensor/array of samples. For a distribution the cell moments are
        integrated numerically (composite Gauss-Legendre in float64) over the range between its
        ``tail`` and ``1 - tail`` quantiles, so the source needs a finite second moment; for
        samples the iteration is 1-D k-means on them and the MSE is their mean squared error.
    :param num_levels: N, the number of reconstruction levels.
    :param init: starting levels ``(N,)`` (default: the quantiles at ``(i + 1/2) / N``).
    :param tol: stop when no level moves more than this (density sources); sample sources stop
        when the cells stop changing.
    """
    checks.positive_int(num_levels, "num_levels")
    checks.positive_int(max_iter, "max_iter")
    if init is not None and torch.as_tensor(init).numel() != num_levels:
        raise ValueError(f"init: expected {num_levels} levels, got "
                         f"{torch.as_tensor(init).numel()}")
    if isinstance(source, torch.distributions.Distribution):
        return _from_density(source, num_levels, max_iter, tol, init, tail)
    try:
        x = torch.as_tensor(np.asarray(source) if not isinstance(source, torch.Tensor)
                            else source)
    except (TypeError, ValueError):
        x = None
    if x is None or x.dim() != 1 or not (x.is_floating_point() or not x.is_complex()):
        raise TypeError(f"source: expected a scalar torch distribution or a 1-D array of "
                        f"samples, got {type(source).__name__}"
                        f"{'' if x is None else ' of shape ' + str(tuple(x.shape))}")
    if not bool(torch.isfinite(x.to(torch.float64)).all()):
        raise ValueError("source: samples must be finite")
    return _from_samples(x, num_levels, max_iter, init)
