"""In-memory datasets that batch by tensor indexing.

Per-item ``DataLoader`` collation costs more than a whole MLP step at the batch sizes VAEs use,
so a :class:`Dataset` keeps ``x`` as one tensor (moved to the training device once) and a batch
is ``x[index]``. Batches are dicts keyed by the names model and guide take as arguments
(``x``, ``y``, ``index``): a model that declares ``y`` gets labels, one that does not, doesn't.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

BINARIZE = (None, "dynamic", "fixed", "threshold")


def _to_tensor(a, name: str, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        t = a.detach()
    else:
        try:
            arr = np.asarray(a)
        except Exception as e:  # ragged lists and the like
            raise ValueError(
                f"{name}: expected an array or tensor, got {type(a).__name__}: {e}") from None
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        ):
            raise ValueError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
        t = torch.as_tensor(arr)
    if t.is_complex():
        raise ValueError(f"{name}: expected real numbers, got dtype {t.dtype}")
    return t.to(dtype)


class Dataset:
    """Data points ``x: (N, *event_shape)`` (float32; ``(N,)`` for scalar data) with optional
    labels ``y: (N,)`` (int64).

    ``binarize``:

    - ``None``: ``x`` is used as given.
    - ``"dynamic"``: ``x`` holds probabilities in [0, 1]; every batch draws fresh
      ``x_b ~ Bernoulli(x)``, so each epoch sees a new binarisation (Salakhutdinov and Murray
      2008; the protocol of Burda et al. 2016).
    - ``"fixed"``: one draw ``x ~ Bernoulli(x)`` made here with ``seed``, then kept.
    - ``"threshold"``: ``x > 0.5``.
    """

    def __init__(self, x, y=None, *, binarize: str | None = None, seed: int = 0,
                 name: str = "data"):
        if binarize not in BINARIZE:
            raise ValueError(f"binarize: expected one of {BINARIZE}, got {binarize!r}")
        x = _to_tensor(x, f"{name} x", torch.float32)
        if x.dim() < 1:
            raise ValueError(f"{name} x: expected shape (N, *event_shape), got a scalar")
        if x.shape[0] == 0:
            raise ValueError(f"{name} x: the dataset is empty (shape {tuple(x.shape)})")
        if x[0].numel() == 0:
            raise ValueError(f"{name} x: each data point is empty (shape {tuple(x.shape)})")
        if not bool(torch.isfinite(x).all()):
            n_bad = int((~torch.isfinite(x)).sum())
            raise ValueError(f"{name} x: expected finite values, found {n_bad} NaN/Inf")
        if binarize in ("dynamic", "fixed") and (x.min() < 0 or x.max() > 1):
            raise ValueError(
                f"{name} x: binarize={binarize!r} treats x as Bernoulli probabilities and needs "
                f"values in [0, 1], got range [{x.min().item():g}, {x.max().item():g}]"
            )
        if y is not None:
            y = _to_tensor(y, f"{name} y", torch.int64)
            if y.shape != (x.shape[0],):
                raise ValueError(
                    f"{name} y: expected shape ({x.shape[0]},) to match x, got {tuple(y.shape)}"
                )
        if binarize == "fixed":
            gen = torch.Generator(device=x.device).manual_seed(seed)
            x = torch.bernoulli(x, generator=gen)
        elif binarize == "threshold":
            x = (x > 0.5).to(x.dtype)
        self.x, self.y, self.name = x, y, name
        self.binarize = "dynamic" if binarize == "dynamic" else None

    def __len__(self) -> int:
        return self.x.shape[0]

    def __repr__(self) -> str:
        labels = "" if self.y is None else ", labelled"
        mode = f", binarize={self.binarize!r}" if self.binarize else ""
        return (f"Dataset({self.name!r}, n={len(self)}, event_shape={self.event_shape}"
                f"{labels}{mode})")

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def _new(self, x, y, binarize) -> Dataset:
        out = object.__new__(Dataset)
        out.x, out.y, out.name, out.binarize = x, y, self.name, binarize
        return out

    def to(self, device) -> Dataset:
        """A copy on ``device`` (the same object if already there)."""
        device = torch.device(device)
        if self.x.device == device:
            return self
        y = None if self.y is None else self.y.to(device)
        return self._new(self.x.to(device), y, self.binarize)

    def subset(self, index) -> Dataset:
        index = torch.as_tensor(index, dtype=torch.long, device=self.x.device)
        y = None if self.y is None else self.y[index]
        return self._new(self.x[index], y, self.binarize)

    def frozen(self, seed: int = 0) -> Dataset:
        """Dynamic binarisation replaced by one fixed draw (for deterministic evaluation)."""
        if self.binarize != "dynamic":
            return self
        gen = torch.Generator(device=self.x.device).manual_seed(seed)
        return self._new(torch.bernoulli(self.x, generator=gen), self.y, None)

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """The batch at ``index`` as ``{"x": (B, *event), "y": (B,), "index": (B,)}``."""
        x = self.x[index]
        if self.binarize == "dynamic":
            x = torch.bernoulli(x, generator=generator)
        out = {"x": x, "index": index}
        if self.y is not None:
            out["y"] = self.y[index]
        return out

    def batches(self, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False
                ) -> Iterator[dict]:
        """Iterates over the data in batches (the last one smaller unless ``drop_last``)."""
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=generator, device=self.x.device)
        else:
            order = torch.arange(n, device=self.x.device)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield self.batch(order[start:start + batch_size], generator)


@dataclass
class Splits:
    """Train, validation and test datasets (``valid`` may be ``None``)."""

    train: Dataset
    valid: Dataset | None
    test: Dataset

    def __iter__(self):
        return iter((self.train, self.valid, self.test))

    def binarized(self, mode: str | None, seed: int = 0) -> Splits:
        """The splits binarised by ``mode`` (see :class:`Dataset`). Under ``"dynamic"`` only the
        training split is resampled per batch; validation and test are binarised once, with
        their own fixed seeds, so evaluations repeat exactly."""
        if mode not in BINARIZE:
            raise ValueError(f"binarize: expected one of {BINARIZE}, got {mode!r}")
        held = "fixed" if mode == "dynamic" else mode

        def redo(ds, m, s):
            return None if ds is None else Dataset(ds.x, ds.y, binarize=m, seed=s, name=ds.name)

        return Splits(redo(self.train, mode, seed), redo(self.valid, held, seed + 1),
                      redo(self.test, held, seed + 2))


def split_indices(n: int, sizes: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    """Disjoint index sets of the given ``sizes`` from a permutation of ``range(n)`` fixed by
    ``seed`` (the same on every machine and torch version: NumPy's PCG64)."""
    if sum(sizes) > n:
        raise ValueError(f"split sizes {sizes} add up to more than the {n} data points")
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    out, start = [], 0
    for s in sizes:
        out.append(perm[start:start + s])
        start += s
    return out


def as_dataset(data, *, name: str = "data", binarize: str | None = None) -> Dataset:
    """Accepts a :class:`Dataset`, a tensor or array ``x``, a tuple ``(x, y)``, a
    ``torch.utils.data.TensorDataset`` or a map-style torch dataset of ``x`` or ``(x, y)`` items."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return Dataset(data, binarize=binarize, name=name)
    if isinstance(data, tuple) and len(data) == 2:
        return Dataset(data[0], data[1], binarize=binarize, name=name)
    if isinstance(data, torch.utils.data.TensorDataset):
        return Dataset(*data.tensors[:2], binarize=binarize, name=name)
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        items = [data[i] for i in range(len(data))]
        if items and isinstance(items[0], (tuple, list)):
            xs = torch.stack([torch.as_tensor(it[0]) for it in items])
            ys = torch.as_tensor([int(it[1]) for it in items]) if len(items[0]) > 1 else None
            return Dataset(xs, ys, binarize=binarize, name=name)
        return Dataset(torch.stack([torch.as_tensor(it) for it in items]),
                       binarize=binarize, name=name)
    raise TypeError(
        f"{name}: expected a pyrovae Dataset, a tensor or array, an (x, y) tuple or a map-style "
        f"torch Dataset, got {type(data).__name__}"
    )
