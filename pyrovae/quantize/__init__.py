"""Quantisation: codebooks with the straight-through estimator, EMA updates, k-means and
Lloyd-Max scalar quantisers."""

from .codebook import (
    Quantized,
    VectorQuantizer,
    code_statistics,
    codebook_loss,
    commitment_loss,
    ema_update,
    straight_through,
)
from .kmeans import KMeansResult, kmeans, kmeans_plus_plus
from .lloyd_max import LloydMaxResult, lloyd_max
from .nearest import nearest_code, squared_distances

__all__ = [
    "KMeansResult",
    "LloydMaxResult",
    "Quantized",
    "VectorQuantizer",
    "code_statistics",
    "codebook_loss",
    "commitment_loss",
    "ema_update",
    "kmeans",
    "kmeans_plus_plus",
    "lloyd_max",
    "nearest_code",
    "squared_distances",
    "straight_through",
]
