"""Helpers the objectives share: which latent site, its per-dimension density, its data plate."""

from __future__ import annotations

import torch
import torch.distributions as tdist


def latent_sites(guide_trace) -> list[str]:
    return [n for n, s in guide_trace.nodes.items()
            if s["type"] == "sample" and not s["is_observed"]]


def pick_latent_site(guide_trace, site: str | None, who: str) -> str:
    """``site`` if the guide has it, else the guide's only latent site."""
    names = latent_sites(guide_trace)
    if site is not None:
        if site not in names:
            raise ValueError(f"{who}: site {site!r} is not a latent site of the guide "
                             f"(its latent sites: {names})")
        return site
    if len(names) != 1:
        raise ValueError(f"{who}: the guide has latent sites {names}; pass site= to choose "
                         f"the one to decompose")
    return names[0]


def factorised(fn, name: str, who: str) -> tdist.Distribution:
    """The univariate distribution under ``fn``'s ``Independent`` wrappers, whose ``log_prob``
    gives one density per latent dimension; ``fn`` must have one event dim.

    Accepts e.g. ``Normal(loc, scale).to_event(1)`` (a diagonal Gaussian guide).
    """
    d, reinterpreted = fn, 0
    while isinstance(d, tdist.Independent):
        reinterpreted += d.reinterpreted_batch_ndims
        d = d.base_dist
    if d.event_shape != torch.Size() or reinterpreted != 1:
        raise ValueError(
            f"{who}: site {name!r} must have a factorised density over a vector of latent "
            f"dimensions, e.g. Normal(loc, scale).to_event(1); got {type(fn).__name__} with "
            f"event shape {tuple(fn.event_shape)} over a {type(d).__name__}")
    if not d.has_rsample:
        raise ValueError(f"{who}: site {name!r} must be reparametrised (its {type(d).__name__} "
                         f"has no rsample)")
    return d


def pairwise_log_prob(base: tdist.Distribution, z: torch.Tensor) -> torch.Tensor:
    """``out[..., i, j, l] = log q(z[..., i, l] | x_j)``: every sample of the batch under every
    data point's per-dimension density.

    ``base`` has batch shape ``(..., B, L)`` (one row per data point), ``z: (..., B, L)``.
    Returns ``(..., B, B, L)`` indexed by ``[..., i (sample), j (density), l (dimension)]``.
    """
    # z as (B, ..., 1, L) broadcasts against the densities' (..., B, L) into (B, ..., B, L).
    lp = base.log_prob(z.movedim(-2, 0).unsqueeze(-2))
    return lp.movedim(0, -3)


def data_size(trace, obs_site: str | None = None, plate: str = "data") -> float:
    """How many data points a batch stands for: the size of ``plate`` (or the only plate) around
    the observed site, times that site's scale (which subsampling sets to N / B)."""
    sites = [s for s in trace.nodes.values() if s["type"] == "sample" and s["is_observed"]
             and not s["infer"].get("_deterministic")]
    if obs_site is not None:
        sites = [s for s in sites if s["name"] == obs_site]
    if not sites:
        raise ValueError("model: no observed sample site (pyro.sample(..., obs=x)) was found")
    s = sites[0]
    frames = [f for f in s["cond_indep_stack"] if f.vectorized
              and f.name != "num_particles_vectorized"]
    named = [f for f in frames if f.name == plate]
    if named:
        frame = named[0]
    elif len(frames) == 1:
        frame = frames[0]
    else:
        raise ValueError(f"model: cannot tell the data plate of site {s['name']!r} (plates "
                         f"{[f.name for f in frames]}); name it {plate!r} or pass plate=")
    scale = s["scale"]
    scale = float(scale) if not torch.is_tensor(scale) or scale.numel() == 1 else None
    if scale is None:
        raise ValueError(f"model: site {s['name']!r} has a non-scalar scale; cannot count data")
    return frame.size * scale
