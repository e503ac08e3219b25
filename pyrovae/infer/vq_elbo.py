"""``Trace_ELBO`` that also reports the vector-quantisation terms of each step."""

from __future__ import annotations

import math

import torch
from pyro.infer import Trace_ELBO

from .registry import register_loss
from .terms import ReportsTerms


def _num_codes(site) -> int | None:
    k = site["infer"].get("num_codes")
    if k is not None:
        return int(k)
    fn = site["fn"]
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    logits = getattr(fn, "logits", None)
    return None if logits is None else logits.shape[-1]


def vq_terms(guide_trace) -> dict[str, float]:
    """Per-data-point VQ terms read off one guide trace.

    - ``codebook``, ``commitment``: the guide factors marked ``infer["vq_term"]`` (the weighted
      penalties as they enter the loss), summed over sites and averaged over data points;
    - ``perplexity/<site>``, ``usage/<site>``: for each integer-valued latent site of the guide
      (the codes), :math:`\\exp H(\\hat p)` of the batch's code frequencies and the fraction of
      the K codes the batch uses.
    """
    out: dict[str, float] = {}
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample":
            continue
        term = site["infer"].get("vq_term")
        if term is not None and site["is_observed"]:
            lp = site.get("log_prob")  # batch-shaped (P?, B) penalty, scaled as in the loss
            if lp is None:
                lp = site["fn"].log_prob(site["value"]) * site["scale"]
            out[term] = out.get(term, 0.0) + float(lp.detach().double().mean())
        elif not site["is_observed"] and not site["value"].is_floating_point():
            k = _num_codes(site)
            if k is None:
                continue
            counts = torch.bincount(site["value"].reshape(-1), minlength=k).double()
            p = counts / counts.sum()
            h = -(p[p > 0] * p[p > 0].log()).sum()
            out[f"perplexity/{name}"] = float(h.exp())
            out[f"usage/{name}"] = float((counts > 0).double().mean())
    return out


@register_loss("vq_elbo")
class TraceVQ_ELBO(ReportsTerms, Trace_ELBO):
    """:class:`pyro.infer.Trace_ELBO` (same value, same gradients) that sets ``last_terms`` after
    each call: the codebook and commitment penalties, and the perplexity and usage of each code
    site in the batch (:func:`vq_terms`), which :func:`pyrovae.fit` logs beside the loss.

    The penalties themselves are guide factors of the model (:mod:`pyrovae.models.vqvae`), so
    any Pyro ELBO trains a VQ-VAE; this class only makes them visible. With several particles
    the terms are averaged over them.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.last_terms: dict[str, float] = {}

    def step_terms(self, model_trace, guide_trace) -> dict[str, float]:
        return {k: v for k, v in vq_terms(guide_trace).items() if math.isfinite(v)}
