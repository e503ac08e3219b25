"""Per-data-point summaries of a latent site for any model/guide pair: posterior moments, the KL
of each latent dimension, active units."""

from __future__ import annotations

import torch
from pyro import poutine
from torch.distributions import kl_divergence

from .. import checks
from .._runtime import eval_mode, module_device, seeded
from ..data import as_dataset
from ..infer._sites import factorised, pick_latent_site
from ..infer.traces import guide_model_traces
from ..protocol import as_model, input_names


def _site_batches(model, data, site, batch_size, seed):
    """Yields ``(name, guide site, model site)`` per batch of ``data``."""
    checks.positive_int(batch_size, "batch_size")
    model = as_model(model)
    dev = module_device(model)
    ds = as_dataset(data).frozen(0 if seed is None else seed).to(dev)
    with eval_mode(model), seeded(seed, dev), torch.no_grad(), poutine.block():
        for batch in ds.batches(batch_size):
            kwargs = {k: batch[k] for k in input_names(model, batch)}
            model_tr, guide_tr = guide_model_traces(model.model, model.guide, kwargs)
            name = pick_latent_site(guide_tr, site, "metrics")
            yield name, guide_tr.nodes[name], model_tr.nodes[name]


def posterior_moments(model, data, *, site: str | None = None, batch_size: int = 256,
                      seed: int | None = 0) -> dict[str, torch.Tensor]:
    """Mean and standard deviation of q(z_l | x) per data point and latent dimension:
    ``{"loc": (N, L), "scale": (N, L)}`` for a latent site with a factorised density over a
    vector (``Normal(loc, scale).to_event(1)``; the guide's only latent site by default)."""
    locs, scales = [], []
    for name, g, _ in _site_batches(model, data, site, batch_size, seed):
        base = factorised(g["fn"], name, "posterior_moments")
        locs.append(base.mean.cpu())
        scales.append(base.stddev.cpu())
    return {"loc": torch.cat(locs), "scale": torch.cat(scales)}


def _per_dim(fn):
    while isinstance(fn, torch.distributions.Independent):
        fn = fn.base_dist
    return fn


def per_dimension_kl(model, data, *, site: str | None = None, batch_size: int = 256,
                     seed: int | None = 0) -> torch.Tensor:
    r""":math:`\mathrm{KL}(q(z_l \mid x_n) \,\|\, p(z_l))` for each data point n and latent
    dimension l, shape ``(N, L)``: analytic where Pyro knows the pair (Gaussians), else the
    one-sample estimate :math:`\log q(z_l \mid x) - \log p(z_l)` at a guide draw. Its mean over
    the data is the per-dimension KL bar chart (Burgess et al. 2018, fig. 3)."""
    out = []
    for name, g, m in _site_batches(model, data, site, batch_size, seed):
        q = factorised(g["fn"], name, "per_dimension_kl")
        p = _per_dim(m["fn"])
        try:
            kl = kl_divergence(q, p)
        except NotImplementedError:
            kl = q.log_prob(g["value"]) - p.log_prob(g["value"])
        out.append(kl.expand(q.batch_shape).cpu())
    return torch.cat(out)


def active_units(model_or_loc, data=None, *, threshold: float = 0.01, site: str | None = None,
                 batch_size: int = 256) -> dict:
    r"""Active units (Burda et al. 2016): dimension l is active when
    :math:`A_l = \mathrm{Var}_x(\mathbb E_{q(z \mid x)}[z_l]) > 0.01`.

    Takes a model and data, or posterior means ``(N, L)`` directly. Returns ``{"count": int,
    "active": (L,) bool, "variance": (L,)}``.
    """
    if torch.is_tensor(model_or_loc):
        loc = model_or_loc
        if data is not None:
            raise ValueError("data: pass either a model and data, or posterior means alone")
    else:
        if data is None:
            raise ValueError("data: a model needs data to encode")
        loc = posterior_moments(model_or_loc, data, site=site, batch_size=batch_size)["loc"]
    if loc.dim() != 2 or loc.shape[0] < 2:
        raise ValueError(f"posterior means: expected shape (N >= 2, L), got {tuple(loc.shape)}")
    var = loc.double().var(0, unbiased=True).float()
    active = var > threshold
    return {"count": int(active.sum()), "active": active, "variance": var}
