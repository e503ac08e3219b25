"""The ELBO split into its terms, from one guide trace and the model replayed against it."""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from torch.distributions import kl_divergence

from .lean import lean_elbo


def trace_terms(model_trace, guide_trace, *, analytic: bool = False,
                per_site: bool = False) -> dict[str, torch.Tensor]:
    r"""The ELBO's terms read off a guide trace and the model trace replayed on it (both with
    log-densities computed), summed over the batch, detached 0-d tensors:

    - ``recon``: :math:`-\sum_{\text{obs}} \log p(x \mid z)` over observed model sites;
    - ``kl``: :math:`\sum_{\text{latent}} [\log q(z \mid x) - \log p(z)]` over the latent model
      sites, the Monte-Carlo KL at the guide's draw (with ``analytic``, the closed-form
      :math:`\mathrm{KL}(q \,\|\, p)` where torch knows the pair, as
      :class:`~pyro.infer.TraceMeanField_ELBO` uses it);
    - with ``per_site`` and several latent sites, ``kl/<site>`` for each.

    For ``Trace_ELBO`` on a guide without sites of its own (auxiliary variables, factors),
    ``recon + kl`` is the loss of the same draws.
    """
    recon, kls = 0.0, {}
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site["infer"].get("_deterministic"):
            continue
        if site["is_observed"]:
            recon = recon - site["log_prob_sum"].detach()
        elif name in guide_trace.nodes:
            q = guide_trace.nodes[name]
            kl = None
            if analytic:
                try:
                    kl = scale_and_mask(kl_divergence(q["fn"], site["fn"]), q["scale"],
                                        q["mask"]).sum().detach()
                except NotImplementedError:
                    pass
            kls[name] = (q["log_prob_sum"] - site["log_prob_sum"]).detach() if kl is None \
                else kl
    out = {"recon": _tensor(recon), "kl": _tensor(sum(kls.values(), 0.0))}
    if per_site and len(kls) > 1:
        out.update({f"kl/{k}": v for k, v in kls.items()})
    return out


def _tensor(v) -> torch.Tensor:
    return v if torch.is_tensor(v) else torch.tensor(float(v))


def elbo_terms(model, guide, kwargs: dict) -> dict[str, float]:
    r"""Single-sample estimates of the ELBO's terms, summed over the batch (floats):
    ``recon``, ``kl`` (``kl/<site>`` per site when there are several; see
    :func:`trace_terms`) and ``loss = recon + kl``, the negative ELBO estimate
    :class:`~pyro.infer.Trace_ELBO` uses (for a guide without sites of its own).

    Works for any model/guide pair; computed by :func:`pyrovae.infer.lean.lean_elbo` (one
    handler, no traces), hidden from handlers outside. Used by the trainer's validation and
    history.
    """
    with torch.no_grad(), poutine.block():
        _, terms = lean_elbo(model, guide, (), kwargs, per_site=True)
    out = {k: float(v) for k, v in terms.items()}
    out["loss"] = out["recon"] + out["kl"]
    return out


class ReportsTerms:
    """Mixin for a Pyro ELBO that reports figures of each call beside its loss (the β-TCVAE
    decomposition, codebook usage, ...): implement ``step_terms(model_trace, guide_trace) ->
    dict[str, float]``, called once per particle after the loss has used the traces. After
    every ``loss``, ``differentiable_loss`` or ``loss_and_grads`` call, ``last_terms`` holds
    their mean over the call's particles, which :func:`pyrovae.fit` logs.

    One override serves all three entry points: each draws its traces through
    ``_get_traces``, which this wraps. Put it before the ELBO in the bases
    (``class TraceX_ELBO(ReportsTerms, Trace_ELBO)``).
    """

    last_terms: dict[str, float]

    def step_terms(self, model_trace, guide_trace) -> dict[str, float]:
        raise NotImplementedError

    def _get_traces(self, model, guide, args, kwargs):
        per_particle = []
        for model_trace, guide_trace in super()._get_traces(model, guide, args, kwargs):
            yield model_trace, guide_trace
            per_particle.append(self.step_terms(model_trace, guide_trace))
        sums: dict[str, float] = {}
        for terms in per_particle:
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
        self.last_terms = {k: v / len(per_particle) for k, v in sums.items()}
