r"""Discretised logistic likelihoods for 8-bit images: one logistic per value (Salimans et al.
2017, §2.1, the bins of width 2/255 on [-1, 1]) and the mixture of them, with PixelCNN++'s
coupling of a pixel's channels (their eq. 3)."""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution

from .. import checks
from . import Likelihood


class DiscretizedLogisticDistribution(TorchDistribution):
    r"""Logistic distribution discretised to ``num_bins`` equally spaced values in [0, 1].

    For bin centres :math:`x_k = k / (K-1)`, half-width :math:`h = 1 / (2(K-1))`, and
    :math:`\sigma` the logistic sigmoid (Salimans et al. 2017, PixelCNN++, eq. 2):

    .. math::
        P(x_k) = \sigma\!\left(\frac{x_k + h - \mu}{s}\right)
               - \sigma\!\left(\frac{x_k - h - \mu}{s}\right),

    with the lowest bin taking all mass below and the highest all mass above. The interior
    difference is evaluated as
    :math:`\log\sigma(a) + \log\sigma(-b) + \log(1 - e^{-(a-b)})`, exact and free of
    cancellation for any :math:`\mu` (from :math:`\sigma(a)-\sigma(b) =
    \sigma(a)(1-\sigma(b))(1-e^{b-a})`).
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = False

    def __init__(self, loc, scale, num_bins: int = 256, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        if int(num_bins) < 2:
            raise ValueError(f"num_bins: expected an int >= 2, got {num_bins!r}")
        self.num_bins = int(num_bins)
        super().__init__(self.loc.shape, validate_args=validate_args)

    @constraints.dependent_property
    def support(self):
        return constraints.interval(0.0, 1.0)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiscretizedLogisticDistribution, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        new.num_bins = self.num_bins
        super(DiscretizedLogisticDistribution, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value):
        half = 0.5 / (self.num_bins - 1)
        a = (value + half - self.loc) / self.scale  # upper bin edge, standardised
        b = (value - half - self.loc) / self.scale  # lower bin edge, standardised
        width = torch.as_tensor(2 * half, dtype=a.dtype, device=a.device) / self.scale
        interior = F.logsigmoid(a) + F.logsigmoid(-b) + torch.log(-torch.expm1(-width))
        low = F.logsigmoid(a)  # P(X <= x_0 + h)
        high = F.logsigmoid(-b)  # P(X >= x_{K-1} - h)
        return torch.where(value <= half, low, torch.where(value >= 1 - half, high, interior))

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
            u = u.clamp(1e-6, 1 - 1e-6)
            x = self.loc + self.scale * (torch.log(u) - torch.log1p(-u))
            return torch.round(x.clamp(0, 1) * (self.num_bins - 1)) / (self.num_bins - 1)

    @property
    def mean(self):
        # E[X] = sum_{k=1}^{K-1} P(X >= x_k) / (K-1), accumulated one threshold at a time so
        # memory stays that of one (batch) tensor.
        k_minus_1 = self.num_bins - 1
        total = torch.zeros_like(self.loc)
        for k in range(1, self.num_bins):
            lower_edge = (k - 0.5) / k_minus_1
            total = total + torch.sigmoid((self.loc - lower_edge) / self.scale)
        return total / k_minus_1


class DiscretizedLogistic(Likelihood):
    """8-bit images (values k/255 in [0, 1]); decoder outputs ``(loc, raw log-scale)``."""

    num_params = 2

    def __init__(self, event_shape, num_bins: int = 256, min_log_scale: float = -7.0):
        super().__init__(event_shape)
        self.num_bins = int(num_bins)
        self.min_log_scale = float(min_log_scale)
        self.support_text = f"values k/{self.num_bins - 1} in [0, 1] (scale 8-bit pixels by 1/255)"

    def forward(self, params):
        loc, log_scale = self._split(params)
        scale = torch.exp(log_scale.clamp(min=self.min_log_scale))
        return DiscretizedLogisticDistribution(loc, scale, self.num_bins).to_event(
            len(self.event_shape)
        )

    def outside_support(self, x):
        k = x * (self.num_bins - 1)
        return ~torch.isfinite(x) | (x < 0) | (x > 1) | ((k - k.round()).abs() > 1e-3)


def _pairs(channels: int) -> list[tuple[int, int]]:
    """(channel, earlier channel) pairs in PixelCNN++'s order: (1,0), (2,0), (2,1), (3,0), ..."""
    return [(c, e) for c in range(1, channels) for e in range(c)]


class CoupledLogisticMixture(TorchDistribution):
    r"""PixelCNN++'s distribution of a multi-channel value (Salimans et al. 2017, §2.2 and
    eq. 3): M mixture components *shared* by the C channels of a position; within a
    component the channels are discretised logistics whose locations depend linearly on the
    earlier channels' values,

    .. math::
        P(x) = \sum_{m=1}^{M} \pi_m \prod_{c=1}^{C}
               P_{\mathrm{DL}}\Big(x_c \,\Big|\, \mu_{m,c} + \sum_{c' < c} a_{m,c,c'}\,x_{c'},
               \; s_{m,c}\Big)

    (for RGB: :math:`\mu_G + \alpha R` and :math:`\mu_B + \beta R + \gamma G`), with
    :math:`P_{\mathrm{DL}}` of :class:`DiscretizedLogisticDistribution`. Event shape
    ``(C, *rest)``, one mixture per position of ``rest`` (a pixel).

    Mixture dim last: ``logits: (..., *rest, M)``; ``loc``, ``scale: (..., C, *rest, M)``;
    ``coeffs: (..., C(C-1)/2, *rest, M)`` in the order of :func:`_pairs`; ``event_dim =
    len((C, *rest))``.
    """

    arg_constraints = {"logits": constraints.real, "loc": constraints.real,
                       "scale": constraints.positive, "coeffs": constraints.real}
    has_rsample = False

    def __init__(self, logits, loc, scale, coeffs, event_dim: int, num_bins: int = 256,
                 validate_args=None):
        rest = event_dim  # dims of the event (C, *rest)
        if not checks.is_int(rest) or rest < 1 \
                or loc.shape != scale.shape or loc.dim() < rest + 1 or logits.dim() < rest:
            raise ValueError(f"loc, scale, logits: expected (..., C, *rest, M), the same, and "
                             f"(..., *rest, M) for event_dim = len((C, *rest)) = {event_dim!r}, "
                             f"got {tuple(loc.shape)}, {tuple(scale.shape)} and "
                             f"{tuple(logits.shape)}")
        self.event_dims = rest
        C = loc.shape[-rest - 1]
        if coeffs.shape[-rest - 1] != C * (C - 1) // 2:
            raise ValueError(f"coeffs: expected {C * (C - 1) // 2} pairs for {C} channels at "
                             f"dim {-rest - 1}, got shape {tuple(coeffs.shape)}")
        if int(num_bins) < 2:
            raise ValueError(f"num_bins: expected an int >= 2, got {num_bins!r}")
        self.logits, self.loc, self.scale, self.coeffs = logits, loc, scale, coeffs
        self.num_bins = int(num_bins)
        event_shape = loc.shape[-rest - 1:-1]
        batch_shape = torch.broadcast_shapes(loc.shape[:-rest - 1], logits.shape[:-rest],
                                             coeffs.shape[:-rest - 1])
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @constraints.dependent_property
    def support(self):
        return constraints.independent(constraints.interval(0.0, 1.0), self.event_dims)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        e = self.event_dims
        return CoupledLogisticMixture(
            self.logits.expand(batch_shape + self.logits.shape[-e:]),
            self.loc.expand(batch_shape + self.loc.shape[-e - 1:]),
            self.scale.expand(batch_shape + self.scale.shape[-e - 1:]),
            self.coeffs.expand(batch_shape + self.coeffs.shape[-e - 1:]),
            e, self.num_bins, validate_args=self.__dict__.get("_validate_args"))

    def _channel(self, t: torch.Tensor, c: int) -> torch.Tensor:
        return t.select(-self.event_dims - 1, c)  # (..., *rest, M)

    def _location(self, c: int, xs) -> torch.Tensor:
        """Channel ``c``'s locations ``(..., *rest, M)`` given the earlier channels' values
        ``xs[e]: (..., *rest, 1 or M)``."""
        mu = self._channel(self.loc, c)
        for i, (cc, e) in enumerate(_pairs(self.event_shape[0])):
            if cc == c:
                mu = mu + self._channel(self.coeffs, i) * xs[e]
        return mu

    def log_prob(self, value):
        x = value.unsqueeze(-1)  # (..., C, *rest, 1): broadcasts against the M components
        xs = [x.select(-self.event_dims - 1, c) for c in range(self.event_shape[0])]
        lp = torch.log_softmax(self.logits, -1)  # (..., *rest, M)
        for c in range(self.event_shape[0]):
            lp = lp + DiscretizedLogisticDistribution(
                self._location(c, xs), self._channel(self.scale, c), self.num_bins
            ).log_prob(xs[c])
        lp = torch.logsumexp(lp, -1)  # (..., *rest)
        return lp.sum(tuple(range(-(self.event_dims - 1), 0))) if self.event_dims > 1 else lp

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)  # (S..., batch..., C, *rest)
        e = self.event_dims
        with torch.no_grad():
            k = dist.Categorical(logits=self.logits).sample(sample_shape)  # (S..., ..., *rest)
            k = k.expand(shape[:-e] + shape[-e + 1:] if e > 1 else shape[:-e]).unsqueeze(-1)

            def pick(t):  # (..., *rest, M) -> (S..., ..., *rest): the drawn component's value
                return t.expand(*k.shape[:-1], t.shape[-1]).gather(-1, k).squeeze(-1)

            xs, grid = [], self.num_bins - 1
            pairs = _pairs(self.event_shape[0])
            for c in range(self.event_shape[0]):
                mu = pick(self._channel(self.loc, c))
                for i in (i for i, (cc, _) in enumerate(pairs) if cc == c):
                    mu = mu + pick(self._channel(self.coeffs, i)) * xs[pairs[i][1]]
                u = torch.rand(mu.shape, dtype=mu.dtype, device=mu.device).clamp(1e-6, 1 - 1e-6)
                y = mu + pick(self._channel(self.scale, c)) * (torch.log(u) - torch.log1p(-u))
                xs.append(torch.round(y.clamp(0, 1) * grid) / grid)
            return torch.stack(xs, -e)

    @property
    def mean(self):
        r"""Exact for the first channel; for later ones, the plug-in value with the earlier
        channels replaced by their conditional means within each component (the discretised
        logistic's mean is not linear in its location, so E[x] has no closed form here)."""
        means = []
        for c in range(self.event_shape[0]):
            means.append(DiscretizedLogisticDistribution(
                self._location(c, means), self._channel(self.scale, c), self.num_bins
            ).mean)  # (..., *rest, M)
        w = torch.softmax(self.logits, -1)
        return torch.stack([(w * m).sum(-1) for m in means], -self.event_dims)


class DiscretizedLogisticMixture(Likelihood):
    r"""8-bit images under a mixture of M discretised logistics (Salimans et al. 2017,
    PixelCNN++, §2.1-2.2; the output of NVAE for 8-bit images, Vahdat and Kautz 2020):

    .. math::
        P(x) = \sum_{m=1}^{M} \pi_m\, P_{\mathrm{DL}}(x \mid \mu_m, s_m)

    per value, with :math:`P_{\mathrm{DL}}` of :class:`DiscretizedLogisticDistribution`.
    One channel (or ``coupled=False``): every channel has its own mixture and the decoder
    outputs ``(M logits, M locs, M raw log-scales)`` stacked by channel block,
    ``param_shape = (3 M C, *rest)``. Several channels with ``coupled=True`` (the default):
    PixelCNN++'s :class:`CoupledLogisticMixture`, one mixture per pixel whose later channels'
    locations move linearly with the earlier channels (its eq. 3); the decoder outputs
    ``M`` logits, ``M x C`` locations, ``M x C`` raw log-scales and ``M x C(C-1)/2`` raw
    coefficients (squashed by tanh, as PixelCNN++ does), ``param_shape = (M (1 + 2C +
    C(C-1)/2), *rest)``: 10 M for RGB.
    """

    def __init__(self, event_shape, num_components: int = 5, num_bins: int = 256,
                 min_log_scale: float = -7.0, coupled: bool = True):
        checks.positive_int(num_components, "num_components")
        if not isinstance(coupled, bool):
            raise ValueError(f"coupled: expected True or False, got {coupled!r}")
        super().__init__(event_shape)
        self.num_components = num_components
        self.coupled = coupled and self.event_shape[0] > 1
        self.num_params = 3 * num_components
        self.num_bins = int(num_bins)
        self.min_log_scale = float(min_log_scale)
        self.support_text = f"values k/{self.num_bins - 1} in [0, 1] (scale 8-bit pixels by 1/255)"

    @property
    def param_shape(self) -> tuple[int, ...]:
        if not self.coupled:
            return super().param_shape
        C, m = self.event_shape[0], self.num_components
        return (m * (1 + 2 * C + C * (C - 1) // 2), *self.event_shape[1:])

    def forward(self, params):
        m = self.num_components
        if self.coupled:
            return self._coupled(params)
        blocks = self._split(params)  # 3M tensors (..., C, *rest)
        logits = torch.stack(blocks[:m], -1)  # (..., C, *rest, M)
        loc = torch.stack(blocks[m:2 * m], -1)
        scale = torch.exp(torch.stack(blocks[2 * m:], -1).clamp(min=self.min_log_scale))
        mix = dist.MixtureSameFamily(dist.Categorical(logits=logits),
                                     DiscretizedLogisticDistribution(loc, scale, self.num_bins))
        return mix.to_event(len(self.event_shape))

    def _coupled(self, params):
        m, C = self.num_components, self.event_shape[0]
        rest = self.event_shape[1:]
        d = params.dim() - len(self.event_shape)  # the parameter-block dim
        lead = params.shape[:d]
        logits, loc, raw_scale, raw_coeffs = params.split(
            [m, m * C, m * C, m * C * (C - 1) // 2], dim=d)

        def components_last(t, k):  # (..., m*k, *rest) -> (..., k, *rest, m)
            return t.reshape(*lead, m, k, *rest).movedim(d, -1)

        scale = torch.exp(raw_scale.clamp(min=self.min_log_scale))
        return CoupledLogisticMixture(
            logits.movedim(d, -1), components_last(loc, C), components_last(scale, C),
            components_last(torch.tanh(raw_coeffs), C * (C - 1) // 2), len(self.event_shape),
            self.num_bins)

    outside_support = DiscretizedLogistic.outside_support
