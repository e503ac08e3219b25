r"""The output-interpretable VAE (oi-VAE; Ainsworth, Foti, Lee and Fox 2018).

Observed variables come in G known groups, :math:`x = [x^{(1)}, \dots, x^{(G)}]`. Each group
has its own generator, and all share one latent vector :math:`z \in \mathbb R^L`
(Ainsworth et al. 2018):

.. math::

   z \sim \mathcal N(0, I_L), \qquad
   x^{(g)} \sim \mathcal N\bigl(f^{(g)}_\theta(W^{(g)} z),\ \operatorname{diag}\sigma_g^2\bigr),

where :math:`W^{(g)} \in \mathbb R^{p \times L}` is the first layer of generator g. Column
:math:`w^{(g)}_{\cdot j}` carries latent dimension j into group g, and a group-sparsity prior
on the columns — a hierarchical Gaussian whose marginal is the group lasso —
drives whole columns to zero:

.. math:: \log p(W) = -\lambda \sum_{g=1}^G \sum_{j=1}^L \|w^{(g)}_{\cdot j}\|_2 + \text{const}.

The norms :math:`\|w^{(g)}_{\cdot j}\|` (:meth:`OIVAE.group_weight_norms`) are the recovered
latent-to-group pattern. The penalty is not differentiable at 0, so, as the paper does, W
takes proximal gradient steps (:class:`pyrovae.infer.ProximalGroupLasso`): a gradient step on
the ELBO, then group soft-thresholding, which sets columns exactly to zero. Each generator's
first layer is ``W`` followed by a bias and the activation, so W's scale cannot be absorbed
by a linear layer in front of it; what lies after the activation can still grow to make up
for shrinkage, which the paper answers with a Gaussian prior on θ (weight decay, e.g.
``optimizer="adamw"``).

Sites: ``"z"`` and ``"x"`` (all groups concatenated, one Gaussian event) in
``pyro.plate("data")``, so every pyrovae metric and figure applies.

Reference: Ainsworth, Foti, Lee and Fox (2018) oi-VAE: output interpretable VAEs for nonlinear
group factor analysis, ICML.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule, pyro_method
from torch import nn

from .. import checks
from .. import nn as nets
from ..nn.layers import activation
from ..protocol import register_model, resolve_config


@dataclass
class OIVAEConfig:
    """Shape of an oi-VAE."""

    group_sizes: tuple[int, ...] = (4, 4, 4, 4)  # widths of the observed groups, in x's order
    latent_dim: int = 8  # L, size of the shared z
    group_hidden: tuple[int, ...] = (16,)  # generator widths; the first is p, the rows of W
    encoder_hidden: tuple[int, ...] = (64, 64)  # inference network widths
    activation: str = "tanh"  # hidden activation (generators and encoder)
    min_scale: float = 1e-3  # floor on the encoder's and the noise's standard deviations

    def __post_init__(self):
        self.group_sizes = tuple(int(g) for g in self.group_sizes)
        self.group_hidden = tuple(int(h) for h in self.group_hidden)
        self.encoder_hidden = tuple(int(h) for h in self.encoder_hidden)
        if not self.group_sizes or any(g < 1 for g in self.group_sizes):
            raise ValueError(f"group_sizes: expected positive ints, got {self.group_sizes}")
        if not self.group_hidden or any(h < 1 for h in self.group_hidden):
            raise ValueError(f"group_hidden: expected at least one positive width (p), got "
                             f"{self.group_hidden}")
        checks.positive_int(self.latent_dim, "latent_dim")

    @property
    def input_shape(self) -> tuple[int]:
        return (sum(self.group_sizes),)


@register_model("oivae")
class OIVAE(PyroModule):
    """oi-VAE (see the module docstring): one generator per group of observed variables,
    coupled through a shared latent z; ``W`` of shape ``(G, p, L)`` holds each group's
    latent-to-group weights."""

    config_class = OIVAEConfig

    def __init__(self, config: OIVAEConfig | None = None, /, **overrides):
        super().__init__()
        self.config = resolve_config(config, OIVAEConfig, overrides)
        c = self.config
        g, p, L = len(c.group_sizes), c.group_hidden[0], c.latent_dim
        self.W = nn.Parameter(torch.randn(g, p, L) / L ** 0.5)  # (G, p, L)
        self.W_bias = nn.Parameter(torch.zeros(g, p))  # (G, p)
        self.act = activation(c.activation)
        self.generators = nn.ModuleList([
            nets.MLP(p, d, c.group_hidden[1:], c.activation) for d in c.group_sizes])
        self.raw_noise = nn.Parameter(torch.zeros(sum(c.group_sizes)))  # softplus -> sigma
        self.encoder = nets.MLP(sum(c.group_sizes), 2 * L, c.encoder_hidden, c.activation)
        self.head = nets.NormalHead(c.min_scale)
        self.register_buffer("prior_loc", torch.zeros(L))
        self.register_buffer("prior_scale", torch.ones(L))

    @property
    def input_shape(self) -> tuple[int]:
        return self.config.input_shape

    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        d = sum(self.config.group_sizes)
        if x.dim() != 2 or x.shape[1] != d:
            raise ValueError(f"{name}: expected shape (N, {d}) (groups {self.config.group_sizes}"
                             f" side by side), got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name}: expected finite values")

    def noise_scale(self) -> torch.Tensor:
        return F.softplus(self.raw_noise) + self.config.min_scale  # (D,)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Means of every group, concatenated: ``z: (..., L) -> (..., D)``."""
        h = self.act(torch.einsum("...l,gpl->...gp", z, self.W) + self.W_bias)  # (..., G, p)
        return torch.cat([gen(h[..., i, :]) for i, gen in enumerate(self.generators)], dim=-1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.encoder(x))

    def group_weight_norms(self) -> torch.Tensor:
        r"""``(G, L)``: :math:`\|w^{(g)}_{\cdot j}\|_2`, how strongly latent j drives group g."""
        return self.W.detach().norm(dim=1)

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            prior = dist.Normal(self.prior_loc, self.prior_scale).to_event(1)
            z = pyro.sample("z", prior)  # (B, L), or (P, B, L) under a particle plate
            pyro.sample("x", dist.Normal(self.decode(z), self.noise_scale()).to_event(1), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encode(x)  # (B, L) each
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` group means E[x | z] with z from the prior, ``(n, D)``."""
        checks.positive_int(n, "n")
        return self.decode(torch.randn(n, self.config.latent_dim, device=self.W.device))
