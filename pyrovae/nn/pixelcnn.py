r"""Gated PixelCNN over maps of discrete codes (van den Oord et al. 2016, "Conditional Image
Generation with PixelCNN Decoders", §2.1-2.3), plain torch.

The network gives, for a map of codes :math:`k \in \{0..K-1\}^{H \times W}`, logits for every
position such that position :math:`i` (raster order) sees only :math:`k_{<i}`, so

.. math:: \log p(k) = \sum_i \log \mathrm{softmax}(\mathrm{logits}_i)[k_i]

is a normalised autoregressive distribution. Two stacks remove the blind spot of masked
convolutions (§2.2, Fig. 1): a *vertical* stack whose output at row r sees input rows
:math:`\le r` (it enters the horizontal stack shifted down one row, so only rows above reach
position i), and a *horizontal* stack that sees the current row left of i (strictly left in the
first layer, which also has no residual connection). Each layer uses the gated activation
:math:`\tanh(W_f * x + V_f c) \odot \sigma(W_g * x + V_g c)` (eq. 2-4) with an optional
spatial conditioning map :math:`c` (eq. 5, here a map computed from other codes, as VQ-VAE-2's
bottom prior is conditioned on the top codes). Optional :class:`~pyrovae.nn.attention.
CausalSelfAttention` blocks on the horizontal stack give the whole map as context.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import checks
from .attention import CausalSelfAttention


def _gate(a: torch.Tensor) -> torch.Tensor:
    f, g = a.chunk(2, 1)
    return torch.tanh(f) * torch.sigmoid(g)


class GatedLayer(nn.Module):
    """One gated layer: ``(v, h, cond) -> (v', h')``, all ``(N, C, H, W)``."""

    def __init__(self, channels: int, kernel: int, first: bool, cond_channels: int = 0):
        super().__init__()
        p = kernel // 2
        self.p, self.first = p, first
        self.v_conv = nn.Conv2d(channels, 2 * channels, (p + 1, 2 * p + 1))  # rows r-p..r
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_conv = nn.Conv2d(channels, 2 * channels, (1, p + 1))  # columns c-p..c
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.cond = nn.Conv2d(cond_channels, 4 * channels, 1, bias=False) if cond_channels \
            else None

    def forward(self, v, h, cond=None):
        height, width = v.shape[-2:]
        p = self.p
        v_pre = self.v_conv(F.pad(v, (p, p, p, 0)))  # (N, 2C, H, W): row r sees rows <= r
        v_down = F.pad(v_pre, (0, 0, 1, 0))[:, :, :height]  # row r now holds rows <= r - 1
        h_in = F.pad(h, (1, 0))[:, :, :, :width] if self.first else h  # first: shift right
        h_pre = self.h_conv(F.pad(h_in, (p, 0))) + self.v_to_h(v_down)
        if self.cond is not None:
            cv, ch = self.cond(cond).chunk(2, 1)
            v_pre, h_pre = v_pre + cv, h_pre + ch
        h_new = self.h_out(_gate(h_pre))
        return _gate(v_pre), h_new if self.first else h + h_new


class GatedPixelCNN(nn.Module):
    """Autoregressive logits over a ``shape = (H, W)`` map of ``num_codes`` codes.

    ``forward(codes: (N, H, W) int, cond: (N, h_c, w_c) int | None) -> logits (N, H, W, K)``.

    :param channels: width of both stacks (and of the code embedding).
    :param layers: gated layers; the first is masked (sees strictly earlier positions).
    :param kernel: odd kernel width; with ``p = kernel // 2`` each layer widens the receptive
        field by ``p`` rows up and ``p`` columns each side.
    :param attention_heads: when > 0, a causal self-attention block follows every
        ``attention_every``-th gated layer.
    :param cond_codes: when given, the network is conditioned on a second code map of this many
        codes, embedded and brought to ``shape`` by ``cond_upsample`` stride-2 transposed convs.
    """

    def __init__(self, num_codes: int, shape: tuple[int, int], channels: int = 64,
                 layers: int = 8, kernel: int = 5, attention_heads: int = 0,
                 attention_every: int = 4, cond_codes: int | None = None,
                 cond_upsample: int = 0):
        super().__init__()
        if not isinstance(kernel, int) or kernel < 3 or kernel % 2 == 0:
            raise ValueError(f"kernel: expected an odd int >= 3, got {kernel!r}")
        checks.positive_int(layers, "layers")
        self.num_codes, self.shape = num_codes, tuple(shape)
        self.embed = nn.Embedding(num_codes, channels)
        cond_channels = channels if cond_codes else 0
        self.layers = nn.ModuleList(GatedLayer(channels, kernel, i == 0, cond_channels)
                                    for i in range(layers))
        self.attention = nn.ModuleDict()
        if attention_heads:
            for i in range(layers):
                if (i + 1) % attention_every == 0 or i == layers - 1:
                    self.attention[str(i)] = CausalSelfAttention(channels, attention_heads,
                                                                 self.shape)
        self.out = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(),
                                 nn.Conv2d(channels, num_codes, 1))
        self.cond_net = None
        if cond_codes:
            mods: list[nn.Module] = [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
            for _ in range(cond_upsample):
                mods += [nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1),
                         nn.ReLU()]
            self.cond_embed = nn.Embedding(cond_codes, channels)
            self.cond_net = nn.Sequential(*mods)

    def condition(self, cond: torch.Tensor) -> torch.Tensor:
        """The conditioning map ``(N, C, H, W)`` for conditioning codes ``(N, h_c, w_c)``."""
        c = self.cond_embed(cond.long()).permute(0, 3, 1, 2)  # (N, C, h_c, w_c)
        c = self.cond_net(c)
        if tuple(c.shape[-2:]) != self.shape:
            raise ValueError(f"cond: its map comes out {tuple(c.shape[-2:])}, expected "
                             f"{self.shape}")
        return c

    def forward(self, codes: torch.Tensor, cond: torch.Tensor | None = None,
                cond_map: torch.Tensor | None = None) -> torch.Tensor:
        if codes.dim() != 3 or tuple(codes.shape[1:]) != self.shape:
            raise ValueError(f"codes: expected shape (N, {self.shape[0]}, {self.shape[1]}), "
                             f"got {tuple(codes.shape)}")
        if (self.cond_net is None) != (cond is None and cond_map is None):
            raise ValueError("cond: this network is " + ("" if self.cond_net else "not ")
                             + "conditional; pass cond exactly when it is")
        if cond_map is None and cond is not None:
            cond_map = self.condition(cond)
        x = self.embed(codes.long()).permute(0, 3, 1, 2)  # (N, C, H, W)
        v, h = x, x
        for i, layer in enumerate(self.layers):
            v, h = layer(v, h, cond_map)
            if str(i) in self.attention:
                h = self.attention[str(i)](h)
        return self.out(h).permute(0, 2, 3, 1)  # (N, H, W, K)

    @torch.no_grad()
    def sample(self, n: int, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` code maps ``(n, H, W)`` by ancestral sampling in raster order (H W passes)."""
        device = self.embed.weight.device
        codes = torch.zeros(n, *self.shape, dtype=torch.long, device=device)
        cond_map = self.condition(cond) if cond is not None else None
        for r in range(self.shape[0]):
            for c in range(self.shape[1]):
                logits = self.forward(codes, cond_map=cond_map)[:, r, c]  # (n, K)
                probs = torch.softmax(logits.double(), -1)
                codes[:, r, c] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return codes
