r"""VQ-VAE-2 (Razavi, van den Oord and Vinyals 2019, "Generating Diverse High-Fidelity Images with
VQ-VAE-2", §3.2 and Fig. 2a) as a Pyro program: a two-level hierarchy of code maps.

**Guide** (the encoder, Fig. 2a): a bottom encoder :math:`h_b = E_b(x)` at the bottom
resolution; a top encoder :math:`z_e^{t} = E_t(h_b)` at a coarser one, quantised to top codes
:math:`k^t`; the top codes decoded back to the bottom resolution, :math:`D_t(e_{k^t})`, and
concatenated with :math:`h_b` to give the bottom encoder output :math:`z_e^{b}`, quantised to
:math:`k^b`. So the bottom codes are conditioned on the top ones: the top level holds global
structure and the bottom level the local detail the top misses.

**Model** (the decoder and priors): :math:`k^t \sim p(k^t)`, :math:`k^b \sim p(k^b \mid k^t)`,
:math:`x \sim p_\theta(x \mid e_{k^b}, e_{k^t})`, the decoder taking the bottom codes with the
top codes upsampled to their resolution. During VQ-VAE training both priors are uniform, so the
KL is the constant :math:`(h_t w_t + h_b w_b) \log K`; afterwards (:meth:`VQVAE2.fit_prior`)
the top prior is a PixelCNN with causal multi-head self-attention (§3.3: "the top-level prior
... has multi-headed self-attention layers") and the bottom prior a PixelCNN conditioned on the
top codes. Sites: ``codes_top``, ``z_top``, ``codes_bottom``, ``z_bottom``, ``x``.

Each level has its own codebook with straight-through gradients, commitment loss and EMA
updates, exactly as in :mod:`pyrovae.models.vqvae` (the guide factors are named
``vq_commitment_top``, ``vq_commitment_bottom``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import pyro_method
from torch import nn

from ..likelihoods import likelihood as make_likelihood
from ..nn.layers import as_shape
from ..nn.resnet import ConvMapDecoder, ConvMapEncoder
from ..protocol import register_model, resolve_config
from ..quantize import VectorQuantizer
from .code_prior import CodeLevel
from .vqvae import (
    _check_ints,
    _check_prior,
    _DiscreteLatentModel,
    quantizer_factors,
    sample_codes,
)


@dataclass
class VQVAE2Config:
    """Shape of a VQ-VAE-2. Defaults: a small two-level model for 28x28 images on a CPU
    (codes 14x14 at the bottom, 7x7 at the top); the paper's ImageNet model is 64x64 / 32x32
    with K = 512 per level."""

    input_shape: tuple[int, ...] = (1, 28, 28)  # one datum (C, H, W)
    num_codes_top: int = 128  # K of the top codebook
    num_codes_bottom: int = 128  # K of the bottom codebook
    code_dim: int = 16  # D of both codebooks
    bottom_downsample: int = 1  # stride-2 convs from x to the bottom map (28 -> 14)
    top_downsample: int = 1  # stride-2 convs from the bottom map to the top map (14 -> 7)
    hidden: int = 64  # conv widths
    res_blocks: int = 2  # residual blocks per encoder/decoder
    res_hidden: int = 32  # residual-block bottleneck width
    beta: float = 0.25  # commitment weight
    ema: bool = True  # EMA codebook updates
    decay: float = 0.99  # EMA decay
    eps: float = 1e-5  # Laplace smoothing of the EMA counts
    kmeans_init: int = 1  # training batches that seed each codebook by k-means (0: random)
    restart_threshold: float = 1.0  # restart codes used fewer times per batch; 0: never
    likelihood: str = "bernoulli"  # p(x|z) family in pyrovae.likelihoods.LIKELIHOODS
    likelihood_args: dict = field(default_factory=dict)
    prior: str = "pixelcnn"  # learned priors over both levels ("pixelcnn"), or "none"
    prior_channels: int = 64  # width of both PixelCNNs
    prior_layers: int = 6  # gated layers of each PixelCNN
    prior_kernel: int = 5  # PixelCNN kernel width (odd)
    prior_attention_heads: int = 4  # causal self-attention heads in the top prior
    prior_attention_every: int = 3  # an attention block after every this many top layers

    def __post_init__(self):
        self.input_shape = as_shape(self.input_shape, "input_shape")
        _check_ints(self, ("num_codes_top", "num_codes_bottom", "code_dim", "hidden",
                           "res_hidden", "prior_channels", "prior_layers", "bottom_downsample",
                           "top_downsample", "prior_attention_every"),
                    ("res_blocks", "kmeans_init", "prior_attention_heads"))
        if len(self.input_shape) != 3:
            raise ValueError(f"input_shape: expected an image shape (C, H, W), got "
                             f"{self.input_shape}")
        side = 2 ** (self.bottom_downsample + self.top_downsample)
        if self.input_shape[1] % side or self.input_shape[2] % side:
            raise ValueError(f"input_shape: H and W must be divisible by "
                             f"2**(bottom_downsample + top_downsample) = {side}, got "
                             f"{self.input_shape}")
        _check_prior(self)


@register_model("vqvae2")
class VQVAE2(_DiscreteLatentModel):
    """Two-level VQ-VAE-2 (see the module docstring)."""

    config_class = VQVAE2Config

    def __init__(self, config: VQVAE2Config | None = None, /, **overrides):
        super().__init__()
        self.config = resolve_config(config, VQVAE2Config, overrides)
        c = self.config
        d, hid = c.code_dim, c.hidden
        self.likelihood = make_likelihood(c.likelihood, c.input_shape, **c.likelihood_args)
        res = (c.res_blocks, c.res_hidden)
        self.encoder_bottom = ConvMapEncoder(c.input_shape[0], hid, hid, c.bottom_downsample,
                                             *res)
        self.encoder_top = ConvMapEncoder(hid, d, hid, c.top_downsample, *res)
        self.decoder_top = ConvMapDecoder(d, hid, hid, c.top_downsample, *res)
        self.pre_quantize_bottom = nn.Conv2d(2 * hid, d, 1)
        self.upsample_top = nn.Sequential(*[
            nn.ConvTranspose2d(d, d, 4, stride=2, padding=1) for _ in range(c.top_downsample)])
        self.decoder = ConvMapDecoder(2 * d, self.likelihood.param_shape[0], hid,
                                      c.bottom_downsample, *res)
        vq = dict(beta=c.beta, ema=c.ema, decay=c.decay, eps=c.eps, kmeans_init=c.kmeans_init,
                  restart_threshold=c.restart_threshold)
        self.quantizer_top = VectorQuantizer(c.num_codes_top, d, **vq)
        self.quantizer_bottom = VectorQuantizer(c.num_codes_bottom, d, **vq)
        sb = 2 ** c.bottom_downsample
        st = sb * 2 ** c.top_downsample
        self.bottom_shape = (c.input_shape[1] // sb, c.input_shape[2] // sb)
        self.top_shape = (c.input_shape[1] // st, c.input_shape[2] // st)
        p = (c.prior_channels, c.prior_layers, c.prior_kernel)
        self._setup_prior([
            CodeLevel("codes_top", self.top_shape, c.num_codes_top, *p,
                      attention_heads=c.prior_attention_heads,
                      attention_every=c.prior_attention_every),
            CodeLevel("codes_bottom", self.bottom_shape, c.num_codes_bottom, *p,
                      cond="codes_top", cond_upsample=c.top_downsample),
        ], learned=c.prior == "pixelcnn")

    # --- networks (channels-last code maps (..., h, w, D) in and out) -------------------------
    def _flat(self, t: torch.Tensor, fn) -> torch.Tensor:
        lead = t.shape[:-3]
        out = fn(t.reshape(-1, *t.shape[-3:]))
        return out.reshape(*lead, *out.shape[1:])

    def encode(self, x: torch.Tensor):
        """Bottom features ``(..., hid, h_b, w_b)`` and the top encoder output
        ``(..., h_t, w_t, D)``."""
        h_b = self.encoder_bottom(x)
        return h_b, self.encoder_top(h_b).movedim(-3, -1)

    def encode_bottom(self, h_b: torch.Tensor, z_top: torch.Tensor) -> torch.Tensor:
        """Bottom encoder output ``(..., h_b, w_b, D)`` from the bottom features and the top
        codes ``(..., h_t, w_t, D)``."""
        top = self.decoder_top(z_top.movedim(-1, -3))  # (..., hid, h_b, w_b)
        both = torch.cat([h_b, top], -3)
        return self._flat(both, self.pre_quantize_bottom).movedim(-3, -1)

    def decode(self, z_bottom: torch.Tensor, z_top: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters from both code maps (channels last)."""
        up = self._flat(z_top.movedim(-1, -3), self.upsample_top)  # (..., D, h_b, w_b)
        both = torch.cat([z_bottom.movedim(-1, -3), up], -3)  # (..., 2D, h_b, w_b)
        return self.decoder(both)

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            codes_top = pyro.sample("codes_top", self._prior("codes_top"))  # (B, h_t, w_t)
            z_top = pyro.sample("z_top", dist.Delta(self.quantizer_top.embed(codes_top),
                                                    event_dim=3))
            codes_bottom = pyro.sample("codes_bottom", self._prior("codes_bottom", codes_top))
            z_bottom = pyro.sample("z_bottom",
                                   dist.Delta(self.quantizer_bottom.embed(codes_bottom),
                                              event_dim=3))
            pyro.sample("x", self.likelihood(self.decode(z_bottom, z_top)), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        c = self.config
        with pyro.plate("data", x.shape[0]):
            h_b, z_e_top = self.encode(x)
            q_top = self.quantizer_top(z_e_top)
            sample_codes("codes_top", q_top, c.num_codes_top)
            q_bottom = self.quantizer_bottom(self.encode_bottom(h_b, q_top.z_q))
            sample_codes("codes_bottom", q_bottom, c.num_codes_bottom)
            quantizer_factors("_top", q_top, c.beta)
            quantizer_factors("_bottom", q_bottom, c.beta)

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"codes_top": (B, h_t, w_t), "codes_bottom": (B, h_b, w_b)}`` for ``x``."""
        h_b, z_e_top = self.encode(x)
        top = self.quantizer_top.quantize(z_e_top)
        z_top = self.quantizer_top.embed(top)
        bottom = self.quantizer_bottom.quantize(self.encode_bottom(h_b, z_top))
        return {"codes_top": top, "codes_bottom": bottom}

    @torch.no_grad()
    def decode_codes(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """E[x | codes] from ``{"codes_top": ..., "codes_bottom": ...}``."""
        z_top = self.quantizer_top.embed(codes["codes_top"])
        z_bottom = self.quantizer_bottom.embed(codes["codes_bottom"])
        return self.likelihood.mean(self.decode(z_bottom, z_top))
