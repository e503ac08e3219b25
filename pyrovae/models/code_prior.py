r"""Learned priors over maps of discrete codes, as Pyro programs (van den Oord et al. 2017, §3.3;
Razavi et al. 2019, §3.3).

A VQ-VAE is trained with a uniform prior over its codes; a generative model needs a prior that
knows which code maps occur. :class:`CodePrior` is that prior: an autoregressive PixelCNN
(:class:`~pyrovae.nn.pixelcnn.GatedPixelCNN`) per level of codes, each level optionally
conditioned on an earlier one (VQ-VAE-2's bottom codes on its top codes):

.. math:: p(k^{(1)}, \dots, k^{(L)}) = \prod_l p_l\big(k^{(l)} \mid k^{(c_l)}\big), \qquad
          p_l(k) = \prod_i \mathrm{Categorical}\big(k_i \mid \mathrm{softmax}(f_l(k_{<i}))\big).

As a Pyro program it has one observed site per level and no latent sites, so
``pyrovae.fit(prior, codes, Trace_ELBO())`` is maximum likelihood on encoded data and
:func:`pyrovae.metrics.log_likelihood` gives the exact :math:`\log p` of each code map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.nn import PyroModule, pyro_method
from torch import nn

from ..nn.pixelcnn import GatedPixelCNN


class AutoregressiveCategorical(TorchDistribution):
    """The distribution over ``(H, W)`` code maps that a :class:`GatedPixelCNN` ``net`` defines.

    ``log_prob`` runs the network once on the (teacher-forced) map; ``sample`` draws ancestrally
    in raster order (``H W`` network passes). ``cond`` (``(*batch, h_c, w_c)`` codes) conditions
    a conditional network; its leading dims are the batch shape.
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, net: GatedPixelCNN, cond: torch.Tensor | None = None,
                 batch_shape=None, validate_args=None):
        self.net, self.cond = net, cond
        if batch_shape is None:
            batch_shape = cond.shape[:-2] if cond is not None else torch.Size()
        super().__init__(torch.Size(batch_shape), torch.Size(net.shape),
                         validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=2)
    def support(self):
        return constraints.independent(constraints.integer_interval(0, self.net.num_codes - 1),
                                       2)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(AutoregressiveCategorical, _instance)
        batch_shape = torch.Size(batch_shape)
        new.net = self.net
        new.cond = None if self.cond is None else \
            self.cond.expand(batch_shape + self.cond.shape[-2:])
        super(AutoregressiveCategorical, new).__init__(batch_shape, self.event_shape,
                                                       validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _flat_cond(self, shape):
        if self.cond is None:
            return None
        c = self.cond.expand(shape + self.cond.shape[-2:])
        return c.reshape(-1, *self.cond.shape[-2:])

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape[:-2], self.batch_shape)
        v = value.expand(shape + self.event_shape).reshape(-1, *self.event_shape).long()
        logits = self.net(v, self._flat_cond(shape))  # (M, H, W, K)
        lp = torch.log_softmax(logits, -1).gather(-1, v.unsqueeze(-1)).squeeze(-1)  # (M, H, W)
        return lp.sum((-2, -1)).reshape(shape)

    def sample(self, sample_shape=torch.Size()):
        shape = torch.Size(sample_shape) + self.batch_shape
        codes = self.net.sample(max(math.prod(shape), 1), self._flat_cond(shape))
        return codes[:math.prod(shape)].reshape(shape + self.event_shape)


@dataclass
class CodeLevel:
    """One level of codes and the PixelCNN that models it."""

    name: str  # the Pyro site name, e.g. "codes" or "codes_top"
    shape: tuple[int, int]  # (H, W) of the code map
    num_codes: int  # K
    channels: int = 64  # PixelCNN width
    layers: int = 8  # gated layers
    kernel: int = 5  # odd kernel width
    attention_heads: int = 0  # > 0: causal self-attention every `attention_every` layers
    attention_every: int = 4
    cond: str | None = None  # name of an earlier level this level is conditioned on
    cond_upsample: int = 0  # stride-2 upsamplings from the conditioning map to `shape`


class CodePrior(PyroModule):
    """An autoregressive prior over one or more levels of code maps (see the module docstring).

    Data for :func:`pyrovae.fit` are the levels' maps packed side by side, ``(N, sum H_l W_l)``
    (:meth:`pack`; integer values stored as floats, as datasets hold them).
    """

    def __init__(self, levels: list[CodeLevel]):
        super().__init__()
        if not levels:
            raise ValueError("levels: expected at least one CodeLevel")
        self.levels = list(levels)
        names = [lv.name for lv in self.levels]
        if len(set(names)) != len(names):
            raise ValueError(f"levels: names must be unique, got {names}")
        nets = {}
        for i, lv in enumerate(self.levels):
            cond_codes = None
            if lv.cond is not None:
                earlier = {x.name: x for x in self.levels[:i]}
                if lv.cond not in earlier:
                    raise ValueError(f"level {lv.name!r}: cond {lv.cond!r} is not an earlier "
                                     f"level (earlier: {sorted(earlier)})")
                cond_codes = earlier[lv.cond].num_codes
            nets[lv.name] = GatedPixelCNN(
                lv.num_codes, lv.shape, lv.channels, lv.layers, lv.kernel, lv.attention_heads,
                lv.attention_every, cond_codes, lv.cond_upsample)
        self.nets = nn.ModuleDict(nets)

    @property
    def num_positions(self) -> int:
        return sum(lv.shape[0] * lv.shape[1] for lv in self.levels)

    def pack(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{name: (N, H, W)}`` -> ``(N, sum H W)`` floats."""
        missing = [lv.name for lv in self.levels if lv.name not in codes]
        if missing:
            raise ValueError(f"codes: missing level(s) {missing}")
        return torch.cat([codes[lv.name].reshape(codes[lv.name].shape[0], -1).float()
                          for lv in self.levels], 1)

    def unpack(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(..., sum H W)`` -> ``{name: (..., H, W)}`` (int64)."""
        out, start = {}, 0
        for lv in self.levels:
            n = lv.shape[0] * lv.shape[1]
            out[lv.name] = x[..., start:start + n].reshape(*x.shape[:-1], *lv.shape).long()
            start += n
        return out

    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        if x.dim() != 2 or x.shape[1] != self.num_positions:
            raise ValueError(f"{name}: expected packed code maps of shape (N, "
                             f"{self.num_positions}), got {tuple(x.shape)}")
        if bool((x != x.round()).any()):
            raise ValueError(f"{name}: code maps must hold integers")
        for lv, v in zip(self.levels, self.unpack(x).values()):
            if bool(((v < 0) | (v >= lv.num_codes)).any()):
                raise ValueError(f"{name}: level {lv.name!r} needs codes in [0, "
                                 f"{lv.num_codes - 1}], got range [{int(v.min())}, "
                                 f"{int(v.max())}]")

    def distribution(self, name: str, cond: torch.Tensor | None = None
                     ) -> AutoregressiveCategorical:
        """p(codes of level ``name`` | ``cond``) as a Pyro distribution."""
        if name not in self.nets:
            raise ValueError(f"name: expected one of {list(self.nets)}, got {name!r}")
        return AutoregressiveCategorical(self.nets[name], cond)

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        codes = self.unpack(x)
        with pyro.plate("data", x.shape[0]):
            for lv in self.levels:
                cond = codes[lv.cond] if lv.cond else None
                pyro.sample(lv.name, self.distribution(lv.name, cond), obs=codes[lv.name])

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        pass  # no latent variables: the ELBO is log p(codes)

    @torch.no_grad()
    def sample(self, n: int) -> dict[str, torch.Tensor]:
        """``n`` joint draws, ``{name: (n, H, W)}``, each level given the ones it conditions on."""
        out: dict[str, torch.Tensor] = {}
        for lv in self.levels:
            out[lv.name] = self.nets[lv.name].sample(n, out[lv.cond] if lv.cond else None)
        return out

    @torch.no_grad()
    def log_prob(self, codes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-level :math:`\\log p_l(k^{(l)} \\mid k^{(c_l)})`, each ``(N,)``."""
        return {lv.name: self.distribution(lv.name, codes[lv.cond] if lv.cond else None)
                .log_prob(codes[lv.name]) for lv in self.levels}

    def bits_per_dim(self, codes: dict[str, torch.Tensor], batch_size: int = 500
                     ) -> dict[str, torch.Tensor]:
        """Per-level bits per code position, ``-log2 p_l / (H_l W_l)``, each ``(N,)``, and the
        whole prior's (``"total"``: all levels' bits over all positions)."""
        n = next(iter(codes.values())).shape[0]
        parts: dict[str, list] = {lv.name: [] for lv in self.levels}
        was = self.training
        self.eval()
        try:
            for s in range(0, n, batch_size):
                lp = self.log_prob({k: v[s:s + batch_size] for k, v in codes.items()})
                for k, v in lp.items():
                    parts[k].append(v.cpu())
        finally:
            self.train(was)
        out, total = {}, 0.0
        for lv in self.levels:
            lp = torch.cat(parts[lv.name]).double()
            out[lv.name] = -lp / (math.log(2) * lv.shape[0] * lv.shape[1])
            total = total - lp
        out["total"] = total / (math.log(2) * self.num_positions)
        return out
