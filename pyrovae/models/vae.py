"""The variational auto-encoder (Kingma and Welling 2014; Rezende et al. 2014) as a Pyro program."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method

from .. import checks
from .. import nn as nets
from ..likelihoods import LIKELIHOODS
from ..likelihoods import likelihood as make_likelihood
from ..nn.heads import SCALES
from ..nn.layers import as_shape
from ..protocol import register_model, resolve_config


@dataclass
class VAEConfig:
    """Shape of a VAE. Defaults are Burda et al. (2016)'s one-stochastic-layer MNIST model."""

    input_shape: tuple[int, ...] = (1, 28, 28)  # one datum: (C, H, W) or (D,)
    latent_dim: int = 50  # size of z
    network: str = "mlp"  # encoder/decoder family in pyrovae.nn.ARCHITECTURES: "mlp", "conv"
    hidden: tuple[int, ...] = (200, 200)  # MLP widths (decoder mirrors); for "conv", FC widths
    channels: tuple[int, ...] | None = None  # conv channel widths; None picks by image side
    activation: str = "tanh"  # hidden-layer activation (pyrovae.nn.ACTIVATIONS)
    batch_norm: bool = False  # BatchNorm after each hidden linear layer (MLP only)
    likelihood: str = "bernoulli"  # p(x|z) family in pyrovae.likelihoods.LIKELIHOODS
    likelihood_args: dict = field(default_factory=dict)  # e.g. {"scale": "learned"}
    min_scale: float = 1e-4  # floor on the encoder's standard deviations
    # q's standard deviation from the encoder's raw output: "softplus" (softplus(raw) +
    # min_scale) or "exp" (raw is the log standard deviation: exp(raw) + min_scale)
    scale: str = "softplus"

    def __post_init__(self):
        self.input_shape = as_shape(self.input_shape, "input_shape")
        self.hidden = _positive_ints(self.hidden, "hidden", allow_empty=True)
        if self.channels is not None:
            self.channels = _positive_ints(self.channels, "channels", allow_empty=False)
        checks.positive_int(self.latent_dim, "latent_dim")
        _one_of(self.network, nets.ARCHITECTURES, "network")
        _one_of(self.activation, nets.ACTIVATIONS, "activation")
        _one_of(self.likelihood, LIKELIHOODS, "likelihood")
        _one_of(self.scale, SCALES, "scale")
        if self.network == "conv" and len(self.input_shape) != 3:
            raise ValueError(
                f"network 'conv' needs image input_shape (C, H, W), got {self.input_shape}"
            )
        if not isinstance(self.batch_norm, bool):
            raise ValueError(f"batch_norm: expected True or False, got {self.batch_norm!r}")
        _check_likelihood_args(self.likelihood_args)
        # a floor on q's standard deviation above the prior's own (1) cannot be meant
        checks.number_in(self.min_scale, "min_scale", 0, 1, bounds="[]")


def _positive_ints(value, name: str, allow_empty: bool) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name}: expected a sequence of positive ints, got {value!r}")
    value = tuple(value)
    if any(not checks.is_int(v) or v < 1 for v in value) or (not value and not allow_empty):
        raise ValueError(f"{name}: expected a sequence of positive ints, got {value!r}")
    return value


def _one_of(value, options, name: str) -> None:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name}: expected one of {sorted(options)}, got {value!r}")


def _check_likelihood_args(value) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"likelihood_args: expected a dict, got {value!r}")


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """Network output in at least fp32: under a bf16 autocast the networks run in bf16, but
    distribution parameters, log-densities and their sums over pixels stay in fp32."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


class _Autoencoder(PyroModule):
    """Networks and likelihood shared by :class:`VAE` and :class:`AE`."""

    config_class = VAEConfig

    def __init__(self, config: VAEConfig | None = None, /, **overrides):
        super().__init__()
        self.config = resolve_config(config, VAEConfig, overrides)
        c = self.config
        self.likelihood = make_likelihood(c.likelihood, c.input_shape, **c.likelihood_args)
        self.encoder = nets.encoder(c.network, c.input_shape, self._code_features(),
                                    c.hidden, c.activation, c.channels, c.batch_norm)
        self.decoder = nets.decoder(c.network, c.latent_dim, self.likelihood.param_shape,
                                    c.hidden, c.activation, c.channels, c.batch_norm)

    def _code_features(self) -> int:
        return self.config.latent_dim

    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        """Raises ``ValueError`` if ``x`` is not a batch of data this model can observe."""
        self.likelihood.check_data(x, name)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters for codes ``z: (..., latent_dim)``."""
        return full_precision(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z] at the code of ``x`` (the posterior mean for a VAE)."""
        return self.likelihood.mean(self.decode(self._code(x)))


@register_model("vae")
class VAE(_Autoencoder):
    r"""Variational auto-encoder.

    Model: :math:`z \sim \mathcal N(0, I)`, :math:`x \sim p_\theta(x \mid z)` given by
    ``config.likelihood`` of the decoder's output. Guide (amortised):
    :math:`q_\phi(z \mid x) = \mathcal N(\mu_\phi(x), \operatorname{diag}\sigma^2_\phi(x))`.
    Trained by maximising the ELBO
    :math:`\mathbb E_q[\log p_\theta(x\mid z)] - \mathrm{KL}(q_\phi(z\mid x)\,\|\,p(z))`
    (Kingma and Welling 2014, eq. 3) with any Pyro ELBO; sites are ``"z"`` (latent) and ``"x"``
    (observed) inside ``pyro.plate("data")``.
    """

    def __init__(self, config: VAEConfig | None = None, /, **overrides):
        super().__init__(config, **overrides)
        self.head = nets.NormalHead(self.config.min_scale, self.config.scale)
        self.register_buffer("prior_loc", torch.zeros(self.config.latent_dim))
        self.register_buffer("prior_scale", torch.ones(self.config.latent_dim))

    def _code_features(self) -> int:
        return 2 * self.config.latent_dim  # (loc, raw scale)

    def prior(self) -> dist.Distribution:
        return dist.Normal(self.prior_loc, self.prior_scale).to_event(1)

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())  # (B, L), or (P, B, L) under a particle plate
            pyro.sample("x", self.likelihood(self.decode(z)), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encode(x)  # (B, L) each
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of q(z | x), each ``(..., latent_dim)``."""
        return self.head(full_precision(self.encoder(x)))

    def _code(self, x):
        return self.encode(x)[0]

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = True) -> torch.Tensor:
        """``n`` draws ``(n, *input_shape)`` from p(x): E[x | z] with ``mean``, else x itself."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        z = self.prior().sample((n,))  # (n, L)
        params = self.decode(z)
        return self.likelihood.mean(params) if mean else self.likelihood(params).sample()
