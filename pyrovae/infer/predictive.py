"""Reconstructions and prior samples for any model/guide pair, read off Pyro traces.

The observed site's distribution object carries ``mean``, so E[x | z] needs no knowledge of the
model's networks: replay the model against a guide draw for a reconstruction, or run it with
the observation released (``poutine.uncondition``) for a draw from the prior predictive.
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from ..protocol import as_model, input_names
from .traces import guide_model_traces


def _observed_site(trace, x: torch.Tensor | None, released: bool = False):
    trace = prune_subsample_sites(trace)
    sites = [s for s in trace.nodes.values() if s["type"] == "sample"
             and not s["infer"].get("_deterministic")
             and (s["infer"].get("was_observed") if released else s["is_observed"])]
    if not sites:
        raise ValueError("model: no observed sample site (pyro.sample(..., obs=x)) was found")
    for s in sites:
        obs = s["infer"].get("obs") if released else s["value"]
        if obs is x:
            return s
    return sites[0]


def _kwargs(model, batch: dict) -> dict:
    return {k: batch[k] for k in input_names(model, batch)}


@torch.no_grad()
def reconstruct(model, batch: dict) -> torch.Tensor:
    """E[x | z] with ``z ~ q(z | x)``, shape of ``batch["x"]`` (one guide draw per datum)."""
    model = as_model(model)
    model_tr, _ = guide_model_traces(model.model, model.guide, _kwargs(model, batch))
    return _observed_site(model_tr, batch.get("x"))["fn"].mean


@torch.no_grad()
def prior_predictive_mean(model, batch: dict) -> torch.Tensor:
    """E[x | z] with ``z ~ p(z)``, one per datum of ``batch`` (which sets the batch size and
    any conditioning inputs such as labels)."""
    model = as_model(model)
    kwargs = _kwargs(model, batch)
    with poutine.block():
        tr = poutine.trace(poutine.uncondition(model.model)).get_trace(**kwargs)
    return _observed_site(tr, batch.get("x"), released=True)["fn"].mean


@torch.no_grad()
def prior_predictive_sample(model, batch: dict) -> torch.Tensor:
    """x ~ p(x) drawn ancestrally, z ~ p(z) then x ~ p(x | z), one per datum of ``batch``: the
    draws to set beside data points that are vectors, where E[x | z] alone would lie on the
    decoder's manifold without the observation noise."""
    model = as_model(model)
    kwargs = _kwargs(model, batch)
    with poutine.block():
        tr = poutine.trace(poutine.uncondition(model.model)).get_trace(**kwargs)
    return _observed_site(tr, batch.get("x"), released=True)["value"]


@torch.no_grad()
def latent_means(model, batch: dict) -> dict[str, torch.Tensor]:
    """Mean of q(z | x) for each latent site of the guide, ``{site: (B, *event)}``; for a
    model without latent sites, its deterministic sites (an auto-encoder's code)."""
    model = as_model(model)
    kwargs = _kwargs(model, batch)
    with poutine.block():
        guide_tr = prune_subsample_sites(poutine.trace(model.guide).get_trace(**kwargs))
    out = {n: s["fn"].mean for n, s in guide_tr.nodes.items()
           if s["type"] == "sample" and not s["is_observed"]}
    if not out:
        with poutine.block():
            tr = prune_subsample_sites(poutine.trace(model.model).get_trace(**kwargs))
        out = {n: s["value"] for n, s in tr.nodes.items()
               if s["type"] == "sample" and s["infer"].get("_deterministic")}
    return out
