"""Model families, one file each. Every module here registers its models on import
(:func:`~pyrovae.models.base.register_model`), so adding a family is adding a file."""

from .ae import AE
from .base import MODELS, as_model, build, register_model, resolve, spec_of
from .cvae import CVAE, CVAEConfig
from .oivae import OIVAE, OIVAEConfig
from .vae import VAE, VAEConfig

__all__ = ["AE", "CVAE", "MODELS", "OIVAE", "VAE", "CVAEConfig", "OIVAEConfig", "VAEConfig",
           "as_model", "build", "register_model", "resolve", "spec_of"]
