r"""NVAE (Vahdat and Kautz 2020) at small scale, as a Pyro model/guide pair.

Latents come in *groups* of ``latent_channels`` feature maps at one or more spatial scales;
group 1 sits at the coarsest scale (the paper's numbering: :math:`z_1` is the top). The
generative model runs a top-down path of :class:`~pyrovae.nn.nvae_cells.DecoderCell` blocks
from a learned constant :math:`h_0`:

.. math:: p(z) = \prod_l p(z_l \mid z_{<l}), \quad p(z_1) = \mathcal N(0, I), \quad
          p(z_l \mid z_{<l}) = \mathcal N(\mu_{p,l}(h_l), \sigma_{p,l}^2(h_l)),

where :math:`h_l` is the top-down state after :math:`z_{<l}`; :math:`p(x \mid z)` is read from
the final state. The guide runs a bottom-up :class:`~pyrovae.nn.nvae_cells.EncoderCell` tower
once, then the *same* top-down path (shared parameters, the same :math:`h_l`), and sets each
posterior relative to its prior (NVAE eq. 2, "residual normal"):

.. math:: q(z_l \mid z_{<l}, x) = \mathcal N(\mu_{p,l} + \Delta\mu_l,\;
          \sigma_{p,l}\cdot\Delta\sigma_l),
          \qquad \mathrm{KL}(q \,\|\, p) = \tfrac12\Big(\frac{\Delta\mu_l^2}{\sigma_{p,l}^2}
          + \Delta\sigma_l^2 - 1\Big) - \log\Delta\sigma_l

(:func:`residual_normal_kl`), with :math:`(\Delta\mu_l, \Delta\sigma_l)` from the encoder
features of the matching depth combined with :math:`h_l`. Every group is a sample site
``"z1"`` ... ``"zN"`` inside ``pyro.plate("data")`` with event dim 3, sampled in the same
order in model and guide, so ``Trace_ELBO``, ``TraceMeanField_ELBO`` (analytic KL per group)
and :func:`pyrovae.metrics.log_likelihood` apply. :class:`pyrovae.infer.TraceNVAE_ELBO` adds
the spectral and batch-norm regularisers (:class:`SpectralRegularizer`) and KL warm-up with
KL balancing across groups.

Reference: Vahdat and Kautz (2020) NVAE: a deep hierarchical variational autoencoder, NeurIPS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule, pyro_method
from torch import nn

from .. import checks
from ..distributions import ResidualNormal, residual_normal_kl  # noqa: F401  (re-exported)
from ..likelihoods import LIKELIHOODS
from ..likelihoods import likelihood as make_likelihood
from ..nn.layers import as_shape
from ..nn.nvae_cells import DecoderCell, EncoderCell, apply_images
from ..nn.spectral import SpectralRegularizer, power_iteration  # noqa: F401  (re-exported)
from ..protocol import register_model, resolve_config
from .guide_path import GuidePath, SharesGuidePath
from .hierarchical import _Ancestral
from .vae import _check_likelihood_args, _one_of, full_precision

_SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus(_SOFTPLUS_ONE) = 1: scales start at 1


@dataclass
class NVAEConfig:
    """Shape of a small NVAE for 28x28 images (sizes far below the paper's, for CPU runs)."""

    input_shape: tuple[int, ...] = (1, 28, 28)  # (C, H, W); H, W divisible by 2**latent_scales
    channels: int = 16  # feature maps at the finest latent scale (doubled per coarser scale)
    latent_scales: int = 2  # spatial scales holding latents (H/2, H/4, ... for 28: 14, 7)
    groups_per_scale: int = 2  # latent groups at each scale
    latent_channels: int = 4  # feature maps per latent group
    cells_per_group: int = 1  # encoder cells and decoder cells before each group
    expand: int = 3  # decoder-cell channel expansion (the paper uses 3 or 6)
    likelihood: str = "bernoulli"  # p(x | z) in pyrovae.likelihoods.LIKELIHOODS
    likelihood_args: dict = field(default_factory=dict)  # e.g. {"num_components": 10}
    min_scale: float = 1e-3  # floor on prior standard deviations and on delta-sigma
    channels_last: bool = True  # conv weights in NHWC order: 1.3x faster steps on CPU here

    def __post_init__(self):
        self.input_shape = as_shape(self.input_shape, "input_shape")
        if len(self.input_shape) != 3:
            raise ValueError(f"input_shape: expected (C, H, W), got {self.input_shape}")
        for name in ("channels", "latent_scales", "groups_per_scale", "latent_channels",
                     "cells_per_group", "expand"):
            checks.positive_int(getattr(self, name), name)
        f = 2 ** self.latent_scales
        if self.input_shape[1] % f or self.input_shape[2] % f:
            raise ValueError(f"input_shape: H and W must be divisible by 2**latent_scales = "
                             f"{f}, got {self.input_shape}")
        _one_of(self.likelihood, LIKELIHOODS, "likelihood")
        _check_likelihood_args(self.likelihood_args)
        if not isinstance(self.channels_last, bool):
            raise ValueError(f"channels_last: expected True or False, got {self.channels_last!r}")
        checks.number_in(self.min_scale, "min_scale", 0, 1)


def _scale(raw: torch.Tensor, floor: float) -> torch.Tensor:
    return F.softplus(raw + _SOFTPLUS_ONE) + floor  # 1 + floor at raw = 0


@register_model("nvae")
class NVAE(SharesGuidePath, _Ancestral, PyroModule):
    r"""Hierarchical VAE with residual cells and residual-normal posteriors (module docstring).

    Sites ``"z1"`` (top, coarsest) ... ``"zN"`` (finest), ``N = latent_scales *
    groups_per_scale``, each ``(B, latent_channels, h_s, w_s)``; ``"x"`` observed.
    """

    config_class = NVAEConfig

    def __init__(self, config: NVAEConfig | None = None, /, **overrides):
        super().__init__()
        self.config = c = resolve_config(config, NVAEConfig, overrides)
        self.likelihood = make_likelihood(c.likelihood, c.input_shape, **c.likelihood_args)
        C0, H, W = c.input_shape
        S, G, k = c.latent_scales, c.groups_per_scale, c.latent_channels
        ch = [c.channels * 2 ** s for s in range(S)]  # channels at latent scale s (0: finest)
        half = max(c.channels // 2, 1)
        # bottom-up: stem at full size, one cell, then down to the finest latent scale
        self.stem = nn.Sequential(nn.Conv2d(C0, half, 3, padding=1), EncoderCell(half),
                                  nn.Conv2d(half, ch[0], 3, stride=2, padding=1))
        self.enc_cells = nn.ModuleList(
            nn.Sequential(*[EncoderCell(ch[s]) for _ in range(c.cells_per_group)])
            for s in range(S) for _ in range(G))
        self.enc_down = nn.ModuleList(nn.Conv2d(ch[s], ch[s + 1], 3, stride=2, padding=1)
                                      for s in range(S - 1))
        self.enc_top = nn.Sequential(nn.ELU(), nn.Conv2d(ch[-1], ch[-1], 1), nn.ELU())
        # top-down, groups ordered top (coarsest) first
        self.group_scale = [s for s in reversed(range(S)) for _ in range(G)]
        gch = [ch[s] for s in self.group_scale]
        self.h0 = nn.Parameter(torch.zeros(ch[-1], H >> S, W >> S))
        self.dec_cells = nn.ModuleList(  # before groups 2..N
            nn.Sequential(*[DecoderCell(gch[i], c.expand) for _ in range(c.cells_per_group)])
            for i in range(1, len(gch)))
        self.prior_nets = nn.ModuleList(  # groups 2..N: h -> (mu_p, raw sigma_p)
            nn.Sequential(nn.ELU(), nn.Conv2d(gch[i], 2 * k, 3, padding=1))
            for i in range(1, len(gch)))
        self.enc_mix = nn.ModuleList(nn.Conv2d(gch[i], gch[i], 1) for i in range(1, len(gch)))
        self.post_nets = nn.ModuleList(  # groups 1..N: features -> (delta mu, raw delta sigma)
            nn.Sequential(nn.ELU(), nn.Conv2d(gch[i], 2 * k, 3, padding=1))
            for i in range(len(gch)))
        self.combine = nn.ModuleList(nn.Conv2d(gch[i] + k, gch[i], 1) for i in range(len(gch)))
        self.dec_up = nn.ModuleList(  # coarse scale s+1 -> s: nearest x2 then 1x1 conv
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                          nn.Conv2d(ch[s + 1], ch[s], 1)) for s in reversed(range(S - 1)))
        self.post = nn.Sequential(
            DecoderCell(ch[0], c.expand), nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(ch[0], half, 1), DecoderCell(half, c.expand), nn.ELU(),
            nn.Conv2d(half, self.likelihood.param_shape[0], 3, padding=1))
        for net in list(self.post_nets) + list(self.prior_nets):
            nn.init.zeros_(net[-1].weight)  # start with q = p = N(0, I) relative terms
            nn.init.zeros_(net[-1].bias)
        self.register_buffer("_zero", torch.zeros(()))
        if c.channels_last:  # the activations follow the weights' layout
            self.to(memory_format=torch.channels_last)

    @property
    def num_groups(self) -> int:
        return len(self.group_scale)

    def group_shapes(self) -> list[tuple[int, int, int]]:
        """``(latent_channels, h, w)`` of each group, top first."""
        c = self.config
        _, H, W = c.input_shape
        return [(c.latent_channels, H >> (s + 1), W >> (s + 1)) for s in self.group_scale]

    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        self.likelihood.check_data(x, name)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Bottom-up features for groups 1..N (top first), each ``(B, C_s, h_s, w_s)``."""
        # a PyroModule registers a plain submodule's parameters at each attribute access:
        # read each container once per call
        cells, down = self.enc_cells, self.enc_down
        h = self.stem(x)  # (B, C, H/2, W/2)
        feats, i = [], 0
        for s in range(self.config.latent_scales):
            for _ in range(self.config.groups_per_scale):
                h = cells[i](h)
                feats.append(h)
                i += 1
            if s < self.config.latent_scales - 1:
                h = down[s](h)
        # the top group reads the last features through enc_top; the others, in reverse order,
        # the features one cell below (NVAE's bidirectional encoder)
        return [self.enc_top(feats[-1])] + feats[-2::-1]

    def _top_down(self, feats: list[torch.Tensor] | None) -> torch.Tensor:
        """Samples ``z1..zN`` along the shared top-down path: from the prior (``feats=None``,
        the model) or from the residual-normal posterior (the guide). Returns the final
        state ``(..., B, C, h, w)`` at the finest latent scale.

        The path is a function of ``z_{<l}`` only: the model replayed on the guide's draws
        reuses the guide's states (:class:`~pyrovae.models.guide_path.GuidePath`)."""
        k = self.config.latent_channels
        floor = self.config.min_scale
        h = self.h0  # (C_top, h, w): broadcast against z's batch dims at the first combine
        dec_up, dec_cells, prior_nets = self.dec_up, self.dec_cells, self.prior_nets
        enc_mix, post_nets, combine = self.enc_mix, self.post_nets, self.combine
        zero = self._zero
        path = GuidePath(self, guide=feats is not None)
        for i, shape in enumerate(self.group_shapes()):
            shared = path.entry(i) if feats is None else None
            if shared is not None:
                h, ploc, pscale = shared["before"], shared["loc"], shared["scale"]
            elif i > 0:
                s_now, s_before = self.group_scale[i], self.group_scale[i - 1]
                if s_now != s_before:  # dec_up[j] goes from scale S-1-j to S-2-j
                    h = apply_images(dec_up[len(dec_up) - 1 - s_now], h)  # (..., C_s, h_s, w_s)
                h = apply_images(dec_cells[i - 1], h)
                ploc, praw = apply_images(prior_nets[i - 1], h).split(k, dim=-3)
                pscale = _scale(praw, floor)  # (..., k, h_s, w_s)
            else:
                ploc = zero.expand(shape)
                pscale = (zero + 1).expand(shape)
            if feats is None:
                fn = dist.Normal(ploc, pscale)
            else:
                f = feats[i] if i == 0 else feats[i] + apply_images(enc_mix[i - 1], h)
                dloc, draw = apply_images(post_nets[i], f).split(k, dim=-3)
                fn = ResidualNormal(ploc, pscale, dloc, _scale(draw, floor))
            z = pyro.sample(f"z{i + 1}", fn.to_event(3))  # (..., B, k, h_s, w_s)
            if feats is None and path.follow(i, z):
                h = shared["after"]
                continue
            h_before = h
            h = h.expand(*z.shape[:-3], *h.shape[-3:])
            h = apply_images(combine[i], torch.cat([h, z], dim=-3))
            if feats is not None:
                path.add(before=h_before, loc=ploc, scale=pscale, z=z, after=h)
        path.close()
        return h

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters ``(..., *param_shape)`` from the final top-down state."""
        return full_precision(apply_images(self.post, h))

    def _generate(self, x):
        """The generative model (``model`` and ``sample`` of :class:`_Ancestral`); ``x=None``
        samples it."""
        params = self.decode(self._top_down(None))  # (..., B, *param_shape)
        return pyro.sample("x", self.likelihood(params), obs=x), params

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        feats = self.encode(x)
        with pyro.plate("data", x.shape[0]):
            self._top_down(feats)
