r"""VAEs with several stochastic layers: Burda et al. (2016)'s stacked VAE and the Ladder VAE.

Both are Pyro programs whose every stochastic layer is a sample site (``"z1"`` nearest the
data, ``"zL"`` at the top) inside ``pyro.plate("data")``, so ``Trace_ELBO``, the IWAE bound
(``RenyiELBO(alpha=0)``, loss ``"iwae"``) and :func:`pyrovae.metrics.log_likelihood` work on
them unchanged.

- :class:`TwoLayerVAE` ("two_layer_vae"): the generative model
  :math:`p(z_L)\prod_{l<L} p(z_l \mid z_{l+1})\,p(x \mid z_1)` with a *bottom-up* guide
  :math:`q(z_1 \mid x)\prod_{l>1} q(z_l \mid z_{l-1})` (Burda et al. 2016, §5: 784-200-200-100
  then 100-100-100-50, tanh). Its guide samples z1 before z2, the opposite order to the model,
  so ``TraceMeanField_ELBO`` would be biased on it (Pyro warns): use ``Trace_ELBO`` or IWAE.
- :class:`LadderVAE` ("ladder_vae"): Sønderby et al. (2016). A deterministic bottom-up pass
  gives :math:`(\hat\mu_l, \hat\sigma_l)` at every layer; the guide then runs *top-down* with
  the model's own conditional priors :math:`p(z_l \mid z_{l+1}) = \mathcal N(\mu_{p,l},
  \sigma_{p,l}^2)` and merges them with the bottom-up terms by precision
  (:func:`precision_weighted_merge`, eqs. 18-19 of the paper). Model and guide share the
  top-down networks and sample in the same order, so ``TraceMeanField_ELBO``'s analytic KLs
  are exact in expectation. Batch norm in every deterministic layer; KL warm-up with the
  ``warmup_elbo`` loss or the :class:`pyrovae.infer.KLWarmup` callback.

References: Burda, Grosse and Salakhutdinov (2016) Importance weighted autoencoders, ICLR;
Sønderby, Raiko, Maaløe, Sønderby and Winther (2016) Ladder variational autoencoders, NeurIPS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn

from .. import checks
from .. import nn as nets
from ..likelihoods import LIKELIHOODS
from ..likelihoods import likelihood as make_likelihood
from ..nn.layers import as_shape
from ..protocol import register_model, resolve_config
from .guide_path import GuidePath, SharesGuidePath
from .vae import _check_likelihood_args, _one_of, _positive_ints, full_precision


def precision_weighted_merge(loc1: torch.Tensor, scale1: torch.Tensor, loc2: torch.Tensor,
                             scale2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The normalised product of two Gaussian densities (Sønderby et al. 2016, eqs. 18-19).

    :math:`\mathcal N(\mu_1, \sigma_1^2)\,\mathcal N(\mu_2, \sigma_2^2) \propto
    \mathcal N(\mu, \sigma^2)` with :math:`\sigma^2 = (\sigma_1^{-2} + \sigma_2^{-2})^{-1}` and
    :math:`\mu = (\mu_1\sigma_1^{-2} + \mu_2\sigma_2^{-2})\,\sigma^2`. Returns ``(loc, scale)``,
    broadcast. The Ladder VAE's posterior merges the bottom-up estimate with the top-down prior.
    """
    p1, p2 = scale1.pow(-2), scale2.pow(-2)  # precisions
    var = 1.0 / (p1 + p2)
    return (loc1 * p1 + loc2 * p2) * var, var.sqrt()


def _widths(value, name: str) -> tuple[tuple[int, ...], ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name}: expected a sequence of sequences of positive ints, "
                         f"got {value!r}")
    return tuple(_positive_ints(v, name, allow_empty=False) for v in value)


def _check_mlp_stack(c) -> None:
    """The fields both MLP stacks' configs share: activation, likelihood and its arguments,
    batch_norm, min_scale."""
    _one_of(c.activation, nets.ACTIVATIONS, "activation")
    _one_of(c.likelihood, LIKELIHOODS, "likelihood")
    _check_likelihood_args(c.likelihood_args)
    if not isinstance(c.batch_norm, bool):
        raise ValueError(f"batch_norm: expected True or False, got {c.batch_norm!r}")
    checks.number_in(c.min_scale, "min_scale", 0, 1, bounds="[]")


@dataclass
class TwoLayerVAEConfig:
    """Shape of a stacked VAE; defaults are Burda et al. (2016, §5)'s two-stochastic-layer
    MNIST model: x -200-200- z1(100) -100-100- z2(50), tanh, mirrored in the generative model."""

    input_shape: tuple[int, ...] = (1, 28, 28)  # one datum: (C, H, W) or (D,)
    latent_dims: tuple[int, ...] = (100, 50)  # sizes of z1 (bottom) ... zL (top)
    hidden: tuple[tuple[int, ...], ...] = ((200, 200), (100, 100))  # widths below each z_l
    activation: str = "tanh"  # hidden-layer activation (pyrovae.nn.ACTIVATIONS)
    batch_norm: bool = False  # BatchNorm after each hidden linear layer
    likelihood: str = "bernoulli"  # p(x | z1) family in pyrovae.likelihoods.LIKELIHOODS
    likelihood_args: dict = field(default_factory=dict)  # e.g. {"scale": "learned"}
    min_scale: float = 1e-4  # floor on every standard deviation

    def __post_init__(self):
        self.input_shape = as_shape(self.input_shape, "input_shape")
        self.latent_dims = _positive_ints(self.latent_dims, "latent_dims", allow_empty=False)
        self.hidden = _widths(self.hidden, "hidden")
        if len(self.hidden) != len(self.latent_dims):
            raise ValueError(f"hidden: expected one tuple of widths per stochastic layer "
                             f"({len(self.latent_dims)}), got {len(self.hidden)}")
        _check_mlp_stack(self)


class _Ancestral:
    """``model`` and ``sample`` for the stacks here: both run the generative pass
    ``_generate(x)``, which scores ``x`` or (``x=None``) draws it."""

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            self._generate(x)

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = True) -> torch.Tensor:
        """``n`` draws ``(n, *input_shape)`` from p(x): E[x | z1] with ``mean``, else x."""
        checks.positive_int(n, "n")
        with pyro.plate("data", n):
            xs, params = self._generate(None)
        return self.likelihood.mean(params) if mean else xs


@register_model("two_layer_vae")
class TwoLayerVAE(_Ancestral, PyroModule):
    r"""Stacked VAE with a bottom-up guide (Burda et al. 2016, §5; two layers by default).

    Model: :math:`z_L \sim \mathcal N(0, I)`, :math:`z_l \mid z_{l+1} \sim
    \mathcal N(\mu_l(z_{l+1}), \sigma_l^2(z_{l+1}))`, :math:`x \sim p(x \mid z_1)`.
    Guide: :math:`z_1 \sim q(z_1 \mid x)`, :math:`z_l \sim q(z_l \mid z_{l-1})`, diagonal
    Gaussians. Trained as a VAE with ``Trace_ELBO`` or as an IWAE with loss ``"iwae"``
    (Burda et al.'s two-layer IWAE, k = 50: 82.90 nats on MNIST).
    """

    config_class = TwoLayerVAEConfig

    def __init__(self, config: TwoLayerVAEConfig | None = None, /, **overrides):
        super().__init__()
        self.config = c = resolve_config(config, TwoLayerVAEConfig, overrides)
        self.likelihood = make_likelihood(c.likelihood, c.input_shape, **c.likelihood_args)
        ins = [c.input_shape] + [(d,) for d in c.latent_dims[:-1]]  # input of each q layer
        self.up = nn.ModuleList(
            nets.MLP(i, 2 * d, h, c.activation, c.batch_norm)
            for i, d, h in zip(ins, c.latent_dims, c.hidden))
        outs = [self.likelihood.param_shape] + [2 * d for d in c.latent_dims[:-1]]
        self.down = nn.ModuleList(  # down[l]: z_{l+1} -> parameters of layer l below it
            nets.MLP(d, o, h[::-1], c.activation, c.batch_norm)
            for d, o, h in zip(c.latent_dims, outs, c.hidden))
        self.head = nets.NormalHead(c.min_scale)
        self.register_buffer("prior_loc", torch.zeros(c.latent_dims[-1]))
        self.register_buffer("prior_scale", torch.ones(c.latent_dims[-1]))

    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        self.likelihood.check_data(x, name)

    def _generate(self, x):
        """The generative model from the top; ``x=None`` samples it."""
        c = self.config
        L = len(c.latent_dims)
        down, head = self.down, self.head  # read once: see LadderVAE.top_down
        z = pyro.sample(f"z{L}", dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
        for l in range(L - 1, 0, -1):  # noqa: E741  (layer index as in the papers)
            loc, scale = head(full_precision(down[l](z)))  # (..., B, d_l)
            z = pyro.sample(f"z{l}", dist.Normal(loc, scale).to_event(1))
        params = full_precision(down[0](z))  # (..., B, *param_shape)
        return pyro.sample("x", self.likelihood(params), obs=x), params

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            h, head = x, self.head
            for l, net in enumerate(self.up, start=1):  # noqa: E741
                loc, scale = head(full_precision(net(h)))  # (..., B, d_l)
                h = pyro.sample(f"z{l}", dist.Normal(loc, scale).to_event(1))


@dataclass
class LadderVAEConfig:
    """Shape of a Ladder VAE. Defaults follow Sønderby et al. (2016)'s MNIST model: five
    stochastic layers of 64, 32, 16, 8, 4 units with deterministic layers of 512, 256, 128, 64,
    32 units between them and batch norm; the depth of each block (2) and the leaky ReLU are
    our choices."""

    input_shape: tuple[int, ...] = (1, 28, 28)  # one datum: (C, H, W) or (D,)
    latent_dims: tuple[int, ...] = (64, 32, 16, 8, 4)  # sizes of z1 (bottom) ... zL (top)
    hidden: tuple[int, ...] = (512, 256, 128, 64, 32)  # width of the MLP below each z_l
    depth: int = 2  # hidden layers per deterministic block
    activation: str = "leaky_relu"  # hidden-layer activation (pyrovae.nn.ACTIVATIONS)
    batch_norm: bool = True  # BatchNorm after each hidden linear layer (the paper's choice)
    likelihood: str = "bernoulli"  # p(x | z1) family in pyrovae.likelihoods.LIKELIHOODS
    likelihood_args: dict = field(default_factory=dict)  # e.g. {"scale": "learned"}
    min_scale: float = 1e-4  # floor on every standard deviation

    def __post_init__(self):
        self.input_shape = as_shape(self.input_shape, "input_shape")
        self.latent_dims = _positive_ints(self.latent_dims, "latent_dims", allow_empty=False)
        self.hidden = _positive_ints(self.hidden, "hidden", allow_empty=False)
        if len(self.hidden) != len(self.latent_dims):
            raise ValueError(f"hidden: expected one width per stochastic layer "
                             f"({len(self.latent_dims)}), got {len(self.hidden)}")
        checks.positive_int(self.depth, "depth")
        _check_mlp_stack(self)


class _Block(nn.Module):
    """``depth`` layers of Linear -> [BatchNorm] -> activation, ``(..., *in) -> (..., width)``."""

    def __init__(self, in_shape, width, depth, activation_name, batch_norm):
        super().__init__()
        self.mlp = nets.MLP(in_shape, width, (width,) * (depth - 1), activation_name,
                            batch_norm)
        self.post = nn.Sequential(*([nn.BatchNorm1d(width)] if batch_norm else []),
                                  nets.activation(activation_name))

    def forward(self, x):
        h, lead = nets.flatten_leading(self.mlp(x), 1)  # (M, width)
        return self.post(h).reshape(*lead, h.shape[-1])


@register_model("ladder_vae")
class LadderVAE(SharesGuidePath, _Ancestral, PyroModule):
    r"""Ladder VAE (Sønderby et al. 2016) with any number of stochastic layers.

    Generative model: :math:`p(z_L) = \mathcal N(0, I)`,
    :math:`p(z_l \mid z_{l+1}) = \mathcal N(\mu_{p,l}, \sigma_{p,l}^2)` from a top-down MLP of
    :math:`z_{l+1}`, and :math:`p(x \mid z_1)`.

    Inference: the bottom-up pass :math:`d_l = \mathrm{MLP}_l(d_{l-1})`, :math:`d_0 = x`, gives
    :math:`(\hat\mu_l, \hat\sigma_l)` from :math:`d_l`. Then top-down, with the *same* top-down
    networks as the model, :math:`q(z_L \mid x) = \mathcal N(\hat\mu_L, \hat\sigma_L^2)` and
    :math:`q(z_l \mid z_{l+1}, x) = \mathcal N(\mu_{q,l}, \sigma_{q,l}^2)` with
    :math:`\sigma_{q,l}^2 = (\hat\sigma_l^{-2} + \sigma_{p,l}^{-2})^{-1}` and
    :math:`\mu_{q,l} = (\hat\mu_l\hat\sigma_l^{-2} + \mu_{p,l}\sigma_{p,l}^{-2})\sigma_{q,l}^2`
    (eqs. 18-19, :func:`precision_weighted_merge`). Sites ``"z1"`` ... ``"zL"``, ``"x"``.
    The model replayed on the guide's draws reuses the guide's top-down priors
    (:class:`~pyrovae.models.guide_path.GuidePath`).
    """

    config_class = LadderVAEConfig

    def __init__(self, config: LadderVAEConfig | None = None, /, **overrides):
        super().__init__()
        self.config = c = resolve_config(config, LadderVAEConfig, overrides)
        self.likelihood = make_likelihood(c.likelihood, c.input_shape, **c.likelihood_args)
        ins = [c.input_shape] + [(w,) for w in c.hidden[:-1]]
        self.up = nn.ModuleList(_Block(i, w, c.depth, c.activation, c.batch_norm)
                                for i, w in zip(ins, c.hidden))
        self.up_heads = nn.ModuleList(nn.Linear(w, 2 * d)
                                      for w, d in zip(c.hidden, c.latent_dims))
        # top-down: z_{l+1} -> block of width hidden[l] -> (mu_p, sigma_p) of z_l, l = 1..L-1
        self.down = nn.ModuleList(_Block(c.latent_dims[l + 1], c.hidden[l], c.depth,
                                         c.activation, c.batch_norm)
                                  for l in range(len(c.latent_dims) - 1))  # noqa: E741
        self.down_heads = nn.ModuleList(nn.Linear(c.hidden[l], 2 * c.latent_dims[l])
                                        for l in range(len(c.latent_dims) - 1))  # noqa: E741
        self.decoder = nets.MLP(c.latent_dims[0], self.likelihood.param_shape,
                                (c.hidden[0],) * c.depth, c.activation, c.batch_norm)
        self.head = nets.NormalHead(c.min_scale)
        self.register_buffer("prior_loc", torch.zeros(c.latent_dims[-1]))
        self.register_buffer("prior_scale", torch.ones(c.latent_dims[-1]))

    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        self.likelihood.check_data(x, name)

    def top_down(self, l: int, z_above: torch.Tensor, nets=None):  # noqa: E741
        """``(mu_p, sigma_p)`` of ``p(z_l | z_{l+1})`` (1-based ``l < L``), ``(..., d_l)``.
        ``nets``: ``(down, down_heads, head)`` read once by the caller (a PyroModule
        registers a plain submodule's parameters at every attribute access)."""
        down, heads, head = nets if nets is not None else self._td_nets()
        return head(full_precision(heads[l - 1](down[l - 1](z_above))))

    def _td_nets(self):
        return self.down, self.down_heads, self.head

    def bottom_up(self, x: torch.Tensor):
        """``[(mu_hat_l, sigma_hat_l)]`` for l = 1..L, each ``(B, d_l)``."""
        out, h, normal = [], x, self.head
        for block, head in zip(self.up, self.up_heads):
            h = block(h)  # (B, hidden_l)
            out.append(normal(full_precision(head(h))))
        return out

    def _generate(self, x):
        L = len(self.config.latent_dims)
        nets = self._td_nets()
        path = GuidePath(self, guide=False)  # the guide's top-down priors, while z is its z
        z = pyro.sample(f"z{L}", dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
        path.follow(0, z)
        for i, l in enumerate(range(L - 1, 0, -1), start=1):  # noqa: E741
            shared = path.entry(i)
            loc, scale = (shared["loc"], shared["scale"]) if shared is not None else \
                self.top_down(l, z, nets)  # (..., B, d_l)
            z = pyro.sample(f"z{l}", dist.Normal(loc, scale).to_event(1))
            path.follow(i, z)
        params = full_precision(self.decoder(z))  # (..., B, *param_shape)
        return pyro.sample("x", self.likelihood(params), obs=x), params

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        L = len(self.config.latent_dims)
        up, nets = self.bottom_up(x), self._td_nets()
        path = GuidePath(self, guide=True)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(f"z{L}", dist.Normal(*up[L - 1]).to_event(1))
            path.add(z=z)
            for l in range(L - 1, 0, -1):  # noqa: E741
                ploc, pscale = self.top_down(l, z, nets)  # p(z_l | z_{l+1}), (..., B, d_l)
                loc, scale = precision_weighted_merge(*up[l - 1], ploc, pscale)
                z = pyro.sample(f"z{l}", dist.Normal(loc, scale).to_event(1))
                path.add(loc=ploc, scale=pscale, z=z)
        path.close()
