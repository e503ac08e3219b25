r"""The VQ-VAE (van den Oord et al. 2017, "Neural Discrete Representation Learning") as a Pyro
program.

**Model.** At each of the ``h x w`` positions of the latent map a categorical code
:math:`k_i \in \{0..K-1\}` with a uniform prior (§3.1), its vector :math:`z_i = e_{k_i}` from the
codebook, and :math:`x \sim p_\theta(x \mid z)` from the decoder:

.. math:: p(x, k) = p_\theta(x \mid e_k) \prod_i \tfrac1K .

Sites: ``"codes"`` (Categorical, event ``(h, w)``), ``"z"`` (its code vectors, a point mass given
``codes``, event ``(h, w, D)``), ``"x"`` (observed), all inside ``pyro.plate("data")``.

**Guide.** All mass on the nearest codes of the encoder output :math:`z_e(x)` (eq. 1):
:math:`q(k \mid x) = \delta_{k^*(x)}`. The ``"z"`` site carries the straight-through value
(:func:`~pyrovae.quantize.straight_through`), so a pathwise ELBO gradient reaches the encoder.

**Objective.** The ELBO is :math:`\log p_\theta(x \mid e_{k^*}) - \mathrm{KL}`, where the KL of a
point mass to the uniform prior is the constant :math:`h w \log K` (§3.1: "the KL divergence is
constant"); Pyro's ELBOs compute and report it (``kl`` in ``fit``'s history). The codebook and
commitment terms of eq. 3 are not part of the ELBO; they enter as *guide factors*: Pyro
subtracts the guide's log-density from the ELBO, so a guide factor of :math:`+c` adds :math:`c`
to the loss. Any Pyro ELBO, ``Trace_ELBO`` included, therefore minimises

.. math:: -\log p_\theta(x \mid z_q) + h w \log K + \lVert \mathrm{sg}[z_e] - e \rVert^2
          + \beta \lVert z_e - \mathrm{sg}[e] \rVert^2,

eq. 3 up to the constant, with the codebook term replaced by EMA updates when ``ema=True``
(appendix A.1). :class:`~pyrovae.infer.TraceVQ_ELBO` is ``Trace_ELBO`` plus logging of these
terms. After training, :meth:`VQVAE.fit_prior` learns a PixelCNN prior over the codes (§3.3),
which the model then uses for ``"codes"``: samples become digits rather than noise.

**What** :func:`pyrovae.metrics.log_likelihood` **reports.** With a point-mass guide every
importance weight is the same, :math:`\log p(x, k^*) = \log p_\theta(x \mid e_{k^*}) +
\log p(k^*)`, so :math:`\mathcal L_K = \mathcal L_1` for every K: one term of
:math:`\log p(x) = \log \sum_k p(x \mid e_k) p(k)`, hence a valid but loose lower bound. Under
the uniform prior it is the reconstruction log-likelihood minus :math:`h w \log K` nats; with
the learned prior, minus the prior's code length :math:`-\log p(k^*)` instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.util import sum_rightmost
from pyro.nn import PyroModule, pyro_method

from .. import checks
from .._runtime import eval_mode, module_device
from ..data import as_dataset
from ..likelihoods import likelihood as make_likelihood
from ..nn.layers import as_shape
from ..nn.resnet import ConvMapDecoder, ConvMapEncoder
from ..protocol import register_model, resolve_config
from ..quantize import Quantized, VectorQuantizer
from .code_prior import CodeLevel, CodePrior


class CodeDelta(dist.Delta):
    """A point mass on integer code maps (``v``: int64 indices, ``event_dim`` trailing dims as
    the event): log-probability exactly 0 at ``v`` and -inf elsewhere; sampling returns ``v``
    without drawing random numbers. Discrete, so not reparameterised."""

    has_rsample = False

    @constraints.dependent_property(is_discrete=True)
    def support(self):
        return constraints.independent(constraints.nonnegative_integer, self.event_dim)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        v = self.v.expand(self.shape())
        hit = torch.where(x == v, 0.0, -math.inf)  # (..., *event)
        return sum_rightmost(hit, self.event_dim) + self.log_density


def point_mass(indices: torch.Tensor, event_dims: int = 2) -> CodeDelta:
    """The guide's q(codes | x): all mass on ``indices`` (int64, ``event_dims`` trailing dims
    as the event)."""
    return CodeDelta(indices, torch.zeros(indices.shape[:indices.dim() - event_dims],
                                          device=indices.device), event_dim=event_dims)


def vq_factor(name: str, penalty: torch.Tensor, term: str) -> None:
    """Adds ``penalty`` (batch-shaped, >= 0) to the loss of any Pyro ELBO, as a guide factor.

    Like ``pyro.factor(name, penalty, has_rsample=True)`` (the penalty is differentiated
    pathwise), with ``infer["vq_term"] = term`` so :class:`~pyrovae.infer.TraceVQ_ELBO` can log
    it. In a guide, Pyro subtracts the site's log-density from the ELBO: +penalty on the loss.
    """
    unit = dist.Unit(penalty, has_rsample=True)
    pyro.sample(name, unit, obs=unit.sample(), infer={"is_auxiliary": True, "vq_term": term})


def sample_codes(name: str, q: Quantized, num_codes: int) -> None:
    """The guide's two sites for one quantised map: ``z<suffix>`` (the straight-through code
    vectors, event ``(h, w, D)``) and ``name`` (the code indices, a point mass)."""
    suffix = name[len("codes"):]
    pyro.sample("z" + suffix, dist.Delta(q.z_q, event_dim=3))
    pyro.sample(name, point_mass(q.indices), infer={"num_codes": num_codes})


def quantizer_factors(suffix: str, q: Quantized, beta: float) -> None:
    """Guide factors for one quantiser: ``beta * commitment`` and, unless the codebook is an
    EMA, the codebook loss; each summed over the code map, per data point."""
    vq_factor("vq_commitment" + suffix, beta * q.commitment.sum((-2, -1)), "commitment")
    if q.codebook is not None:
        vq_factor("vq_codebook" + suffix, q.codebook.sum((-2, -1)), "codebook")


def _check_ints(c, positive, non_negative) -> None:
    """Config fields that must be ints >= 1 (``positive``) or >= 0 (``non_negative``)."""
    for name in positive:
        checks.positive_int(getattr(c, name), name)
    for name in non_negative:
        checks.int_at_least(getattr(c, name), name, 0)


def _check_prior(c) -> None:
    """The prior switch, its attention heads and the likelihood arguments (VQ-VAE and -2)."""
    if c.prior not in ("pixelcnn", "none"):
        raise ValueError(f"prior: expected 'pixelcnn' or 'none', got {c.prior!r}")
    if c.prior_attention_heads and c.prior_channels % c.prior_attention_heads:
        raise ValueError(f"prior_attention_heads: must divide prior_channels="
                         f"{c.prior_channels}, got {c.prior_attention_heads}")
    if not isinstance(c.likelihood_args, dict):
        raise ValueError(f"likelihood_args: expected a dict, got {c.likelihood_args!r}")


@dataclass
class VQVAEConfig:
    """Shape of a VQ-VAE. Defaults: the paper's image model at MNIST scale on a CPU."""

    input_shape: tuple[int, ...] = (1, 28, 28)  # one datum (C, H, W)
    num_codes: int = 512  # K, the codebook size
    code_dim: int = 16  # D, the size of each code vector
    downsample: int = 2  # stride-2 convs: 28x28 -> 7x7 codes
    hidden: int = 64  # conv widths (the paper uses 256)
    res_blocks: int = 2  # residual blocks in encoder and decoder (paper: 2)
    res_hidden: int = 32  # residual-block bottleneck width
    beta: float = 0.25  # commitment weight (paper: 0.25)
    ema: bool = True  # EMA codebook updates (appendix A.1) instead of the codebook loss
    decay: float = 0.99  # EMA decay gamma (paper: 0.99)
    eps: float = 1e-5  # Laplace smoothing of the EMA counts
    kmeans_init: int = 1  # training batches whose encoder outputs seed k-means (0: random)
    restart_threshold: float = 1.0  # restart codes used fewer times per batch (EMA); 0: never
    likelihood: str = "bernoulli"  # p(x|z) family in pyrovae.likelihoods.LIKELIHOODS
    likelihood_args: dict = field(default_factory=dict)  # e.g. {"scale": "learned"}
    prior: str = "pixelcnn"  # learned prior over codes ("pixelcnn"), or "none"
    prior_channels: int = 64  # PixelCNN width
    prior_layers: int = 8  # gated PixelCNN layers
    prior_kernel: int = 5  # PixelCNN kernel width (odd)
    prior_attention_heads: int = 0  # causal self-attention heads in the prior (0: none)

    def __post_init__(self):
        self.input_shape = as_shape(self.input_shape, "input_shape")
        _check_ints(self, ("num_codes", "code_dim", "hidden", "res_hidden", "prior_channels",
                           "prior_layers"), ("downsample", "res_blocks", "kmeans_init",
                                             "prior_attention_heads"))
        if len(self.input_shape) != 3:
            raise ValueError(f"input_shape: expected an image shape (C, H, W), got "
                             f"{self.input_shape}")
        side = 2 ** self.downsample
        if self.input_shape[1] % side or self.input_shape[2] % side:
            raise ValueError(f"input_shape: H and W must be divisible by 2**downsample = {side}, "
                             f"got {self.input_shape}")
        _check_prior(self)
        if self.prior_kernel < 3 or self.prior_kernel % 2 == 0:
            raise ValueError(f"prior_kernel: expected an odd int >= 3, got {self.prior_kernel!r}")


class _DiscreteLatentModel(PyroModule):
    """What VQ-VAE and VQ-VAE-2 share: the uniform/learned prior switch, prior fitting,
    encoding a dataset to codes, sampling and reconstruction."""

    code_levels: list[CodeLevel]

    def _setup_prior(self, levels: list[CodeLevel], learned: bool) -> None:
        self.code_levels = levels
        self.code_prior = CodePrior(levels) if learned else None
        # the model's p(codes) is uniform until fit_prior has trained the learned prior
        self.register_buffer("prior_fitted", torch.tensor(False))
        for lv in levels:
            self.register_buffer(f"_uniform_{lv.name}", torch.zeros(lv.num_codes))

    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        """Raises ``ValueError`` if ``x`` is not a batch of data this model can observe."""
        self.likelihood.check_data(x, name)

    def _prior(self, name: str, cond: torch.Tensor | None = None) -> dist.Distribution:
        """p(codes of level ``name``): the learned prior once fitted, else uniform."""
        if self.code_prior is not None and bool(self.prior_fitted):
            return self.code_prior.distribution(name, cond)
        shape = next(lv.shape for lv in self.code_levels if lv.name == name)
        logits = getattr(self, f"_uniform_{name}")
        return dist.Categorical(logits=logits).expand(shape).to_event(2)

    def encode_codes(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def decode_codes(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z_q(x)]: the decoder's mean at the nearest codes of ``x``."""
        return self.decode_codes(self.encode_codes(x))

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` draws of E[x | codes] with codes from the model's prior (the learned one once
        :meth:`fit_prior` has run, else uniform), ``(n, *input_shape)``."""
        checks.positive_int(n, "n")
        with eval_mode(self):
            codes: dict[str, torch.Tensor] = {}
            for lv in self.code_levels:
                d = self._prior(lv.name, codes[lv.cond] if lv.cond else None)
                codes[lv.name] = d.sample() if d.batch_shape == (n,) else d.sample((n,))
            return self.decode_codes(codes)

    @torch.no_grad()
    def encode_dataset(self, data, batch_size: int = 256, seed: int = 0
                       ) -> dict[str, torch.Tensor]:
        """Code maps ``{level: (N, h, w)}`` of every point of ``data`` (dynamically binarised
        data is binarised once with ``seed``)."""
        ds = as_dataset(data).frozen(seed).to(module_device(self))
        out: dict[str, list] = {}
        with eval_mode(self):
            for batch in ds.batches(batch_size):
                for k, v in self.encode_codes(batch["x"]).items():
                    out.setdefault(k, []).append(v)
        return {k: torch.cat(v) for k, v in out.items()}

    def fit_prior(self, data, *, validation_data=None, epochs: int | None = 10,
                  batch_size: int = 128, lr: float = 1e-3, seed: int = 0, **fit_kwargs):
        """Trains the learned prior (§3.3: "we fit a prior ... over z so that we can generate")
        by maximum likelihood on the codes of ``data``, with :func:`pyrovae.fit`; from then on
        the model's ``p(codes)`` is that prior. Returns fit's :class:`~pyrovae.History`."""
        from ..train import fit  # late: train imports the models package

        if self.code_prior is None:
            raise ValueError("fit_prior: this model was built with prior='none'")
        packed = self.code_prior.pack(self.encode_dataset(data, seed=seed))
        valid = None
        if validation_data is not None:
            valid = self.code_prior.pack(self.encode_dataset(validation_data, seed=seed + 1))
        fit_kwargs.setdefault("device", module_device(self))
        history = fit(self.code_prior, packed, pyro.infer.Trace_ELBO(), epochs=epochs,
                      batch_size=min(batch_size, packed.shape[0]), lr=lr, seed=seed,
                      validation_data=valid, **fit_kwargs)
        self.prior_fitted.fill_(True)
        return history

    def prior_bits_per_dim(self, data, seed: int = 0) -> dict[str, torch.Tensor]:
        """Bits per code position of the learned prior on the codes of ``data``, per level and
        in total, each ``(N,)`` (see :meth:`CodePrior.bits_per_dim`)."""
        if self.code_prior is None:
            raise ValueError("prior_bits_per_dim: this model was built with prior='none'")
        return self.code_prior.bits_per_dim(self.encode_dataset(data, seed=seed))


@register_model("vqvae")
class VQVAE(_DiscreteLatentModel):
    """VQ-VAE with a convolutional encoder and decoder (see the module docstring)."""

    config_class = VQVAEConfig

    def __init__(self, config: VQVAEConfig | None = None, /, **overrides):
        super().__init__()
        self.config = resolve_config(config, VQVAEConfig, overrides)
        c = self.config
        self.likelihood = make_likelihood(c.likelihood, c.input_shape, **c.likelihood_args)
        self.encoder = ConvMapEncoder(c.input_shape[0], c.code_dim, c.hidden, c.downsample,
                                      c.res_blocks, c.res_hidden)
        self.decoder = ConvMapDecoder(c.code_dim, self.likelihood.param_shape[0], c.hidden,
                                      c.downsample, c.res_blocks, c.res_hidden)
        self.quantizer = VectorQuantizer(
            c.num_codes, c.code_dim, beta=c.beta, ema=c.ema, decay=c.decay, eps=c.eps,
            kmeans_init=c.kmeans_init, restart_threshold=c.restart_threshold)
        side = 2 ** c.downsample
        self.code_shape = (c.input_shape[1] // side, c.input_shape[2] // side)
        self._setup_prior([CodeLevel("codes", self.code_shape, c.num_codes, c.prior_channels,
                                     c.prior_layers, c.prior_kernel, c.prior_attention_heads)],
                          learned=c.prior == "pixelcnn")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder output :math:`z_e(x)`, channels last: ``(..., h, w, D)``."""
        return self.encoder(x).movedim(-3, -1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters for code vectors ``z: (..., h, w, D)``."""
        return self.decoder(z.movedim(-1, -3))

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            codes = pyro.sample("codes", self._prior("codes"))  # (B, h, w)
            z = pyro.sample("z", dist.Delta(self.quantizer.embed(codes), event_dim=3))
            pyro.sample("x", self.likelihood(self.decode(z)), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            q = self.quantizer(self.encode(x))  # z_q, indices, losses: (B, h, w[, D])
            sample_codes("codes", q, self.config.num_codes)
            quantizer_factors("", q, self.config.beta)

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"codes": (B, h, w)}``: indices of the nearest codes of ``x``."""
        return {"codes": self.quantizer.quantize(self.encode(x))}

    @torch.no_grad()
    def decode_codes(self, codes: dict[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """E[x | codes] for code maps ``(B, h, w)`` (or ``{"codes": ...}``)."""
        if isinstance(codes, dict):
            codes = codes["codes"]
        return self.likelihood.mean(self.decode(self.quantizer.embed(codes)))


__all__ = ["CodeDelta", "VQVAE", "VQVAEConfig", "point_mass", "quantizer_factors", "sample_codes",
           "vq_factor"]
