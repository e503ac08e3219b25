"""pyrovae: variational auto-encoders and variational inference as Pyro programs.

Models are ``PyroModule`` objects with ``model`` and ``guide``; anything with those two trains with
:func:`fit`, evaluates with :func:`pyrovae.metrics.log_likelihood` and exports to ArviZ.
"""

from . import data, infer, likelihoods, metrics, models, nn, quantize, vi
from .callbacks import Callback
from .models import (
    AE,
    CVAE,
    NVAE,
    OIVAE,
    VAE,
    VQVAE,
    VQVAE2,
    CVAEConfig,
    LadderVAE,
    LadderVAEConfig,
    NVAEConfig,
    OIVAEConfig,
    TwoLayerVAE,
    TwoLayerVAEConfig,
    VAEConfig,
    VQVAE2Config,
    VQVAEConfig,
)
from .saving import load, load_model, save
from .train import History, TrainConfig, TrainState, burda_lr_lambda, fit

__version__ = "0.1.0"


def __getattr__(name):
    # pyrovae.analysis is imported on first use: it brings matplotlib (about half a second on
    # this project's CPU), which training, metrics and distributed workers do not need.
    if name == "analysis":
        import importlib

        return importlib.import_module(".analysis", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), "analysis"})


__all__ = [
    "AE",
    "CVAE",
    "NVAE",
    "OIVAE",
    "VAE",
    "VQVAE",
    "VQVAE2",
    "CVAEConfig",
    "Callback",
    "History",
    "LadderVAE",
    "LadderVAEConfig",
    "NVAEConfig",
    "OIVAEConfig",
    "TrainConfig",
    "TrainState",
    "TwoLayerVAE",
    "TwoLayerVAEConfig",
    "VAEConfig",
    "VQVAE2Config",
    "VQVAEConfig",
    "analysis",
    "burda_lr_lambda",
    "data",
    "fit",
    "infer",
    "likelihoods",
    "load",
    "load_model",
    "metrics",
    "models",
    "nn",
    "quantize",
    "save",
    "vi",
]
