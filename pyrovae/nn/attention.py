"""Causal multi-head self-attention over a 2-D map in raster order (plain torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import checks


class CausalSelfAttention(nn.Module):
    r"""Residual multi-head self-attention over the ``H x W`` positions of a map, read in raster
    order, in which position :math:`i` attends only to positions :math:`j \le i`.

    ``h: (N, C, H, W) -> h + proj(attn(LayerNorm(h + pos)))`` with a learned positional
    embedding ``pos: (H W, C)`` and scaled dot-product attention (Vaswani et al. 2017, eq. 1)
    over ``heads`` heads. Used inside an autoregressive network on features that already depend
    only on inputs strictly before their position (the PixelCNN stream after its first, masked
    layer), the output at :math:`i` still depends only on inputs before :math:`i`; this is how
    VQ-VAE-2's top-level prior reaches the whole map (Razavi et al. 2019, §3.3; Chen et al. 2018,
    PixelSNAIL).
    """

    def __init__(self, channels: int, heads: int, shape: tuple[int, int]):
        super().__init__()
        if not checks.is_int(heads) or heads < 1 or channels % heads:
            raise ValueError(f"heads: expected a positive int dividing channels={channels}, "
                             f"got {heads!r}")
        self.heads, self.shape = heads, tuple(shape)
        self.norm = nn.LayerNorm(channels)
        self.pos = nn.Parameter(torch.zeros(self.shape[0] * self.shape[1], channels))
        nn.init.normal_(self.pos, std=0.02)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n, c, height, width = h.shape
        if (height, width) != self.shape:
            raise ValueError(f"h: expected a {self.shape} map, got {(height, width)}")
        x = self.norm(h.flatten(2).transpose(1, 2) + self.pos)  # (N, HW, C)
        q, k, v = (t.reshape(n, height * width, self.heads, c // self.heads).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, -1))  # (N, heads, HW, C / heads) each
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (N, heads, HW, C/heads)
        out = self.proj(out.transpose(1, 2).reshape(n, height * width, c))  # (N, HW, C)
        return h + out.transpose(1, 2).reshape(n, c, height, width)
