"""Synthetic grouped data with a known latent-to-group pattern, for oi-VAE and group factor
analysis: each group of observed variables is a fixed random nonlinear function of its own
subset of independent latent factors."""

from __future__ import annotations

import numpy as np

from .. import checks

# group -> the factors it depends on: two groups per factor alone, two shared pairs
DEFAULT_DEPENDENCIES = ((0,), (1,), (0, 1), (2,), (3,), (2, 3))


def grouped_factors(n: int = 4000, *, dependencies=DEFAULT_DEPENDENCIES, group_size: int = 5,
                    hidden: int = 8, noise: float = 0.1, seed: int = 0) -> dict:
    """``n`` draws of ``x = [x^(1), ..., x^(G)]`` with ``x^(g) = B_g tanh(A_g f_S(g) + c_g) +
    noise * e``: ``f ~ N(0, I)`` the factors, ``S(g) = dependencies[g]``, ``A_g, B_g, c_g``
    fixed by ``seed``, ``e`` standard normal.

    Returns ``{"x": (n, G * group_size) float32, "factors": (n, F), "group_sizes": tuple,
    "pattern": (G, F) bool}`` where ``pattern[g, k]`` says whether group g depends on factor k.
    """
    checks.positive_int(n, "n")
    deps = [tuple(int(k) for k in d) for d in dependencies]
    if not deps or any(not d or min(d) < 0 for d in deps):
        raise ValueError(f"dependencies: expected non-empty tuples of factor indices >= 0, got "
                         f"{dependencies!r}")
    if not noise >= 0:
        raise ValueError(f"noise: expected a number >= 0, got {noise!r}")
    n_factors = max(max(d) for d in deps) + 1
    rng = np.random.default_rng(seed)
    # the group functions first, so that they do not depend on n
    funcs = []
    for d in deps:
        a = rng.standard_normal((hidden, len(d))) * 1.5  # (hidden, |S|)
        c = rng.standard_normal(hidden) * 0.5
        b = rng.standard_normal((group_size, hidden)) / np.sqrt(hidden)
        funcs.append((a, c, b))
    f = rng.standard_normal((n, n_factors))
    parts = []
    pattern = np.zeros((len(deps), n_factors), dtype=bool)
    for g, (d, (a, c, b)) in enumerate(zip(deps, funcs)):
        pattern[g, list(d)] = True
        h = np.tanh(f[:, list(d)] @ a.T + c)  # (n, hidden)
        parts.append(h @ b.T + noise * rng.standard_normal((n, group_size)))
    x = np.concatenate(parts, axis=1).astype(np.float32)
    return {"x": x, "factors": f.astype(np.float32),
            "group_sizes": (group_size,) * len(deps), "pattern": pattern}
