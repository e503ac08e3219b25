"""Model families, one file each. Every module here registers its models on import
(:func:`~pyrovae.protocol.register_model`), so adding a family is adding a file."""

from ..protocol import MODELS, as_model, build, register_model, resolve, spec_of
from . import base  # noqa: F401  (pyrovae.models.base: the protocol's former home)
from .ae import AE
from .code_prior import AutoregressiveCategorical, CodeLevel, CodePrior
from .cvae import CVAE, CVAEConfig
from .discrete import BernoulliVAE, BernoulliVAEConfig, CategoricalVAE, CategoricalVAEConfig
from .hierarchical import LadderVAE, LadderVAEConfig, TwoLayerVAE, TwoLayerVAEConfig
from .nvae import NVAE, NVAEConfig
from .oivae import OIVAE, OIVAEConfig
from .vae import VAE, VAEConfig
from .vqvae import VQVAE, VQVAEConfig
from .vqvae2 import VQVAE2, VQVAE2Config

__all__ = [
    "AE",
    "AutoregressiveCategorical",
    "BernoulliVAE",
    "BernoulliVAEConfig",
    "CVAE",
    "CVAEConfig",
    "CategoricalVAE",
    "CategoricalVAEConfig",
    "CodeLevel",
    "CodePrior",
    "LadderVAE",
    "LadderVAEConfig",
    "MODELS",
    "NVAE",
    "NVAEConfig",
    "OIVAE",
    "OIVAEConfig",
    "TwoLayerVAE",
    "TwoLayerVAEConfig",
    "VAE",
    "VAEConfig",
    "VQVAE",
    "VQVAE2",
    "VQVAE2Config",
    "VQVAEConfig",
    "as_model",
    "build",
    "register_model",
    "resolve",
    "spec_of",
]
