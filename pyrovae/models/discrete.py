r"""VAEs with discrete latent variables: a sigmoid belief net and a one-hot categorical code.

Neither latent can be reparametrised, so Pyro's ELBOs estimate the guide's gradient with the
score function (REINFORCE; Williams 1992, Ranganath et al. 2014 eq. 3):

.. math::
    \nabla_\phi \mathcal L = \mathbb E_{q_\phi(z\mid x)}\big[\nabla_\phi \log q_\phi(z\mid x)\,
    (\log p_\theta(x, z) - \log q_\phi(z\mid x) - b)\big],

unbiased for any baseline :math:`b` that does not depend on :math:`z`. The models are meant
for :class:`~pyro.infer.TraceGraph_ELBO`, which Rao-Blackwellises (each site's score is
multiplied only by the cost terms downstream of it, Schulman et al. 2015) and applies the
baselines of Mnih and Gregor (2014) that ``config.baseline`` asks for: a decaying average of
the cost, an input-dependent neural baseline trained by squared error, or both. Other
estimators from :mod:`pyrovae.infer` run on the same models: :class:`~pyrovae.infer.
TraceScore_ELBO` (no Rao-Blackwellisation), :class:`~pyrovae.infer.TraceConcrete_ELBO`
(Concrete relaxation) and, for the categorical code, :class:`~pyrovae.infer.
TraceEnumGuide_ELBO` (exact sum over the K values).

Every latent site lives inside ``pyro.plate("data")``, so the importance-weighted
log-likelihood of :mod:`pyrovae.metrics` and the run folder's figures work unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn

from .. import checks
from ..likelihoods import likelihood as make_likelihood
from ..nn import ACTIVATIONS, MLP
from ..nn.layers import as_shape
from ..protocol import register_model, resolve_config
from .vae import _check_likelihood_args

BASELINES = ("none", "average", "neural", "average+neural")


@dataclass
class _DiscreteConfig:
    """Fields shared by :class:`BernoulliVAEConfig` and :class:`CategoricalVAEConfig`."""

    input_shape: tuple[int, ...] = (1, 28, 28)  # one datum: (C, H, W) or (D,)
    hidden: tuple[int, ...] = ()  # widths of deterministic layers in each conditional; () is
    # linear, the sigmoid belief net of Neal (1992) and Mnih and Gregor (2014)
    activation: str = "tanh"  # hidden-layer activation (pyrovae.nn.ACTIVATIONS)
    likelihood: str = "bernoulli"  # p(x | z) family in pyrovae.likelihoods.LIKELIHOODS
    likelihood_args: dict = field(default_factory=dict)  # e.g. {"scale": 1.0} for "gaussian"
    learn_prior: bool = True  # learn the prior's logits (else uniform: logits 0)
    baseline: str = "none"  # TraceGraph_ELBO baseline: "none", "average", "neural" or
    # "average+neural" (Mnih and Gregor 2014, §3.3: centring plus an input-dependent baseline)
    baseline_beta: float = 0.9  # decay of the running average of the cost (Pyro's default)
    baseline_hidden: tuple[int, ...] = (100,)  # widths of the neural baseline's MLP (tanh)

    def __post_init__(self):
        self.input_shape = as_shape(self.input_shape, "input_shape")
        self.hidden = tuple(int(h) for h in self.hidden)
        self.baseline_hidden = tuple(int(h) for h in self.baseline_hidden)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, "
                             f"got {self.activation!r}")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline: expected one of {BASELINES}, got {self.baseline!r}")
        if not (isinstance(self.baseline_beta, (int, float)) and 0 <= self.baseline_beta < 1):
            raise ValueError(f"baseline_beta: expected a number in [0, 1), "
                             f"got {self.baseline_beta!r}")
        _check_likelihood_args(self.likelihood_args)


@dataclass
class BernoulliVAEConfig(_DiscreteConfig):
    """A sigmoid belief net: binary stochastic layers, the first next to x."""

    latent_dims: tuple[int, ...] = (200,)  # units per stochastic layer, x -> top; Mnih and
    # Gregor's (2014) SBN has one layer of 200


@dataclass
class CategoricalVAEConfig(_DiscreteConfig):
    """One one-hot code of ``num_categories`` values: a mixture model with an amortised E step."""

    num_categories: int = 10  # K, the number of mixture components (clusters)


def _check_positive_ints(values, name):
    if not values or any(not checks.is_int(v) or v < 1 for v in values):
        raise ValueError(f"{name}: expected a non-empty sequence of positive ints, "
                         f"got {values!r}")


class _Baseline(nn.Module):
    """Input-dependent baseline b(input) for one guide site: ``(..., *in_shape) -> (...)``."""

    def __init__(self, in_shape, hidden):
        super().__init__()
        self.net = MLP(in_shape, 1, hidden, "tanh")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h).squeeze(-1)


class _DiscreteVAE(PyroModule):
    """Likelihood, prior logits and baselines shared by the discrete-latent VAEs."""

    def __init__(self, config, overrides):
        super().__init__()
        self.config = resolve_config(config, self.config_class, overrides)
        c = self.config
        self.likelihood = make_likelihood(c.likelihood, c.input_shape, **c.likelihood_args)

    def _set_prior_logits(self, size: int) -> None:
        if self.config.learn_prior:
            self.prior_logits = nn.Parameter(torch.zeros(size))
        else:  # uniform, and moved with the model
            self.register_buffer("prior_logits", torch.zeros(size))

    def _baselines(self, in_shapes) -> nn.ModuleList | None:
        if "neural" not in self.config.baseline:
            return None
        return nn.ModuleList(_Baseline(s, self.config.baseline_hidden) for s in in_shapes)

    def _infer(self, i: int, baseline_input: torch.Tensor) -> dict:
        """The ``infer`` dict of guide site ``i``: the baseline options TraceGraph_ELBO reads."""
        kind = self.config.baseline
        if kind == "none":
            return {}
        opts = {}
        if "average" in kind:
            opts.update(use_decaying_avg_baseline=True, baseline_beta=self.config.baseline_beta)
        if "neural" in kind:
            opts.update(nn_baseline=self.baselines[i], nn_baseline_input=baseline_input)
        return {"baseline": opts}

    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        """Raises ``ValueError`` if ``x`` is not a batch of data this model can observe."""
        self.likelihood.check_data(x, name)


@register_model("bernoulli_vae")
class BernoulliVAE(_DiscreteVAE):
    r"""Sigmoid belief net (Neal 1992) with an amortised guide: a VAE with binary latents.

    With stochastic layers :math:`z_1, \dots, z_m` (``config.latent_dims``, :math:`z_1` next
    to x), the model is

    .. math::
        z_m \sim \mathrm{Bernoulli}(\sigma(a)),\quad
        z_l \mid z_{l+1} \sim \mathrm{Bernoulli}(\sigma(f_l(z_{l+1}))),\quad
        x \mid z_1 \sim p_\theta(x \mid f_0(z_1)),

    and the guide runs the other way, :math:`q(z_1\mid x)\prod_{l>1} q(z_l\mid z_{l-1})`, each
    factor a Bernoulli with logits from a network (Mnih and Gregor 2014, §2). Sites are ``"z"``
    for one layer, ``"z1", ..., "zm"`` for several, and ``"x"``; all inside
    ``pyro.plate("data")``. With two or more layers :class:`~pyro.infer.TraceGraph_ELBO`'s
    Rao-Blackwellisation drops :math:`\log p(x\mid z_1)` from the cost of the upper layers'
    scores, which :class:`~pyro.infer.Trace_ELBO` keeps.
    """

    config_class = BernoulliVAEConfig

    def __init__(self, config: BernoulliVAEConfig | None = None, /, **overrides):
        super().__init__(config, overrides)
        c = self.config
        c.latent_dims = tuple(c.latent_dims)
        _check_positive_ints(c.latent_dims, "latent_dims")
        dims = c.latent_dims
        self.site_names = ["z"] if len(dims) == 1 else [f"z{i + 1}" for i in range(len(dims))]
        self._set_prior_logits(dims[-1])
        # guide q(z_1 | x), q(z_l | z_{l-1}); model p(x | z_1), p(z_l | z_{l+1})
        guide_in = [c.input_shape, *[(d,) for d in dims[:-1]]]
        self.encoders = nn.ModuleList(MLP(s, d, c.hidden, c.activation)
                                      for s, d in zip(guide_in, dims))
        self.decoders = nn.ModuleList(
            [MLP(dims[0], self.likelihood.param_shape, c.hidden[::-1], c.activation)]
            + [MLP(dims[i + 1], dims[i], c.hidden[::-1], c.activation)
               for i in range(len(dims) - 1)])
        self.baselines = self._baselines(guide_in)

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        dims = self.config.latent_dims
        with pyro.plate("data", x.shape[0]):
            logits = self.prior_logits.expand(x.shape[:1] + (dims[-1],))
            z = None
            for i in reversed(range(len(dims))):  # top layer first
                if z is not None:
                    logits = self.decoders[i + 1](z)  # (B, L_i)
                z = pyro.sample(self.site_names[i], dist.Bernoulli(logits=logits).to_event(1))
            pyro.sample("x", self.likelihood(self.decoders[0](z)), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            h = x
            for i, name in enumerate(self.site_names):
                logits = self.encoders[i](h)  # (B, L_i)
                h = pyro.sample(name, dist.Bernoulli(logits=logits).to_event(1),
                                infer=self._infer(i, h))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters for first-layer codes ``z: (..., latent_dims[0])``."""
        return self.decoders[0](z)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z_1] at the mean of q(z_1 | x) (probabilities in place of bits)."""
        return self.likelihood.mean(self.decode(torch.sigmoid(self.encoders[0](x))))

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = True) -> torch.Tensor:
        """``n`` draws ``(n, *input_shape)`` by ancestral sampling: E[x | z_1] with ``mean``."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        dims = self.config.latent_dims
        z = torch.bernoulli(torch.sigmoid(self.prior_logits.detach()).expand(n, dims[-1]))
        for i in reversed(range(len(dims) - 1)):
            z = torch.bernoulli(torch.sigmoid(self.decoders[i + 1](z)))
        params = self.decode(z)
        return self.likelihood.mean(params) if mean else self.likelihood(params).sample()


@register_model("categorical_vae")
class CategoricalVAE(_DiscreteVAE):
    r"""A VAE whose code is one categorical variable: "deep k-means".

    Model: :math:`c \sim \mathrm{OneHotCategorical}(\mathrm{softmax}(a))`,
    :math:`x \mid c \sim p_\theta(x \mid \mu_c)` with one learned parameter vector
    :math:`\mu_k` per category (any network of a one-hot input is a table of K outputs, so the
    decoder is that table). This is a finite mixture: with a fixed-scale Gaussian likelihood it
    is the Gaussian mixture of EM and, as the scale shrinks, of k-means; with a Bernoulli
    likelihood it is a mixture of Bernoullis. The guide :math:`q_\phi(c \mid x) =
    \mathrm{OneHotCategorical}(\mathrm{softmax}(g_\phi(x)))` is an encoder network that
    amortises EM's E step: where EM sets :math:`q(c\mid x_i) = p(c \mid x_i)` for each point,
    the encoder is trained by the ELBO to approximate it for all points at once.

    Sites: ``"c"`` (one-hot, inside ``pyro.plate("data")``) and ``"x"``. The categorical
    latent can be summed exactly: :class:`~pyrovae.infer.TraceEnumGuide_ELBO`.
    """

    config_class = CategoricalVAEConfig

    def __init__(self, config: CategoricalVAEConfig | None = None, /, **overrides):
        super().__init__(config, overrides)
        c = self.config
        k = c.num_categories
        checks.int_at_least(k, "num_categories", 2)
        self._set_prior_logits(k)
        self.encoder = MLP(c.input_shape, k, c.hidden, c.activation)
        # (K, *param_shape): the likelihood parameters of each component, small random start
        self.prototypes = nn.Parameter(0.1 * torch.randn(k, *self.likelihood.param_shape))
        self.baselines = self._baselines([c.input_shape])

    @torch.no_grad()
    def init_prototypes(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Sets each component's parameters from a distinct random data point (as k-means
        is often started). For a Bernoulli likelihood the logits of the point, smoothed."""
        k = self.config.num_categories
        if x.shape[0] < k:
            raise ValueError(f"x: need at least num_categories={k} data points, got "
                             f"{x.shape[0]}")
        self.likelihood.check_data(x, "x")
        pick = x[torch.randperm(x.shape[0], generator=generator)[:k]].to(self.prototypes)
        if self.likelihood.num_params != 1:
            raise ValueError("init_prototypes: the likelihood needs several parameter blocks "
                             "per datum; initialise prototypes yourself")
        if self.config.likelihood == "bernoulli":
            p = 0.05 + 0.9 * pick  # logits of a softened copy of the point
            pick = torch.log(p) - torch.log1p(-p)
        self.prototypes.copy_(pick)

    def decode(self, c: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters for one-hot codes ``c: (..., K) -> (..., *param_shape)``."""
        table = self.prototypes.reshape(self.config.num_categories, -1)  # (K, P)
        return (c @ table).reshape(*c.shape[:-1], *self.likelihood.param_shape)

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        k = self.config.num_categories
        with pyro.plate("data", x.shape[0]):
            logits = self.prior_logits.expand(x.shape[0], k)  # (B, K)
            c = pyro.sample("c", dist.OneHotCategorical(logits=logits))  # (B, K) or (K, 1, K)
            pyro.sample("x", self.likelihood(self.decode(c)), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.OneHotCategorical(logits=self.encoder(x)),
                        infer=self._infer(0, x))

    @torch.no_grad()
    def cluster_probs(self, x: torch.Tensor) -> torch.Tensor:
        """q(c | x) for each datum, ``(B, K)``: soft cluster assignments."""
        return torch.softmax(self.encoder(x), -1)

    @torch.no_grad()
    def posterior_probs(self, x: torch.Tensor) -> torch.Tensor:
        """The model's exact p(c | x) by Bayes' rule over the K components, ``(B, K)``."""
        k = self.config.num_categories
        eye = torch.eye(k, device=x.device, dtype=self.prototypes.dtype)
        log_lik = self.likelihood(self.decode(eye[:, None, :])).log_prob(x)  # (K, B)
        logits = torch.log_softmax(self.prior_logits, -1)[:, None] + log_lik
        return torch.softmax(logits, 0).T

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | c] for the most probable category under q(c | x)."""
        k = self.config.num_categories
        c = nn.functional.one_hot(self.encoder(x).argmax(-1), k).to(self.prototypes)
        return self.likelihood.mean(self.decode(c))

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = True) -> torch.Tensor:
        """``n`` draws ``(n, *input_shape)``: E[x | c] with ``mean``, else x itself."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        c = dist.OneHotCategorical(logits=self.prior_logits.detach()).sample((n,))
        params = self.decode(c.to(self.prototypes))
        return self.likelihood.mean(params) if mean else self.likelihood(params).sample()
