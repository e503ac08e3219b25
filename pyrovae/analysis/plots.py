"""Figures a person looks at: image grids, loss curves, latent maps, and for data points that
are vectors rather than images, pair plots of samples against data and reconstructions against
inputs.

Built on ``matplotlib.figure.Figure`` directly (no pyplot), so they need no display and leave
no global figure state behind. Every panel carries a title or axis labels saying what it shows.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure


def as_images(x) -> np.ndarray:
    """``(N, C, H, W)``, ``(N, H, W)`` or ``(N, D)`` -> ``(N, H, W)`` or ``(N, H, W, 3)`` in [0, 1].

    Flat vectors show as squares when D is a square number, else as ``1 x D`` strips.
    """
    a = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, float)
    if a.ndim == 2:
        side = math.isqrt(a.shape[1])
        a = a.reshape(len(a), side, side) if side * side == a.shape[1] else a[:, None, :]
    elif a.ndim == 4:
        a = a[:, 0] if a.shape[1] == 1 else np.transpose(a[:, :3], (0, 2, 3, 1))
    elif a.ndim != 3:
        raise ValueError(f"images: expected (N, C, H, W), (N, H, W) or (N, D), got {a.shape}")
    return np.clip(a, 0.0, 1.0)


def image_grid(x, ncol: int = 8, pad: int = 1) -> np.ndarray:
    """Tiles images into one array, ``ncol`` per row, separated by ``pad`` pixels."""
    imgs = as_images(x)
    n, h, w = imgs.shape[:3]
    nrow = math.ceil(n / ncol)
    shape = (nrow * (h + pad) + pad, ncol * (w + pad) + pad) + imgs.shape[3:]
    grid = np.ones(shape, dtype=float)
    for i, im in enumerate(imgs):
        r, c = divmod(i, ncol)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h,
             pad + c * (w + pad): pad + c * (w + pad) + w] = im
    return grid


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def _show_grid(ax, grid, title):
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")


KINDS = ("auto", "images", "vectors")


def _numpy(x, name: str) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else \
        np.asarray(x, float)


def is_vector_data(x) -> bool:
    """Whether a batch ``x`` holds data points that are vectors (``(N, D)``) or scalars
    (``(N,)``) rather than images (``(N, H, W)``, ``(N, C, H, W)``): a data point with one
    axis or none has no spatial layout to draw."""
    return len(getattr(x, "shape", np.shape(x))) <= 2


def _kind(kind: str, x) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if kind == "auto":
        return "vectors" if is_vector_data(x) else "images"
    return kind


def _as_vectors(x, name: str) -> np.ndarray:
    """``(N,)`` or ``(N, D)`` -> ``(N, D)`` float array."""
    a = _numpy(x, name)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or len(a) == 0:
        raise ValueError(f"{name}: expected data points as an array (N,) or (N, D) with N >= 1, "
                         f"got shape {a.shape}")
    return a


def _dims(d: int, dims, max_dims: int) -> list[int]:
    if dims is None:
        return list(range(min(d, max_dims)))
    dims = [int(i) for i in dims]
    bad = [i for i in dims if not 0 <= i < d]
    if not dims or bad:
        raise ValueError(f"dims: expected dimensions in 0..{d - 1}, got {dims}")
    return dims


def plot_vector_samples(samples, path, data=None, *, dims=None, max_dims: int = 4,
                        title: str = "samples from the model") -> Path:
    r"""Pair plot of samples that are vectors, ``(N, D)``, against data ``(M, D)`` when given.

    For the first ``max_dims`` dimensions (or ``dims``): below and above the diagonal a scatter
    of dimension j (x axis) against dimension i (y axis), on the diagonal a histogram of
    dimension i, samples in colour over the data in grey. A model that fits puts its samples
    where the data lie, in every marginal and every pair. With one dimension the figure is the
    histogram alone."""
    s = _as_vectors(samples, "samples")
    x = None if data is None else _as_vectors(data, "data")
    if x is not None and x.shape[1] != s.shape[1]:
        raise ValueError(f"data: expected {s.shape[1]} dimensions like the samples, got "
                         f"{x.shape[1]}")
    dims = _dims(s.shape[1], dims, max_dims)
    k = len(dims)
    fig = Figure(figsize=(2.4 * k + 0.6, 2.2 * k + 0.8), layout="constrained")
    for r, i in enumerate(dims):
        for c, j in enumerate(dims):
            ax = fig.add_subplot(k, k, r * k + c + 1)
            if i == j:
                both = s[:, i] if x is None else np.concatenate([s[:, i], x[:, i]])
                bins = np.histogram_bin_edges(both[np.isfinite(both)], bins=20)
                if x is not None:
                    ax.hist(x[:, i], bins=bins, density=True, color="0.6", alpha=0.7,
                            label=f"data (n={len(x)})")
                ax.hist(s[:, i], bins=bins, density=True, color="C1", alpha=0.55,
                        label=f"samples (n={len(s)})")
                ax.set_xlabel(f"x[{i}]")
                ax.set_ylabel("density")
            else:
                if x is not None:
                    ax.scatter(x[:, j], x[:, i], s=4, color="0.6", label=f"data (n={len(x)})")
                ax.scatter(s[:, j], s[:, i], s=4, color="C1", alpha=0.7,
                           label=f"samples (n={len(s)})")
                ax.set_xlabel(f"x[{j}]")
                ax.set_ylabel(f"x[{i}]")
            ax.tick_params(labelsize="x-small")
            if r == 0 and c == 0:
                ax.legend(fontsize="x-small")
    shown = f"dimensions {dims} of {s.shape[1]}" if k < s.shape[1] else \
        f"all {s.shape[1]} dimension{'s' if k > 1 else ''}"
    fig.suptitle(f"{title} ({shown})", fontsize="medium")
    return _save(fig, path)


def plot_vector_reconstructions(x, x_rec, path, *, dims=None, max_dims: int = 6) -> Path:
    r"""Reconstructions of data points that are vectors: one panel per dimension d (the first
    ``max_dims``, or ``dims``), the input's x[d] (x axis) against its reconstruction (y axis),
    with the identity line a perfect reconstruction lies on."""
    a, b = _as_vectors(x, "x"), _as_vectors(x_rec, "x_rec")
    if a.shape != b.shape:
        raise ValueError(f"x_rec: expected shape {a.shape} like x, got {b.shape}")
    dims = _dims(a.shape[1], dims, max_dims)
    ncol = min(len(dims), 3)
    nrow = math.ceil(len(dims) / ncol)
    fig = Figure(figsize=(3.0 * ncol + 0.4, 2.8 * nrow + 0.6), layout="constrained")
    for p, d in enumerate(dims):
        ax = fig.add_subplot(nrow, ncol, p + 1)
        ax.scatter(a[:, d], b[:, d], s=6, color="C0")
        finite = np.concatenate([a[:, d], b[:, d]])
        finite = finite[np.isfinite(finite)]
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8, ls="--", label="reconstruction = input")
        ax.set_xlabel(f"input x[{d}]")
        ax.set_ylabel(f"reconstruction of x[{d}]")
        ax.tick_params(labelsize="x-small")
        if p == 0:
            ax.legend(fontsize="x-small")
    shown = f"dimensions {dims} of {a.shape[1]}" if len(dims) < a.shape[1] else \
        f"all {a.shape[1]} dimension{'s' if len(dims) > 1 else ''}"
    fig.suptitle(f"reconstructions against inputs, {len(a)} data points ({shown})",
                 fontsize="medium")
    return _save(fig, path)


def plot_reconstructions(x, x_rec, path, n: int = 32, ncol: int = 8, *,
                         kind: str = "auto") -> Path:
    """Inputs beside their reconstructions.

    ``kind="images"``: the first ``n`` inputs (left) and their reconstructions (right) as image
    grids in the same positions; ``kind="vectors"``: :func:`plot_vector_reconstructions` of
    every data point; ``"auto"`` (default) picks vectors for ``(N, D)`` or ``(N,)`` batches."""
    if _kind(kind, x) == "vectors":
        return plot_vector_reconstructions(x, x_rec, path)
    n = min(n, len(x))
    fig = Figure(figsize=(8, 4.4))
    for i, (imgs, title) in enumerate(((x[:n], f"inputs (first {n})"),
                                       (x_rec[:n], "their reconstructions, same positions"))):
        _show_grid(fig.add_subplot(1, 2, i + 1), image_grid(imgs, ncol), title)
    return _save(fig, path)


def plot_samples(samples, path, ncol: int = 8, title: str = "samples from the model", *,
                 data=None, kind: str = "auto", row_labels=None) -> Path:
    """Samples from a model: an image grid (``kind="images"``, ``ncol`` per row, each row
    named by ``row_labels`` when given) or, for samples that are vectors
    (``kind="vectors"``), :func:`plot_vector_samples` against ``data`` when given; ``"auto"``
    (default) picks vectors for ``(N, D)`` or ``(N,)`` samples."""
    if _kind(kind, samples) == "vectors":
        return plot_vector_samples(samples, path, data, title=title)
    n = len(samples)
    rows = math.ceil(n / ncol)
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"row_labels: expected {rows} labels (one per row of {ncol}), got "
                         f"{len(row_labels)}")
    width = 4.4 + (1.8 if row_labels is not None else 0.0)
    fig = Figure(figsize=(width, 4.4 * rows / ncol + 0.4))
    ax = fig.add_subplot(1, 1, 1)
    grid = image_grid(samples, ncol)
    _show_grid(ax, grid, f"{title} ({n} images)")
    if row_labels is not None:
        ax.axis("on")
        for side in ax.spines.values():
            side.set_visible(False)
        h = grid.shape[0] / rows
        ax.set_yticks([h * (r + 0.5) for r in range(rows)])
        ax.set_yticklabels(list(row_labels), fontsize=8)
        ax.set_xticks([])
    return _save(fig, path)


def plot_history(history, path) -> Path:
    """Loss per epoch (train and validation) and, beside it, the ELBO's terms."""
    epochs = [r["epoch"] for r in history.epochs]
    fig = Figure(figsize=(9, 3.4))
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(epochs, history.series("loss"), label="train (-ELBO)")
    if any("valid_loss" in r for r in history.epochs):
        ax.plot(epochs, history.series("valid_loss"), label="validation (-ELBO)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per data point")
    ax.legend()
    ax.set_title("loss")
    ax2 = fig.add_subplot(1, 2, 2)
    for key, label in (("recon", "reconstruction -log p(x|z)"), ("kl", "KL(q(z|x) || p(z))")):
        for prefix, style in (("", "-"), ("valid_", "--")):
            pts = [(r["epoch"], r[prefix + key]) for r in history.epochs if prefix + key in r]
            if pts:
                which = "validation" if prefix else "train"
                ax2.plot(*zip(*pts), style, label=f"{label} ({which})")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("nats per data point")
    ax2.legend(fontsize="small")
    ax2.set_title("ELBO terms")
    return _save(fig, path)


def plot_latent(z, labels, path, title: str = "latent means") -> Path:
    """Codes ``(N, L)`` as a 2-D scatter coloured by label (first two principal components
    when L > 2)."""
    z = z.detach().cpu().reshape(len(z), -1).numpy() if isinstance(z, torch.Tensor) else \
        np.asarray(z, float).reshape(len(z), -1)
    xlabel, ylabel, z_dim = "z[0]", "z[1]", z.shape[1]
    if z.shape[1] > 2:
        from sklearn.decomposition import PCA

        z = PCA(2).fit_transform(z)
        xlabel, ylabel = (f"principal component {i} of the {z_dim}-d codes" for i in (1, 2))
    elif z.shape[1] == 1:
        z = np.concatenate([z, np.zeros_like(z)], 1)
        ylabel = "(none: a 1-d code)"
    fig = Figure(figsize=(5, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    if labels is None:
        ax.scatter(z[:, 0], z[:, 1], s=6)
    else:
        sc = ax.scatter(z[:, 0], z[:, 1], c=np.asarray(labels), cmap="tab10", s=6)
        fig.colorbar(sc, ax=ax, label="label y of the data point")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)
