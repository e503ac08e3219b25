"""Turning image arrays of the usual layouts into float tensors ``(N, C, H, W)`` in [0, 1]."""

from __future__ import annotations

import numpy as np

from .dataset import Dataset, Splits, split_indices


def images_to_float(x: np.ndarray, name: str) -> np.ndarray:
    """``(N, H, W)`` or ``(N, H, W, C)`` (C in 1, 3, 4) or ``(N, C, H, W)`` -> float32
    ``(N, C, H, W)``; uint8 pixels are divided by 255."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = np.transpose(x, (0, 3, 1, 2))
    elif x.ndim != 4:
        raise ValueError(f"{name}: expected images (N, H, W) or (N, C, H, W), got {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    return x.astype(np.float32)


def train_test_splits(x_train, y_train, x_test, y_test, *, name: str, valid_size: int,
                      binarize: str | None, seed: int) -> Splits:
    """Holds out ``valid_size`` training points (chosen by ``seed``) for validation, then
    binarises (:meth:`Splits.binarized`)."""
    n = len(x_train)
    if not 0 <= valid_size < n:
        raise ValueError(f"valid_size: expected 0 <= valid_size < {n} (training points), "
                         f"got {valid_size}")
    valid_idx, train_idx = split_indices(n, (valid_size, n - valid_size), seed)

    def part(x, y, idx, label):
        if idx is not None:
            x, y = x[idx.numpy()], (None if y is None else np.asarray(y)[idx.numpy()])
        return Dataset(x, y, name=f"{name}/{label}")

    return Splits(part(x_train, y_train, train_idx, "train"),
                  part(x_train, y_train, valid_idx, "valid") if valid_size else None,
                  part(x_test, y_test, None, "test")).binarized(binarize, seed)
