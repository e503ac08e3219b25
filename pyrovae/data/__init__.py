"""Datasets: the embedded default (8x8 digits), MNIST (IDX or npz), torchvision, array files.

:func:`load` resolves a spec string as the CLI takes it:

- ``digits`` - embedded, no download;
- ``mnist:PATH`` - a folder of MNIST IDX files or an npz with MNIST's keys;
- ``torchvision:NAME[:ROOT]`` - a torchvision dataset on disk;
- ``dsprites[:N]`` - N procedural dSprites images (default 50,000), labelled by shape;
  ``dsprites:PATH.npz[:N]`` reads them from the official release file instead;
- ``PATH.npz`` / ``PATH.npy`` - arrays.

New loaders register in :data:`LOADERS` (``name -> callable(arg, **options) -> Splits``).
"""

from __future__ import annotations

from pathlib import Path

from .arrays import load_file, load_torchvision, split_arrays
from .dataset import BINARIZE, Dataset, Splits, as_dataset, split_indices
from .digits import load_digits
from .dsprites import DSprites, DSpritesNPZ, load_dsprites
from .grouped import grouped_factors
from .mnist import load_mnist, load_mnist_arrays, read_idx
from .specs import portable_spec, resolve_spec, split_path


def _digits(arg, **kw):
    if arg:
        raise ValueError(f"data 'digits' takes no argument, got 'digits:{arg}'")
    kw.pop("valid_size", None)
    return load_digits(**kw)


def _mnist(arg, **kw):
    if not arg:
        raise ValueError("data 'mnist' needs a path: 'mnist:PATH' (IDX folder or npz file)")
    return load_mnist(arg, **kw)


def _torchvision(arg, **kw):
    name, _, root = (arg or "").partition(":")
    if not name:
        raise ValueError("data 'torchvision' needs a dataset name: 'torchvision:NAME[:ROOT]'")
    return load_torchvision(name, root or "~/data", **kw)


def _dsprites(arg, **kw):
    path, n = None, 50000
    if arg:
        head, _, tail = arg.rpartition(":")
        if arg.isdigit():
            n = int(arg)
        elif head and tail.isdigit():
            path, n = head, int(tail)
        else:
            path = arg
    if path is not None and not str(path).endswith(".npz"):
        raise ValueError(
            f"data 'dsprites': expected 'dsprites[:N]' or 'dsprites:PATH.npz[:N]', "
            f"got 'dsprites:{arg}'"
        )
    kw.pop("valid_size", None)
    return load_dsprites(n, path=path, **kw)


LOADERS = {"digits": _digits, "mnist": _mnist, "torchvision": _torchvision, "dsprites": _dsprites}


def load(
    spec: str, *, binarize: str | None = None, seed: int = 0, valid_size: int | None = None
) -> Splits:
    """Loads the dataset named by ``spec`` (see the module docstring) as :class:`Splits`.

    ``valid_size`` (MNIST-like sets) defaults to each loader's own choice.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"data: expected a spec string such as 'digits', got {spec!r}")
    if binarize not in BINARIZE:
        raise ValueError(f"binarize: expected one of {BINARIZE}, got {binarize!r}")
    kw = {"binarize": binarize, "seed": seed}
    if valid_size is not None:
        kw["valid_size"] = valid_size
    name, _, arg = spec.partition(":")
    if name in LOADERS:
        return LOADERS[name](arg, **kw)
    if Path(spec).suffix in (".npz", ".npy"):
        return load_file(spec, **kw)
    raise ValueError(
        f"data: unknown spec {spec!r}; expected one of {sorted(LOADERS)} (as 'name[:arg]') "
        f"or a path ending in .npz or .npy"
    )


__all__ = [
    "BINARIZE",
    "DSprites",
    "DSpritesNPZ",
    "LOADERS",
    "Dataset",
    "Splits",
    "as_dataset",
    "load",
    "grouped_factors",
    "load_digits",
    "load_dsprites",
    "load_file",
    "load_mnist",
    "load_mnist_arrays",
    "load_torchvision",
    "portable_spec",
    "read_idx",
    "resolve_spec",
    "split_arrays",
    "split_indices",
    "split_path",
]
