"""dSprites (Matthey et al. 2017): 64x64 binary images of one sprite each, generated from five
independent factors on a grid.

======== ====== =========================================================
factor   values grid
======== ====== =========================================================
shape    3      square, ellipse, heart
scale    6      ``linspace(0.5, 1, 6)``
orient.  40     ``linspace(0, 2*pi, 40)`` (0 and 2*pi both present, as in the release)
posX     32     ``linspace(0, 1, 32)``
posY     32     ``linspace(0, 1, 32)``
======== ====== =========================================================

737,280 images in all. The official release orders them with posY fastest and shape slowest
(the colour factor, always 0, comes first), so image ``i`` has factor classes given by the
mixed-radix digits of ``i`` in bases ``(3, 6, 40, 32, 32)``.

:class:`DSprites` renders any subset on demand, deterministically, without building the whole
set: each pixel centre is mapped into the sprite's frame (translate, rotate, scale) and tested
against the shape's implicit inequality. The pictures are close to the release's but not
pixel-identical (the release was drawn by another rasteriser). :class:`DSpritesNPZ` reads the
official ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` for users who have it. Both expose
the same *factor data* interface the disentanglement metrics take: ``factor_sizes``,
``factor_names``, ``sample_factors(n, generator)`` and ``images(factors)``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from .. import checks
from .dataset import Dataset, Splits, split_indices

FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
NUM_IMAGES = math.prod(FACTOR_SIZES)  # 737,280
SIDE = 64
# Strides of the release's ordering (posY fastest): index = sum(factor * stride).
_STRIDES = tuple(math.prod(FACTOR_SIZES[i + 1:]) for i in range(len(FACTOR_SIZES)))

# Geometry of the rendering, in pixels: a sprite at scale 1 has "radius" R; pos 0..1 moves its
# centre from MARGIN to SIDE - MARGIN, so the largest sprite at any angle stays in the frame.
_RADIUS = 12.0
_MARGIN = 15.5


def factor_values(factors: torch.Tensor) -> torch.Tensor:
    """Factor classes ``(n, 5)`` -> the release's ``latents_values`` (without colour), float64:
    shape 1..3, scale in [0.5, 1], orientation in [0, 2 pi], positions in [0, 1]."""
    f = _check_factors(factors)
    out = torch.empty(f.shape, dtype=torch.float64)
    out[:, 0] = f[:, 0].double() + 1
    out[:, 1] = 0.5 + 0.1 * f[:, 1].double()
    out[:, 2] = f[:, 2].double() * (2 * math.pi / 39)
    out[:, 3] = f[:, 3].double() / 31
    out[:, 4] = f[:, 4].double() / 31
    return out


def _check_factors(factors) -> torch.Tensor:
    f = torch.as_tensor(factors)
    if f.dtype.is_floating_point or f.dtype == torch.bool:
        raise TypeError(f"factors: expected integer factor classes, got dtype {f.dtype}")
    f = f.long()
    if f.dim() != 2 or f.shape[1] != len(FACTOR_SIZES):
        raise ValueError(f"factors: expected shape (n, {len(FACTOR_SIZES)}) of classes "
                         f"{FACTOR_NAMES}, got {tuple(f.shape)}")
    sizes = torch.tensor(FACTOR_SIZES)
    bad = (f < 0) | (f >= sizes)
    if bool(bad.any()):
        row, col = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"factors: {FACTOR_NAMES[col]} must be in [0, {FACTOR_SIZES[col]}), "
                         f"got {int(f[row, col])} (row {row})")
    return f


def _check_index(index) -> torch.Tensor:
    i = torch.as_tensor(index)
    if i.dtype.is_floating_point or i.dtype == torch.bool:
        raise TypeError(f"index: expected integer image indices, got dtype {i.dtype}")
    i = i.long().reshape(-1)
    if i.numel() and (int(i.min()) < 0 or int(i.max()) >= NUM_IMAGES):
        raise ValueError(f"index: expected values in [0, {NUM_IMAGES}), got range "
                         f"[{int(i.min())}, {int(i.max())}]")
    return i


def index_to_factors(index) -> torch.Tensor:
    """Image indices ``(n,)`` in the release's order -> factor classes ``(n, 5)``."""
    i = _check_index(index)
    return torch.stack([(i // s) % n for s, n in zip(_STRIDES, FACTOR_SIZES)], dim=1)


def factors_to_index(factors) -> torch.Tensor:
    """Factor classes ``(n, 5)`` -> image indices ``(n,)`` in the release's order."""
    f = _check_factors(factors)
    return (f * torch.tensor(_STRIDES)).sum(1)


def _inside(shape: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Whether the point ``(u, v)`` of the sprite's frame (radius 1) lies in the shape.

    ``shape: (n, 1, 1)``, ``u, v: (n, H, W)``; v points up.
    """
    square = torch.maximum(u.abs(), v.abs()) <= 0.8
    ellipse = (u / 1.0) ** 2 + (v / 0.5) ** 2 <= 1.0
    # Heart: (a^2 + b^2 - 1)^3 - a^2 b^3 <= 0, a curve of width 2.28 and height 2.25 centred
    # near b = 0.125; scaled by 1.15 so it spans about the same area as the other two.
    a, b = 1.15 * u, 1.15 * v + 0.125
    heart = (a * a + b * b - 1) ** 3 - a * a * b ** 3 <= 0
    return torch.where(shape == 0, square, torch.where(shape == 1, ellipse, heart))


def render(factors, *, chunk: int = 2048) -> torch.Tensor:
    """Images ``(n, 1, 64, 64)`` (float32 in {0, 1}) of the sprites with these factor classes.

    A pixel is on when its centre lies in the sprite: the centre ``p`` maps to the sprite frame
    by ``R(-theta) (p - c) / (R * scale)`` with ``c`` the position (x to the right, y down the
    rows, as in the release) and ``R = 12`` px.
    """
    f = _check_factors(factors)
    vals = factor_values(f).float()
    grid = torch.arange(SIDE, dtype=torch.float32) + 0.5  # pixel centres
    py, px = grid[:, None], grid[None, :]  # rows (y), columns (x)
    out = torch.empty(len(f), 1, SIDE, SIDE)
    span = SIDE - 2 * _MARGIN
    for start in range(0, len(f), chunk):
        v = vals[start:start + chunk]
        shape = f[start:start + chunk, 0].view(-1, 1, 1)
        scale = v[:, 1].view(-1, 1, 1) * _RADIUS
        theta = v[:, 2].view(-1, 1, 1)
        cx = _MARGIN + span * v[:, 3].view(-1, 1, 1)
        cy = _MARGIN + span * v[:, 4].view(-1, 1, 1)
        dx, dy = px - cx, -(py - cy)  # (n, H, W) each, dy pointing up
        cos, sin = torch.cos(theta), torch.sin(theta)
        u = (cos * dx + sin * dy) / scale  # rotate by -theta
        w = (-sin * dx + cos * dy) / scale
        out[start:start + chunk, 0] = _inside(shape, u, w).float()
    return out


class DSprites:
    """Procedural dSprites: any subset of the 737,280 images, rendered on demand.

    >>> ds = DSprites()
    >>> f = ds.sample_factors(1000, torch.Generator().manual_seed(0))  # (1000, 5) classes
    >>> x = ds.images(f)  # (1000, 1, 64, 64) in {0, 1}
    """

    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES
    num_images = NUM_IMAGES

    def images(self, factors) -> torch.Tensor:
        """Images ``(n, 1, 64, 64)`` for factor classes ``(n, 5)``."""
        return render(factors)

    def images_at(self, index) -> torch.Tensor:
        """Images at release indices ``(n,)``."""
        return self.images(index_to_factors(index))

    def sample_factors(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` factor vectors drawn uniformly from the grid (independent factors)."""
        checks.positive_int(n, "n")
        cols = [torch.randint(k, (n,), generator=generator) for k in FACTOR_SIZES]
        return torch.stack(cols, dim=1)

    def subset(self, n: int | None = None, *, seed: int = 0, index=None):
        """``(images, factors)`` of ``n`` distinct images drawn without replacement by ``seed``
        (all of them in order when ``n`` is None: 737,280 x 4,096 floats, about 12 GB), or of the
        given release ``index``."""
        if index is None:
            if n is None:
                index = torch.arange(NUM_IMAGES)
            else:
                checks.int_in(n, "n", 1, NUM_IMAGES)
                rng = np.random.default_rng(seed)
                index = torch.from_numpy(np.sort(rng.choice(NUM_IMAGES, n, replace=False)))
        index = _check_index(index)
        return self.images_at(index), index_to_factors(index)


class DSpritesNPZ(DSprites):
    """The official release file (``imgs``, ``latents_classes``, ``latents_values`` keys; the
    ``metadata`` entry is a pickle and is not read). Images are loaded on first use (about 3 GB
    as uint8)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"dsprites: no such file {self.path}")
        with np.load(self.path, allow_pickle=False) as f:
            missing = [k for k in ("imgs", "latents_classes") if k not in f.files]
            if missing:
                raise ValueError(f"dsprites: {self.path} has keys {sorted(f.files)}, lacks "
                                 f"{missing} (expected the official dSprites npz layout)")
        self._imgs = None

    @classmethod
    def from_arrays(cls, imgs, latents_classes) -> DSpritesNPZ:
        """The release's arrays already in memory (or memory-mapped): ``imgs (737280, 64, 64)``
        and ``latents_classes (737280, 6)``; their layout is checked as for a file."""
        out = object.__new__(cls)
        out.path = None
        out._imgs = _check_layout(imgs, latents_classes, "dsprites arrays")
        return out

    def _load(self) -> np.ndarray:
        if self._imgs is None:
            with np.load(self.path, allow_pickle=False) as f:
                self._imgs = _check_layout(f["imgs"], f["latents_classes"], str(self.path))
        return self._imgs

    def images(self, factors) -> torch.Tensor:
        idx = factors_to_index(factors).numpy()
        imgs = self._load()[idx]  # (n, 64, 64) uint8 in {0, 1}
        return torch.from_numpy(imgs.astype(np.float32))[:, None]


def _check_layout(imgs, classes, where: str):
    if imgs.ndim != 3 or imgs.shape[1:] != (SIDE, SIDE) or classes.ndim != 2 \
            or classes.shape[1] != len(FACTOR_SIZES) + 1:
        raise ValueError(f"dsprites: {where}: imgs {imgs.shape}, latents_classes "
                         f"{classes.shape}; expected (N, 64, 64) and (N, 6) (colour first)")
    n = len(imgs)
    if n != NUM_IMAGES or len(classes) != n:
        raise ValueError(f"dsprites: {where} holds {n} images and {len(classes)} label rows; "
                         f"the release has {NUM_IMAGES}")
    # Rows must be in the release's order (posY fastest); check a spread of rows.
    probe = np.linspace(0, n - 1, 97).astype(np.int64)
    expected = index_to_factors(torch.from_numpy(probe)).numpy()
    if not np.array_equal(np.asarray(classes[probe, 1:]), expected):
        raise ValueError(f"dsprites: {where}: latents_classes are not in the release's order "
                         f"(shape, scale, orientation, posX, posY with posY fastest)")
    return imgs


def load_dsprites(n: int = 50000, *, path: str | os.PathLike | None = None, seed: int = 0,
                  valid_fraction: float = 0.05, test_fraction: float = 0.05,
                  binarize: str | None = None) -> Splits:
    """``n`` dSprites images (procedural, or from the official ``path``) as :class:`Splits`,
    labelled by shape (0 square, 1 ellipse, 2 heart); the subset and split are fixed by
    ``seed``. The images are already binary, so ``binarize`` is accepted and has no effect."""
    source = DSprites() if path is None else DSpritesNPZ(path)
    x, f = source.subset(n, seed=seed)
    n_test, n_valid = round(n * test_fraction), round(n * valid_fraction)
    if n - n_test - n_valid < 1 or n_test < 1:
        raise ValueError(f"n: {n} images are too few to split with fractions "
                         f"{valid_fraction}/{test_fraction}")
    test_i, valid_i, train_i = split_indices(n, (n_test, n_valid, n - n_test - n_valid), seed)

    def part(idx, label):
        return Dataset(x[idx], f[idx, 0], name=f"dsprites/{label}")

    return Splits(part(train_i, "train"), part(valid_i, "valid") if n_valid else None,
                  part(test_i, "test"))
