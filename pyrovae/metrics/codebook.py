r"""How a discrete-latent model uses its codes, and what its priors cost, per data point where
that makes sense.

For code counts :math:`c_1..c_K` over a dataset and frequencies :math:`\hat p_k = c_k / \sum c`:

- *usage*: the fraction of the K codes used at least once;
- *perplexity*: :math:`\exp H(\hat p) = \exp(-\sum_k \hat p_k \log \hat p_k)`, the effective
  number of codes (K when all are used equally, 1 when one code takes everything);
- *dead codes*: codes never used (:math:`c_k = 0`).

Codebook collapse - a few codes taking all the assignments - shows as low usage and perplexity.
"""

from __future__ import annotations

import math

import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from .._runtime import eval_mode, module_device
from ..data import as_dataset
from ..infer.predictive import reconstruct
from ..protocol import as_model, input_names
from .likelihood import log_likelihood


def code_counts(indices: torch.Tensor, num_codes: int) -> torch.Tensor:
    """How often each of ``num_codes`` codes occurs in ``indices`` (any shape): ``(K,)`` int64."""
    if indices.is_floating_point() or indices.is_complex():
        raise TypeError(f"indices: expected an integer tensor, got {indices.dtype}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num_codes):
        raise ValueError(f"indices: expected values in [0, {num_codes - 1}], got range "
                         f"[{int(indices.min())}, {int(indices.max())}]")
    return torch.bincount(indices.reshape(-1), minlength=num_codes)


def usage_summary(counts: torch.Tensor) -> dict:
    """``usage``, ``perplexity``, ``dead_codes`` and ``num_codes`` for code ``counts: (K,)``
    (see the module docstring), plus the counts as a list."""
    c = counts.double()
    p = c / c.sum().clamp(min=1)
    nz = p[p > 0]
    entropy = float(-(nz * nz.log()).sum())
    return {"usage": float((c > 0).double().mean()), "perplexity": math.exp(entropy),
            "dead_codes": int((c == 0).sum()), "num_codes": int(c.numel()),
            "counts": [int(v) for v in counts.tolist()]}


def _num_codes(site) -> int:
    k = site["infer"].get("num_codes")
    if k is not None:
        return int(k)
    fn = site["fn"]
    while getattr(fn, "base_dist", None) is not None:
        fn = fn.base_dist
    if getattr(fn, "logits", None) is None:
        raise ValueError(f"site {site['name']!r}: cannot tell its number of codes; record it as "
                         f"infer={{'num_codes': K}}")
    return fn.logits.shape[-1]


@torch.no_grad()
def codebook_usage(model, data, *, batch_size: int = 256, seed: int = 0) -> dict[str, dict]:
    """:func:`usage_summary` of every discrete (integer-valued) latent site of the guide over
    ``data``, ``{site: summary}``; read off guide traces, so it works for any model/guide pair
    with categorical latents (VQ-VAE: ``"codes"``; VQ-VAE-2: ``"codes_top"``,
    ``"codes_bottom"``). Dynamically binarised data is binarised once with ``seed``."""
    model = as_model(model)
    ds = as_dataset(data).frozen(seed).to(module_device(model))
    counts: dict[str, torch.Tensor] = {}
    with eval_mode(model):
        for batch in ds.batches(batch_size):
            kwargs = {k: batch[k] for k in input_names(model, batch)}
            with poutine.block():
                tr = prune_subsample_sites(poutine.trace(model.guide).get_trace(**kwargs))
            for name, site in tr.nodes.items():
                if site["type"] != "sample" or site["is_observed"] \
                        or site["value"].is_floating_point():
                    continue
                k = _num_codes(site)
                c = code_counts(site["value"], k).cpu()
                counts[name] = counts[name] + c if name in counts else c
    if not counts:
        raise ValueError("model: its guide has no discrete (integer-valued) latent site")
    return {name: usage_summary(c) for name, c in counts.items()}


@torch.no_grad()
def reconstruction_mse(model, data, *, batch_size: int = 256, seed: int = 0) -> torch.Tensor:
    """Mean squared error between each data point and its reconstruction, averaged over the
    datum's entries, ``(N,)``: ``model.reconstruct(x)`` when the model has it, else E[x | z]
    with z from the guide (:func:`pyrovae.analysis.reconstruct`). Dynamically binarised data is
    binarised once with ``seed`` and compared in that form."""
    model = as_model(model)
    ds = as_dataset(data).frozen(seed).to(module_device(model))
    out = []
    with eval_mode(model):
        for batch in ds.batches(batch_size):
            x = batch["x"]
            rec = model.reconstruct(x) if hasattr(model, "reconstruct") else \
                reconstruct(model, batch)
            out.append(((x - rec) ** 2).reshape(x.shape[0], -1).mean(1).cpu())
    return torch.cat(out)


def bits_per_dim(model, data, num_samples: int = 1, **kwargs) -> torch.Tensor:
    r""":math:`-\mathcal L_K / (D \ln 2)` per data point, ``(N,)``: the importance-weighted
    log-likelihood (:func:`~pyrovae.metrics.log_likelihood`) in bits per entry of a datum of D
    entries. Exact for models without latent variables (an autoregressive code prior), where
    ``num_samples=1`` suffices; an upper bound on the true bits per dim otherwise."""
    ds = as_dataset(data)
    d = max(1, ds.x[0].numel())
    return -log_likelihood(model, ds, num_samples, **kwargs).double() / (d * math.log(2))
