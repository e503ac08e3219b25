"""The conditional VAE (Sohn, Lee and Yan 2015; Kingma et al. 2014, model M2 with y observed)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule, pyro_method
from torch import nn

from .. import checks
from .. import nn as nets
from ..likelihoods import likelihood as make_likelihood
from ..nn.layers import activation, as_shape
from ..protocol import register_model, resolve_config
from .vae import _check_likelihood_args

PRIORS = ("standard", "conditional")


@dataclass
class CVAEConfig:
    """Shape of a conditional VAE. Defaults suit 28x28 MNIST with its ten labels."""

    input_shape: tuple[int, ...] = (1, 28, 28)  # one datum: (C, H, W) or (D,)
    num_classes: int = 10  # labels y in 0..num_classes-1
    latent_dim: int = 16  # size of z
    network: str = "mlp"  # encoder/decoder family in pyrovae.nn.ARCHITECTURES
    hidden: tuple[int, ...] = (512, 256)  # MLP widths (decoder mirrors); for "conv", FC widths
    channels: tuple[int, ...] | None = None  # conv channel widths; None picks by image side
    activation: str = "relu"  # hidden-layer activation
    likelihood: str = "bernoulli"  # p(x|z,y) family in pyrovae.likelihoods.LIKELIHOODS
    likelihood_args: dict = field(default_factory=dict)  # e.g. {"scale": "learned"}
    prior: str = "standard"  # "standard": p(z)=N(0,I); "conditional": p(z|y)=N(mu_y, diag s_y^2)
    min_scale: float = 1e-4  # floor on the encoder's standard deviations

    def __post_init__(self):
        self.input_shape = as_shape(self.input_shape, "input_shape")
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.channels is not None:
            self.channels = tuple(int(c) for c in self.channels)
        for name in ("num_classes", "latent_dim"):
            checks.positive_int(getattr(self, name), name)
        if not self.hidden:
            raise ValueError("hidden: expected at least one width (the encoder's feature size)")
        _check_likelihood_args(self.likelihood_args)
        if self.network not in nets.ARCHITECTURES:
            raise ValueError(f"network: expected one of {sorted(nets.ARCHITECTURES)}, "
                             f"got {self.network!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior: expected one of {PRIORS}, got {self.prior!r}")


@register_model("cvae")
class CVAE(PyroModule):
    r"""Conditional VAE: every distribution is conditioned on a label y.

    Model: :math:`z \sim p(z \mid y)` (a standard normal, or with ``prior="conditional"`` a
    learned diagonal Gaussian per class, Sohn et al. 2015's conditional prior network),
    :math:`x \sim p_\theta(x \mid z, y)` by the decoder on ``[z, onehot(y)]``. Guide:
    :math:`q_\phi(z \mid x, y) = \mathcal N(\mu_\phi(x, y),
    \operatorname{diag}\sigma^2_\phi(x, y))`,
    the label joining the encoder's features before its last layer. The ELBO is
    :math:`\mathbb E_q[\log p(x \mid z, y)] - \mathrm{KL}(q(z \mid x, y) \,\|\, p(z \mid y))`
    (Sohn et al. 2015, eq. 4). Sites: ``"z"`` and ``"x"`` in ``pyro.plate("data")``; ``model``
    and ``guide`` take ``x`` and ``y`` (batches carry labels as ``y``).
    """

    config_class = CVAEConfig

    def __init__(self, config: CVAEConfig | None = None, /, **overrides):
        super().__init__()
        self.config = resolve_config(config, CVAEConfig, overrides)
        c = self.config
        self.likelihood = make_likelihood(c.likelihood, c.input_shape, **c.likelihood_args)
        feat = c.hidden[-1]
        self.encoder = nets.encoder(c.network, c.input_shape, feat, c.hidden[:-1], c.activation,
                                    c.channels)  # x -> (..., feat)
        self.encoder_act = activation(c.activation)
        self.encoder_head = nn.Linear(feat + c.num_classes, 2 * c.latent_dim)
        self.head = nets.NormalHead(c.min_scale)
        self.decoder = nets.decoder(c.network, c.latent_dim + c.num_classes,
                                    self.likelihood.param_shape, c.hidden, c.activation,
                                    c.channels)
        if c.prior == "conditional":
            # per-class prior mean and softplus^-1 of the scale, started at N(0, I)
            self.prior_params = nn.Parameter(torch.cat([
                torch.zeros(c.num_classes, c.latent_dim),
                torch.full((c.num_classes, c.latent_dim), 0.5413)], dim=1))  # softplus(.5413)=1
        else:
            self.register_buffer("prior_loc", torch.zeros(c.latent_dim))
            self.register_buffer("prior_scale", torch.ones(c.latent_dim))

    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        self.likelihood.check_data(x, name)

    def onehot(self, y: torch.Tensor) -> torch.Tensor:
        """``y: (...,)`` integer labels -> ``(..., num_classes)`` float one-hot codes."""
        k = self.config.num_classes
        if not torch.is_tensor(y) or y.dtype.is_floating_point or y.dtype == torch.bool:
            raise TypeError(f"y: expected an integer label tensor, got {y!r:.60}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
            raise ValueError(f"y: expected labels in [0, {k}), got range "
                             f"[{int(y.min())}, {int(y.max())}]")
        return F.one_hot(y.long(), k).float()

    def prior(self, y: torch.Tensor) -> dist.Distribution:
        """p(z | y) with batch shape ``y.shape`` and event ``(latent_dim,)``."""
        if self.config.prior == "conditional":
            loc, raw = self.prior_params[y.long()].chunk(2, -1)  # (..., L) each
            return dist.Normal(loc, F.softplus(raw) + self.config.min_scale).to_event(1)
        return dist.Normal(self.prior_loc, self.prior_scale).expand(
            (*y.shape, self.config.latent_dim)).to_event(1)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters for codes ``z: (..., L)`` and labels ``y`` (broadcast)."""
        h = self.onehot(y).expand(*z.shape[:-1], self.config.num_classes)
        return self.decoder(torch.cat([z, h], dim=-1))

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of q(z | x, y), each ``(..., latent_dim)``."""
        h = self.encoder_act(self.encoder(x))  # (B, feat)
        return self.head(self.encoder_head(torch.cat([h, self.onehot(y)], dim=-1)))

    @pyro_method
    def model(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior(y))  # (B, L), or (P, B, L) under a particle plate
            pyro.sample("x", self.likelihood(self.decode(z, y)), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encode(x, y)  # (B, L) each
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def sample(self, n: int, y=None, *, mean: bool = True,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws ``(n, *input_shape)`` from p(x | y): E[x | z, y] with ``mean``, else x.

        ``y``: one class for all (an int, ``sample(16, y=3)``), ``n`` labels, or None for labels
        drawn uniformly.
        """
        checks.positive_int(n, "n")
        dev = next(self.parameters()).device
        k = self.config.num_classes
        if y is None:
            y = torch.randint(k, (n,), generator=generator).to(dev)
        elif isinstance(y, int) and not isinstance(y, bool):
            if not 0 <= y < k:
                raise ValueError(f"y: expected a class in [0, {k}), got {y}")
            y = torch.full((n,), y, dtype=torch.long, device=dev)
        else:
            y = torch.as_tensor(y, device=dev)
            if y.shape != (n,):
                raise ValueError(f"y: expected an int or {n} labels, got shape {tuple(y.shape)}")
        p = self.prior(y)
        z = p.base_dist.loc + p.base_dist.scale * torch.randn(
            p.base_dist.loc.shape, generator=generator).to(dev)  # (n, L)
        params = self.decode(z, y)
        return self.likelihood.mean(params) if mean else self.likelihood(params).sample()
