"""Export of amortised posteriors to ArviZ ``InferenceData``.

ArviZ's Pyro converter takes MCMC runs only; here every data point has its own posterior
q(z | x_i), so draws carry an ``obs`` dim beside ``chain`` and ``draw``. Sites are discovered
from traces, not hard-coded, so any model/guide pair exports.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .._runtime import eval_mode, module_device, seeded
from ..data import as_dataset
from ..infer.particles import ParticleTracer
from ..models.base import as_model, input_names


def import_arviz():
    """ArviZ, with its import-time notice about the 1.0 refactor silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def _site_values(tracer, value: torch.Tensor, event_dim: int, p: int, b: int) -> torch.Tensor:
    """A site value ``(plates..., *event)`` rearranged to ``(P, B, other plates..., *event)``."""
    n = tracer.max_plate_nesting + 1
    batch_nd = value.dim() - event_dim
    v = value.reshape((1,) * (n - batch_nd) + tuple(value.shape))
    data_axis = n + tracer.plate_dim
    v = v.movedim(data_axis, 1)
    return v.expand(p, b, *v.shape[2:])


def to_inference_data(model, data, num_samples: int = 100, *, chains: int = 1,
                      batch_size: int = 100, seed: int | None = 0, predictive: bool = True,
                      device=None):
    """``InferenceData`` for a model/guide pair on ``data`` (N data points).

    Groups (``S = num_samples`` draws per chain):

    - ``posterior``: each latent site's draws from q(z | x_i), dims
      ``(chain, draw, obs, <site>_dim_0, ...)``;
    - ``log_likelihood``: log p(x_i | z) per observed site, ``(chain, draw, obs)``;
    - ``sample_stats``: ``log_weight`` = log p(x_i, z) - log q(z | x_i), ``(chain, draw, obs)``
      (the importance weights behind the IWAE bound and PSIS diagnostics);
    - ``posterior_predictive`` (if ``predictive``): x drawn from p(x | z) per draw;
    - ``observed_data``: x; ``constant_data``: labels y, when the data has them.

    Chains are independent streams of guide draws (seeded from ``seed``).
    """
    az = import_arviz()
    model = as_model(model)
    dev = module_device(model) if device is None else torch.device(device)
    ds = as_dataset(data).frozen(0 if seed is None else seed).to(dev)
    p = num_samples * chains
    post, loglik, pred, obs, lw_all = {}, {}, {}, {}, []
    tracer = None
    with eval_mode(model), seeded(seed, dev), torch.no_grad():
        for batch in ds.batches(batch_size):
            b = batch["x"].shape[0]
            kwargs = {k: batch[k] for k in input_names(model, batch)}
            if tracer is None:
                tracer = ParticleTracer(model.model, model.guide, kwargs, b)
            model_tr, guide_tr = tracer.traces(kwargs, p)
            for info in tracer.latent:
                v = _site_values(tracer, guide_tr.nodes[info.name]["value"], info.event_dim, p, b)
                post.setdefault(info.name, []).append(v.cpu())
            for info in tracer.observed:
                site = model_tr.nodes[info.name]
                loglik.setdefault(info.name, []).append(
                    tracer.per_datum(site["log_prob"], p, b).cpu())
                obs.setdefault(info.name, []).append(site["value"].cpu())
                if predictive:
                    draw = site["fn"].sample()
                    pred.setdefault(info.name, []).append(
                        _site_values(tracer, draw, info.event_dim, p, b).cpu())
            lw_all.append(tracer.log_weights(model_tr, guide_tr, p, b).cpu())

    def per_draw(chunks, obs_axis=1):
        a = torch.cat(chunks, dim=obs_axis).numpy()  # (P, N, ...)
        return a.reshape(chains, num_samples, *a.shape[1:])

    def dims_for(name, arr):
        return ["obs"] + [f"{name}_dim_{i}" for i in range(arr.ndim - 3)]

    posterior = {k: per_draw(v) for k, v in post.items()}
    log_likelihood = {k: per_draw(v) for k, v in loglik.items()}
    observed = {k: torch.cat(v, 0).numpy() for k, v in obs.items()}
    dims = {k: dims_for(k, a) for k, a in posterior.items()}
    for k, a in observed.items():
        dims[k] = ["obs"] + [f"{k}_dim_{i}" for i in range(a.ndim - 1)]
    groups = {
        "posterior": posterior or None,
        "log_likelihood": log_likelihood,
        "sample_stats": {"log_weight": per_draw(lw_all)},
        "observed_data": observed,
        "coords": {"obs": np.arange(len(ds))},
        "dims": {**dims, "log_weight": ["obs"]},
    }
    if predictive:
        groups["posterior_predictive"] = {k: per_draw(v) for k, v in pred.items()}
    if ds.y is not None:
        groups["constant_data"] = {"y": ds.y.cpu().numpy()}
        groups["dims"]["y"] = ["obs"]
    for k in log_likelihood:
        groups["dims"].setdefault(k, ["obs"])
    return az.from_dict(**groups)
