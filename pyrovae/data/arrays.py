"""Datasets from array files (npz, npy) and from torchvision."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .dataset import Dataset, Splits, split_indices
from .images import images_to_float, train_test_splits
from .mnist import NPZ_KEYS, load_mnist


def split_arrays(x, y=None, *, name: str, valid_fraction: float = 0.1,
                 test_fraction: float = 0.1, binarize: str | None = None,
                 seed: int = 0) -> Splits:
    """Splits one array of data points (and labels) into train/validation/test by ``seed``."""
    for label, f in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0 <= f < 1:
            raise ValueError(f"{label}: expected a fraction in [0, 1), got {f!r}")
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"{name} x: expected an array of data points, got a scalar")
    n = len(x)
    if y is not None and np.asarray(y).shape != (n,):
        raise ValueError(f"{name} y: expected shape ({n},) to match x, got "
                         f"{np.asarray(y).shape}")
    n_test, n_valid = round(n * test_fraction), round(n * valid_fraction)
    if n - n_test - n_valid < 1 or n_test < 1:
        raise ValueError(f"{name}: {n} data points are too few to split into train/valid/test "
                         f"with fractions {valid_fraction}/{test_fraction}")
    test_i, valid_i, train_i = split_indices(n, (n_test, n_valid, n - n_test - n_valid), seed)

    def part(idx, label):
        return Dataset(x[idx.numpy()], None if y is None else np.asarray(y)[idx.numpy()],
                       name=f"{name}/{label}")

    return Splits(part(train_i, "train"), part(valid_i, "valid") if n_valid else None,
                  part(test_i, "test")).binarized(binarize, seed)


def load_file(path: str | os.PathLike, *, binarize: str | None = None, seed: int = 0,
              valid_size: int = 10000) -> Splits:
    """An ``.npz`` with MNIST's keys (``x_train, y_train, x_test, y_test``), an ``.npz`` with
    ``x`` (and optional ``y``), or an ``.npy`` of data points. uint8 image stacks are scaled to
    [0, 1] and given a channel dim."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data: no such file {path}")
    name = path.stem
    if path.suffix == ".npy":
        x, y = np.load(path, allow_pickle=False), None
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if set(NPZ_KEYS) <= keys:
                return load_mnist(path, valid_size=min(valid_size, len(f["x_train"]) - 1),
                                  binarize=binarize, seed=seed)
            if "x" not in keys:
                raise ValueError(f"data: {path} has keys {sorted(keys)}; expected 'x' (and "
                                 f"optional 'y') or {list(NPZ_KEYS)}")
            x, y = f["x"], (f["y"] if "y" in keys else None)
    else:
        raise ValueError(f"data: expected a .npz or .npy file, got {path.name}")
    if x.dtype == np.uint8 and x.ndim in (3, 4):
        x = images_to_float(x, f"{path.name} x")
    return split_arrays(x, y, name=name, binarize=binarize, seed=seed)


def load_torchvision(name: str, root: str | os.PathLike = "~/data", *,
                     valid_size: int = 5000, binarize: str | None = None,
                     seed: int = 0) -> Splits:
    """A torchvision image dataset already on disk (``download=False``): ``name`` is a class in
    ``torchvision.datasets`` with ``train=`` and ``.data``/``.targets`` (MNIST, FashionMNIST,
    KMNIST, CIFAR10, ...)."""
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise ImportError(
            "data 'torchvision:...' needs torchvision (pip install torchvision)") from None
    cls = getattr(tvd, name, None)
    if cls is None:
        raise ValueError(f"torchvision.datasets has no dataset {name!r}")
    root = str(Path(root).expanduser())
    parts = []
    for train in (True, False):
        ds = cls(root, train=train, download=False)
        x = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
        t = ds.targets
        y = t.numpy() if hasattr(t, "numpy") else np.asarray(t)
        parts += [images_to_float(x, f"{name} data"), y]
    return train_test_splits(*parts, name=name.lower(), valid_size=valid_size,
                             binarize=binarize, seed=seed)
