"""pyrovae: variational auto-encoders and variational inference as Pyro programs.

Models are ``PyroModule``s with ``model`` and ``guide``; anything with those two trains with
:func:`fit`, evaluates with :func:`pyrovae.metrics.log_likelihood` and exports to ArviZ.
"""

from . import data, infer, likelihoods, metrics, models, nn, quantize, vi
from .checkpoint import load_model
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
from .saving import load, save
from .train import Callback, History, TrainState, burda_lr_lambda, fit

__version__ = "0.1.0"

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
    "TrainState",
    "TwoLayerVAE",
    "TwoLayerVAEConfig",
    "VAEConfig",
    "VQVAE2Config",
    "VQVAEConfig",
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
