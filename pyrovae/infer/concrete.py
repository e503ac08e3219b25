r"""The Concrete (Gumbel-softmax) relaxation of discrete latent sites, as an ELBO."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.infer import Trace_ELBO
from pyro.poutine.messenger import Messenger

from .. import checks
from .registry import register_loss


class _RelaxedOneHotCategorical(dist.RelaxedOneHotCategorical):
    """Draws kept inside the open simplex, so log-densities stay finite when a coordinate's
    ``exp`` underflows to 0 (as :class:`~torch.distributions.RelaxedBernoulli` keeps its draws
    inside (0, 1)): coordinates are floored at the smallest normal number and renormalised."""

    def rsample(self, sample_shape=torch.Size()):
        y = super().rsample(sample_shape)  # (..., K)
        y = y.clamp(min=torch.finfo(y.dtype).tiny)
        return y / y.sum(-1, keepdim=True)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(_RelaxedOneHotCategorical, _instance)
        return super().expand(batch_shape, _instance=new)


def relax(fn, temperature: float, site: str = "?"):
    """The Concrete relaxation of ``fn`` at ``temperature``, through ``to_event``, ``expand``
    and ``mask`` wrappers: ``Bernoulli(logits) -> RelaxedBernoulli(temperature, logits)``,
    ``OneHotCategorical(logits) -> RelaxedOneHotCategorical(temperature, logits)``. Returns
    ``None`` for distributions with nothing to relax (continuous ones)."""
    if isinstance(fn, dist.Independent):
        inner = relax(fn.base_dist, temperature, site)
        return None if inner is None else inner.to_event(fn.reinterpreted_batch_ndims)
    if isinstance(fn, ExpandedDistribution):
        inner = relax(fn.base_dist, temperature, site)
        return None if inner is None else inner.expand(fn.batch_shape)
    if isinstance(fn, MaskedDistribution):
        inner = relax(fn.base_dist, temperature, site)
        return None if inner is None else inner.mask(fn._mask)
    if isinstance(fn, torch.distributions.Bernoulli):
        t = torch.as_tensor(temperature, dtype=fn.logits.dtype, device=fn.logits.device)
        return dist.RelaxedBernoulli(t, logits=fn.logits)
    if isinstance(fn, torch.distributions.OneHotCategorical):
        t = torch.as_tensor(temperature, dtype=fn.logits.dtype, device=fn.logits.device)
        return _RelaxedOneHotCategorical(t, logits=fn.logits)
    if isinstance(fn, torch.distributions.Categorical):
        raise ValueError(f"site {site!r}: a Categorical (integer) latent has no Concrete "
                         f"relaxation here; write it as OneHotCategorical")
    return None


class RelaxMessenger(Messenger):
    """Replaces the distribution of every latent Bernoulli / one-hot categorical sample site
    by its Concrete relaxation (observed sites are left alone)."""

    def __init__(self, temperature: float):
        super().__init__()
        self.temperature = temperature

    def _pyro_sample(self, msg):
        if msg["is_observed"]:
            return
        relaxed = relax(msg["fn"], self.temperature, msg["name"])
        if relaxed is not None:
            msg["fn"] = relaxed


@register_loss("concrete_elbo")
class TraceConcrete_ELBO(Trace_ELBO):
    r""":class:`~pyro.infer.Trace_ELBO` on the Concrete relaxation of the discrete latents.

    Each latent ``Bernoulli(logits=a)`` or ``OneHotCategorical(logits=a)`` site, in model and
    guide alike, becomes the Concrete distribution with the same logits at temperature
    :math:`\lambda` (Maddison et al. 2017, eq. 4 / definition 1; Jang et al. 2017, eq. 1-2),
    whose draws :math:`y = \mathrm{softmax}((a + g)/\lambda)`, :math:`g` Gumbel, are
    reparametrised. The objective is the relaxed ELBO
    :math:`\mathbb E_{q_\lambda}[\log p_\lambda(y)\,p_\theta(x\mid y) - \log q_\lambda(y\mid x)]`
    with relaxed prior and posterior densities (Maddison et al. 2017, appendix C), so its
    gradient is pathwise and low-variance but *biased* for the discrete ELBO; as
    :math:`\lambda \to 0` the relaxation approaches the discrete variable and the variance
    grows. The decoder sees relaxed codes during training; evaluate the discrete model itself
    (:func:`pyrovae.metrics.log_likelihood` on the unchanged model) afterwards.

    :param temperature: :math:`\lambda > 0`; Maddison et al. recommend 2/3 for binary codes
        and Jang et al. anneal from 1 to 0.5. The attribute may be changed between steps.
    """

    def __init__(self, temperature: float = 0.5, **kwargs):
        checks.positive_number(temperature, "temperature")
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def _get_trace(self, model, guide, args, kwargs):
        messenger = RelaxMessenger(self.temperature)
        return super()._get_trace(messenger(model), messenger(guide), args, kwargs)
