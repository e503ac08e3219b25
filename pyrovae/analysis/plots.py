"""Figures a person looks at: image grids, loss curves, latent maps.

Built on ``matplotlib.figure.Figure`` directly (no pyplot), so they need no display and leave
no global figure state behind.
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


def plot_reconstructions(x, x_rec, path, n: int = 32, ncol: int = 8) -> Path:
    """Inputs (left) beside their reconstructions (right)."""
    n = min(n, len(x))
    fig = Figure(figsize=(8, 4.4))
    for i, (imgs, title) in enumerate(((x[:n], "inputs"), (x_rec[:n], "reconstructions"))):
        _show_grid(fig.add_subplot(1, 2, i + 1), image_grid(imgs, ncol), title)
    return _save(fig, path)


def plot_samples(samples, path, ncol: int = 8, title: str = "samples from the model") -> Path:
    fig = Figure(figsize=(4.4, 4.4 * math.ceil(len(samples) / ncol) / ncol + 0.4))
    _show_grid(fig.add_subplot(1, 1, 1), image_grid(samples, ncol), title)
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
    z = z.detach().cpu().reshape(len(z), -1).numpy() if isinstance(z, torch.Tensor) else z
    xlabel, ylabel = "z[0]", "z[1]"
    if z.shape[1] > 2:
        from sklearn.decomposition import PCA

        z = PCA(2).fit_transform(z)
        xlabel, ylabel = "PC 1", "PC 2"
    elif z.shape[1] == 1:
        z = np.concatenate([z, np.zeros_like(z)], 1)
    fig = Figure(figsize=(5, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    if labels is None:
        ax.scatter(z[:, 0], z[:, 1], s=6)
    else:
        sc = ax.scatter(z[:, 0], z[:, 1], c=np.asarray(labels), cmap="tab10", s=6)
        fig.colorbar(sc, ax=ax, label="label")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)
