"""Figures of a latent space: traversals, KL per dimension, mutual-information and weight maps.

Traversals decode through the model program itself (the latent site conditioned on chosen
codes, the observed site's mean read off the trace), so any model/guide pair works.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from pyro import poutine

from ..infer._sites import pick_latent_site
from ..protocol import as_model, input_names
from .plots import _save, _show_grid, image_grid
from .predictive import _observed_site, latent_means


@torch.no_grad()
def decode_codes(model, batch: dict, z: torch.Tensor, *, site: str | None = None,
                 index: int = 0) -> torch.Tensor:
    """E[x | z] for codes ``z: (n, L)`` at latent ``site``, the other inputs (labels, say) taken
    from datum ``index`` of ``batch``. Returns ``(n, *event_shape)``."""
    model = as_model(model)
    names = input_names(model, batch)
    n = z.shape[0]
    kwargs = {k: batch[k][index:index + 1].expand(n, *batch[k].shape[1:]) for k in names}
    with poutine.block():
        tr = poutine.trace(model.guide).get_trace(**kwargs)
    name = pick_latent_site(tr, site, "decode_codes")
    with poutine.block():
        tr = poutine.trace(poutine.condition(model.model, data={name: z})).get_trace(**kwargs)
    return _observed_site(tr, kwargs.get("x"))["fn"].mean


@torch.no_grad()
def traverse(model, batch: dict, *, site: str | None = None, dims: Sequence[int] | None = None,
             values=None, index: int = 0) -> torch.Tensor:
    """Latent traversals: start from the posterior mean of datum ``index`` and set one
    dimension at a time to each of ``values`` (default ``linspace(-3, 3, 9)``, prior
    standard deviations). Returns ``(len(dims), len(values), *event_shape)``."""
    model = as_model(model)
    means = latent_means(model, {k: v[index:index + 1] for k, v in batch.items()})
    name = site if site is not None else next(iter(means))
    if name not in means:
        raise ValueError(f"site: {name!r} is not a latent site of the guide ({list(means)})")
    base = means[name][0]  # (L,)
    if base.dim() != 1:
        raise ValueError(f"site {name!r}: traversals need a vector latent, got event shape "
                         f"{tuple(base.shape)}")
    values = torch.linspace(-3, 3, 9) if values is None else torch.as_tensor(values).float()
    dims = list(range(base.shape[0])) if dims is None else list(dims)
    bad = [d for d in dims if not 0 <= d < base.shape[0]]
    if bad:
        raise ValueError(f"dims: {bad} are outside the latent's {base.shape[0]} dimensions")
    z = base.repeat(len(dims), len(values), 1)  # (D, V, L)
    for i, d in enumerate(dims):
        z[i, :, d] = values.to(z)
    x = decode_codes(model, batch, z.reshape(-1, base.shape[0]), site=name, index=index)
    return x.reshape(len(dims), len(values), *x.shape[1:])


def plot_traversals(model, batch: dict, path, *, site: str | None = None, dims=None,
                    values=None, index: int = 0, labels: Sequence[str] | None = None):
    """A grid of traversals: one row per latent dimension, one column per value. Rows are
    labelled with the dimension (or ``labels``), columns with the value it is set to."""
    imgs = traverse(model, batch, site=site, dims=dims, values=values, index=index)
    rows, cols = imgs.shape[:2]
    values = torch.linspace(-3, 3, 9) if values is None else torch.as_tensor(values).float()
    fig = Figure(figsize=(0.9 * cols + 1.2, 0.9 * rows + 1.0))
    ax = fig.add_subplot(1, 1, 1)
    grid = image_grid(imgs.reshape(rows * cols, *imgs.shape[2:]), ncol=cols)
    _show_grid(ax, grid, f"latent traversals from the posterior mean of data point {index}")
    ax.axis("on")
    h, w = grid.shape[0] / rows, grid.shape[1] / cols
    ax.set_yticks([h * (r + 0.5) for r in range(rows)])
    dims = list(range(rows)) if dims is None else list(dims)
    ax.set_yticklabels(labels if labels is not None else [f"z[{d}]" for d in dims])
    ax.set_xticks([w * (c + 0.5) for c in range(cols)])
    ax.set_xticklabels([f"{float(v):.2g}" for v in values], fontsize=8)
    ax.set_xlabel("value the dimension is set to (the others stay at the posterior mean)")
    ax.set_ylabel("latent dimension varied")
    return _save(fig, path)


def plot_kl_per_dimension(kl, path, *, title: str = "KL per latent dimension"):
    """Bars of the mean KL(q(z_l | x) || p(z_l)) per dimension (``kl``: ``(N, L)`` or ``(L,)``)."""
    k = kl.detach().cpu().double() if torch.is_tensor(kl) else torch.as_tensor(kl).double()
    if k.dim() == 2:
        k = k.mean(0)
    if k.dim() != 1:
        raise ValueError(f"kl: expected shape (N, L) or (L,), got {tuple(k.shape)}")
    fig = Figure(figsize=(max(3.0, 0.45 * len(k) + 1), 3))
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(np.arange(len(k)), k.numpy())
    ax.set_xticks(np.arange(len(k)))
    ax.set_xticklabels([f"z[{i}]" for i in range(len(k))], rotation=90 if len(k) > 12 else 0)
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL(q(z_l | x) || p(z_l)) (nats)")
    ax.set_title(title)
    return _save(fig, path)


def plot_matrix(matrix, path, *, row_labels=None, col_labels=None, title: str = "",
                xlabel: str = "", ylabel: str = "", vmin=None, vmax=None, fmt: str = "{:.2f}",
                cbar_label: str = ""):
    """A heat map of a 2-D array with each cell's value written in it; ``cbar_label`` names
    the quantity on the colour bar."""
    m = matrix.detach().cpu().numpy() if torch.is_tensor(matrix) else np.asarray(matrix, float)
    if m.ndim != 2:
        raise ValueError(f"matrix: expected 2 dims, got shape {m.shape}")
    fig = Figure(figsize=(0.6 * m.shape[1] + 2, 0.45 * m.shape[0] + 1.4))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(m, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    fig.colorbar(im, ax=ax, label=cbar_label)
    ax.set_xticks(np.arange(m.shape[1]))
    ax.set_yticks(np.arange(m.shape[0]))
    if col_labels is not None:
        ax.set_xticklabels(col_labels, rotation=45, ha="right")
    if row_labels is not None:
        ax.set_yticklabels(row_labels)
    hi = np.nanmax(m) if np.isfinite(m).any() else 1.0
    for (r, c), v in np.ndenumerate(m):
        if np.isfinite(v):
            ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=7,
                    color="black" if v > 0.6 * hi else "white")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _save(fig, path)


def plot_mi_matrix(normalized_mi, path, *, factor_names=None, title: str | None = None):
    """The MIG matrix: I(z_j; v_k) / H(v_k), latent dimensions by factors (``(L, K)``, as
    :func:`pyrovae.metrics.mig` returns it)."""
    m = np.asarray(normalized_mi, float)
    if m.ndim != 2:
        raise ValueError(f"normalized_mi: expected (L, K), got shape {m.shape}")
    names = list(factor_names) if factor_names is not None else [f"v{k}" for k in range(m.shape[1])]
    title = title or "normalised mutual information I(z_j; v_k) / H(v_k)"
    return plot_matrix(m, path, row_labels=[f"z[{j}]" for j in range(m.shape[0])],
                       col_labels=names, title=title,
                       xlabel="factor", ylabel="latent dimension", vmin=0.0, vmax=1.0,
                       cbar_label="I(z_j; v_k) / H(v_k)")
