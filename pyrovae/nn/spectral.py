r"""Spectral-norm estimates of convolution weights and NVAE's smoothness penalty (Vahdat and
Kautz 2020, §3.2; power iteration as in Miyato et al. 2018). Plain torch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def power_iteration(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                    iterations: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Largest singular value of ``weight`` reshaped to ``(out, -1)`` by power iteration.

    Alternates :math:`v \leftarrow W^\top u / \|W^\top u\|`, :math:`u \leftarrow Wv/\|Wv\|`
    ``iterations`` times from the given ``u: (out,)``, ``v: (in,)`` (no gradient through them)
    and returns :math:`(\sigma = u^\top W v, u, v)`; :math:`\sigma` is differentiable in ``W``
    with gradient :math:`u v^\top`, the gradient of the spectral norm (Miyato et al. 2018;
    NVAE §3.2 uses it, one iteration per step from persistent vectors).
    """
    w = weight.reshape(weight.shape[0], -1)  # (out, in)
    with torch.no_grad():
        wd = w.detach()
        for _ in range(iterations):
            v = F.normalize(wd.t() @ u, dim=0, eps=1e-12)  # (in,)
            u = F.normalize(wd @ v, dim=0, eps=1e-12)  # (out,)
    return u @ (w @ v), u, v


class SpectralRegularizer:
    r"""NVAE's smoothness penalty (§3.2): :math:`\mathcal L_{SR} = \sum_i s^{(i)}`, the sum of
    the largest singular values of every convolution weight reshaped to 2-D, estimated by
    :func:`power_iteration` with vectors kept between calls; plus a batch-norm penalty
    :math:`\sum_j \max_c |\gamma_{j,c}|` over the BN layers' scales (NVAE §3.2 regularises
    the BN scaling parameters because they can grow and make training unstable; the max
    over channels is our choice of norm). ``penalties()`` returns both as differentiable
    scalars."""

    def __init__(self, module: nn.Module, iterations: int = 1, init_iterations: int = 20):
        self.convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        self.norms = [m for m in module.modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
        self.iterations, self.init_iterations = iterations, init_iterations
        self.vectors: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def _init(self):
        g = torch.Generator().manual_seed(0)
        self.vectors = []
        for m in self.convs:
            w = m.weight.reshape(m.weight.shape[0], -1)
            u = F.normalize(torch.randn(w.shape[0], generator=g), dim=0).to(w)
            v = F.normalize(torch.randn(w.shape[1], generator=g), dim=0).to(w)
            self.vectors.append(power_iteration(w, u, v, self.init_iterations)[1:])

    def penalties(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.vectors is None:
            self._init()
        sigmas = []
        for i, m in enumerate(self.convs):
            u, v = self.vectors[i]
            s, u, v = power_iteration(m.weight, u.to(m.weight), v.to(m.weight),
                                      self.iterations)
            self.vectors[i] = (u, v)
            sigmas.append(s)
        zero = next(iter(m.weight for m in self.convs)).new_zeros(()) if self.convs else \
            torch.zeros(())
        spectral = torch.stack(sigmas).sum() if sigmas else zero
        bn = torch.stack([m.weight.abs().max() for m in self.norms]).sum() if self.norms \
            else zero
        return spectral, bn

    def state_dict(self) -> dict:
        return {"vectors": None if self.vectors is None else
                [(u.cpu(), v.cpu()) for u, v in self.vectors]}

    def load_state_dict(self, state: dict) -> None:
        vec = state.get("vectors")
        self.vectors = None if vec is None else [(u.clone(), v.clone()) for u, v in vec]
