"""MNIST the ways users have it: the four IDX files (LeCun et al.; gzipped or not, also in
torchvision's ``MNIST/raw`` folder) or an npz with keys ``x_train, y_train, x_test, y_test``.
The same IDX layout serves Fashion-MNIST and KMNIST."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from .dataset import Splits
from .images import images_to_float, train_test_splits

# IDX type codes (third byte of the magic number) -> big-endian NumPy dtypes
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
NPZ_KEYS = tuple(_IDX_NAMES)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (optionally gzip-compressed, detected from its first bytes).

    Layout: two zero bytes, a type code, the number of dims ``d``, then ``d`` big-endian uint32
    sizes and the data in row-major order.
    """
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt gzip data ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4].hex() or 'missing'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dims)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: IDX header says shape {shape} ({expected} bytes), file has {len(raw)} bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # native byte order, writable copy


def _find_idx(folder: Path, stem: str) -> Path | None:
    for sub in ("", "raw", "MNIST/raw"):
        for ext in ("", ".gz"):
            for s in (stem, stem.replace("-idx", ".idx")):  # some mirrors use dots
                p = folder / sub / (s + ext)
                if p.is_file():
                    return p
    return None


def load_mnist_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{"x_train", "y_train", "x_test", "y_test"}`` from an IDX folder or an npz file."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = {k: _find_idx(path, stem) for k, stem in _IDX_NAMES.items()}
        missing = [_IDX_NAMES[k] for k, p in found.items() if p is None]
        if missing:
            raise FileNotFoundError(
                f"mnist: {path} lacks the IDX file(s) {missing} (looked for each with and "
                f"without .gz, also under raw/ and MNIST/raw/)"
            )
        return {k: read_idx(p) for k, p in found.items()}
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in NPZ_KEYS if k not in f.files]
            if missing:
                raise ValueError(f"mnist: {path} has keys {sorted(f.files)}, lacks {missing}")
            return {k: f[k] for k in NPZ_KEYS}
    raise FileNotFoundError(f"mnist: no such file or folder {path}")


def load_mnist(path: str | os.PathLike, *, valid_size: int = 10000,
               binarize: str | None = None, seed: int = 0) -> Splits:
    """MNIST as :class:`Splits` of ``(N, 1, 28, 28)`` pixels in [0, 1] with labels.

    The official 10,000 test images are the test split; ``valid_size`` training images (chosen
    by ``seed``) are held out for validation (``valid_size=0`` trains on all 60,000, the protocol
    of Burda et al. 2016).
    """
    a = load_mnist_arrays(path)
    if len(a["x_train"]) != len(a["y_train"]) or len(a["x_test"]) != len(a["y_test"]):
        raise ValueError(f"mnist: {path}: image and label counts differ")
    return train_test_splits(
        images_to_float(a["x_train"], "mnist x_train"), a["y_train"],
        images_to_float(a["x_test"], "mnist x_test"), a["y_test"],
        name="mnist", valid_size=valid_size, binarize=binarize, seed=seed,
    )
