"""The embedded default dataset: 1,797 8x8 handwritten digits (UCI optical recognition of
handwritten digits), which scikit-learn ships inside its wheel, so nothing is downloaded."""

from __future__ import annotations

from .arrays import split_arrays
from .dataset import Splits


def load_digits(*, valid_fraction: float = 0.1, test_fraction: float = 0.1,
                binarize: str | None = None, seed: int = 0) -> Splits:
    """Digits as :class:`Splits` of ``(N, 1, 8, 8)`` intensities in [0, 1] (raw 0-16 over 16)
    with labels; validation and test fractions chosen by ``seed``."""
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    x = (d.images / 16.0).astype("float32")[:, None]  # (1797, 1, 8, 8)
    return split_arrays(x, d.target, name="digits", valid_fraction=valid_fraction,
                        test_fraction=test_fraction, binarize=binarize, seed=seed)
