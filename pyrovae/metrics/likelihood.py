"""Per-data-point estimates of log p(x) and of the ELBO for any model/guide pair."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro import poutine

from .._runtime import eval_mode, module_device, resolve_device, seeded
from ..data import as_dataset
from ..infer.particles import ParticleTracer
from ..models.base import as_model, input_names


def _is_point_mass(fn) -> bool:
    while not isinstance(fn, dist.Delta) and getattr(fn, "base_dist", None) is not None:
        fn = fn.base_dist  # Independent, Expanded, Masked wrappers
    if isinstance(fn, dist.Delta):
        return True
    if isinstance(fn, (torch.distributions.Categorical, torch.distributions.OneHotCategorical)):
        return bool((fn.probs.amax(-1) == 1).all())
    return False


def _point_mass_guide(guide, kwargs) -> bool:
    """Whether every latent site of one guide run is a point mass (vacuously, if none). The run
    draws in a forked RNG, so the importance-sampling stream is the same with or without it."""
    devices = sorted({v.device for v in kwargs.values() if torch.is_tensor(v)
                      and v.device.type == "cuda"}, key=str)
    with torch.random.fork_rng(devices=devices), poutine.block(), torch.no_grad():
        tr = poutine.trace(guide).get_trace(**kwargs)
    return all(_is_point_mass(s["fn"]) for s in tr.nodes.values()
               if s["type"] == "sample" and not s["is_observed"])


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")


def importance_sampling(model, data, num_samples: int = 1000, *, batch_size: int = 100,
                        max_elements: int = 2**22, device=None, seed: int | None = 0,
                        plate: str | None = None) -> dict[str, torch.Tensor]:
    r"""Importance-sampling estimates per data point, with ``K = num_samples`` draws from the guide.

    With :math:`\log w_k = \log p(x, z_k) - \log q(z_k \mid x)`, :math:`z_k \sim q(z \mid x)`:

    - ``log_likelihood``: :math:`\mathcal L_K = \log \frac1K \sum_k w_k`, the IWAE bound of
      Burda et al. (2016, eq. 8); :math:`\mathbb E[\mathcal L_K] \le \log p(x)`, increasing in
      K and consistent as K grows;
    - ``elbo``: :math:`\frac1K \sum_k \log w_k`, an unbiased estimate of the ELBO;
    - ``elbo_se``: the Monte-Carlo standard error of ``elbo``, :math:`\mathrm{sd}(\log w)/\sqrt K`;
    - ``ess``: the effective sample size :math:`(\sum_k w_k)^2 / \sum_k w_k^2`; the standard
      error of ``log_likelihood`` is about :math:`\sqrt{1/\mathrm{ESS} - 1/K}` (delta method).

    Particles are drawn in chunks of at most ``max_elements // (batch size * datum size)`` and
    folded into running log-sum-exps, so peak memory does not grow with K. When every latent
    site of the guide is a point mass (a ``Delta``, or a categorical with all its mass on one
    value, as in a VQ-VAE) or there is none, all K weights are equal: one draw is made and
    stands for all K, so ``log_likelihood`` = ``elbo`` = that weight, ``elbo_se`` = 0 and
    ``ess`` = K, exactly what K draws would give.
    Returns tensors of shape ``(N,)`` on the CPU. Batch norm runs in eval mode; ``seed`` fixes
    the draws without touching the caller's RNG state (``None``: use it as is).
    """
    _check_positive_int(num_samples, "num_samples")
    _check_positive_int(batch_size, "batch_size")
    _check_positive_int(max_elements, "max_elements")
    model = as_model(model)
    dev = resolve_device(device) if device is not None else module_device(model)
    ds = as_dataset(data).frozen(0 if seed is None else seed).to(dev)
    check = getattr(model, "check_data", None)
    if check is not None:
        check(ds.x, "data")
    datum = max(1, ds.x[0].numel())
    outs = {"log_likelihood": [], "elbo": [], "elbo_se": [], "ess": []}
    tracer = None
    with eval_mode(model), seeded(seed, dev), torch.no_grad():
        for batch in ds.batches(batch_size):
            b = batch["x"].shape[0]
            names = input_names(model, batch)
            kwargs = {k: batch[k] for k in names}
            if tracer is None:
                tracer = ParticleTracer(model.model, model.guide, kwargs, b, plate)
            deterministic = _point_mass_guide(model.guide, kwargs)  # per batch: cheap
            chunk = num_samples if deterministic else \
                max(1, min(num_samples, max_elements // (b * datum)))
            lse = torch.full((b,), -math.inf, device=dev)  # log sum_k w_k
            lse2 = torch.full((b,), -math.inf, device=dev)  # log sum_k w_k^2
            total = torch.zeros(b, device=dev)  # sum_k log w_k
            total2 = torch.zeros(b, device=dev)  # sum_k (log w_k - shift)^2
            shift = None  # first chunk's mean, for a numerically stable variance
            done = 0
            while done < num_samples:
                p = min(chunk, num_samples - done)
                drawn = 1 if deterministic else p
                model_tr, guide_tr = tracer.traces(kwargs, drawn)
                lw = tracer.log_weights(model_tr, guide_tr, drawn, b).expand(p, b)  # (p, b)
                lse = torch.logaddexp(lse, torch.logsumexp(lw, 0))
                lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * lw, 0))
                if shift is None:
                    shift = lw.mean(0)
                total += lw.sum(0)
                total2 += ((lw - shift) ** 2).sum(0)
                done += p
            outs["log_likelihood"].append((lse - math.log(num_samples)).cpu())
            mean = total / num_samples
            var = (total2 / num_samples - (mean - shift) ** 2).clamp(min=0)
            if num_samples > 1:
                var = var * num_samples / (num_samples - 1)
            outs["elbo"].append(mean.cpu())
            outs["elbo_se"].append((var / num_samples).sqrt().cpu())
            outs["ess"].append(torch.exp(2 * lse - lse2).cpu())
    return {k: torch.cat(v) for k, v in outs.items()}


def log_likelihood(model, data, num_samples: int = 1000, **kwargs) -> torch.Tensor:
    """Importance-weighted estimate of log p(x) per data point, shape ``(N,)``
    (see :func:`importance_sampling`)."""
    return importance_sampling(model, data, num_samples, **kwargs)["log_likelihood"]


def elbo(model, data, num_samples: int = 1, **kwargs) -> torch.Tensor:
    """Monte-Carlo ELBO per data point, shape ``(N,)`` (see :func:`importance_sampling`)."""
    return importance_sampling(model, data, num_samples, **kwargs)["elbo"]


def summary(values: torch.Tensor) -> dict[str, float]:
    """Mean and standard error of per-data-point values."""
    v = values.double()
    n = v.numel()
    se = float(v.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": float(v.mean()), "se": se, "n": n}
