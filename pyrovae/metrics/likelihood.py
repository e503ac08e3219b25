"""Per-data-point estimates of log p(x) and of the ELBO for any model/guide pair."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro import poutine

from .. import checks
from .._runtime import eval_mode, module_device, resolve_device, seeded, trim_heap
from ..data import as_dataset
from ..infer.particles import ParticleTracer
from ..protocol import as_model, input_names


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


def log_weight_chunks(model, data, num_samples: int, *, batch_size: int = 100,
                      max_elements: int = 2**22, device=None, seed: int | None = 0,
                      plate: str | None = None, with_log_likelihood: bool = False):
    r"""The importance-sampling loop shared by the estimators: yields ``(batch, b, lw, ll)``
    per chunk of particles, where ``batch`` numbers the data batch, ``b`` is its size,
    ``lw: (p, b)`` holds :math:`\log p(x, z) - \log q(z \mid x)` for the chunk's ``p``
    particles and ``ll: (p, b)`` holds :math:`\log p(x \mid z)` over observed sites (``None``
    unless ``with_log_likelihood``). The ``num_samples`` particles of a batch come in chunks of
    at most ``max_elements // (b * datum size)``. When every latent site of the guide is a
    point mass (a ``Delta``, or a categorical with all its mass on one value, as in a VQ-VAE)
    or there is none, the K weights are equal: one draw is made and stands for all K, exactly
    what K draws would give. On CPU the freed heap is returned between
    chunks (:func:`pyrovae._runtime.trim_heap`), so peak memory is that of one chunk.
    Batch norm runs in eval mode; ``seed`` fixes the draws without touching the caller's RNG
    state (``None``: use it as is).
    """
    checks.positive_int(num_samples, "num_samples")
    checks.positive_int(batch_size, "batch_size")
    checks.positive_int(max_elements, "max_elements")
    model = as_model(model)
    dev = resolve_device(device) if device is not None else module_device(model)
    ds = as_dataset(data).frozen(0 if seed is None else seed).to(dev)
    check = getattr(model, "check_data", None)
    if check is not None:
        check(ds.x, "data")
    datum = max(1, ds.x[0].numel())
    tracer = None
    with eval_mode(model), seeded(seed, dev), torch.no_grad():
        for i, batch in enumerate(ds.batches(batch_size)):
            b = batch["x"].shape[0]
            kwargs = {k: batch[k] for k in input_names(model, batch)}
            if tracer is None:
                tracer = ParticleTracer(model.model, model.guide, kwargs, b, plate)
            # a point-mass guide gives K equal weights: one draw stands for all (a view)
            deterministic = _point_mass_guide(model.guide, kwargs)  # per batch: cheap
            chunk = num_samples if deterministic else \
                max(1, min(num_samples, max_elements // (b * datum)))
            done = 0
            while done < num_samples:
                p = min(chunk, num_samples - done)
                drawn = 1 if deterministic else p
                model_tr, guide_tr = tracer.traces(kwargs, drawn)
                lw = tracer.log_weights(model_tr, guide_tr, drawn, b).expand(p, b)  # (p, b)
                ll = sum(tracer.per_datum(model_tr.nodes[o.name]["log_prob"], drawn, b)
                         for o in tracer.observed).expand(p, b) if with_log_likelihood else None
                del model_tr, guide_tr
                yield i, b, lw, ll
                done += p
                if p < num_samples and dev.type == "cpu":
                    del lw, ll
                    trim_heap()  # keeps the peak that of one chunk, whatever K


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

    Chunks of particles (:func:`log_weight_chunks`) are folded into running log-sum-exps and
    moments, so peak memory does not grow with K. A point-mass guide needs one draw
    (``elbo_se`` = 0, ``ess`` = K). Returns tensors of shape ``(N,)`` on the CPU.
    """
    outs = {"log_likelihood": [], "elbo": [], "elbo_se": [], "ess": []}

    def finish(lse, lse2, total, total2, shift):
        outs["log_likelihood"].append((lse - math.log(num_samples)).cpu())
        mean = total / num_samples
        var = (total2 / num_samples - (mean - shift) ** 2).clamp(min=0)
        if num_samples > 1:
            var = var * num_samples / (num_samples - 1)
        outs["elbo"].append(mean.cpu())
        outs["elbo_se"].append((var / num_samples).sqrt().cpu())
        outs["ess"].append(torch.exp(2 * lse - lse2).cpu())

    current, acc = None, None
    for i, b, lw, _ in log_weight_chunks(model, data, num_samples, batch_size=batch_size,
                                         max_elements=max_elements, device=device, seed=seed,
                                         plate=plate):
        if i != current:
            if acc is not None:
                finish(*acc)
            current = i
            neg_inf = torch.full((b,), -math.inf, device=lw.device)
            # log sum w, log sum w^2, sum log w, sum (log w - shift)^2, shift (a stable variance)
            acc = [neg_inf, neg_inf.clone(), torch.zeros(b, device=lw.device),
                   torch.zeros(b, device=lw.device), lw.mean(0)]
        acc[0] = torch.logaddexp(acc[0], torch.logsumexp(lw, 0))
        acc[1] = torch.logaddexp(acc[1], torch.logsumexp(2 * lw, 0))
        acc[2] = acc[2] + lw.sum(0)
        acc[3] = acc[3] + ((lw - acc[4]) ** 2).sum(0)
    finish(*acc)
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
