r"""Per-data-point Pareto-smoothed importance sampling (PSIS) diagnostics for amortised guides.

Pyro's ``psis_diagnostic`` gives one :math:`\hat k` for a whole model. For an amortised guide
the question is per data point: how well does :math:`q(z \mid x_i)` cover
:math:`p(z \mid x_i)`? With :math:`z_s \sim q(z \mid x_i)`, :math:`s = 1..S`, and log importance
weights :math:`\log w_{is} = \log p(x_i, z_s) - \log q(z_s \mid x_i)`, a generalised Pareto
distribution is fitted to the largest weights of each data point (Vehtari et al. 2024,
"Pareto smoothed importance sampling", JMLR 25(72), §3; through ArviZ's ``psislw``). Its shape
:math:`\hat k_i` estimates how many moments the weights have (:math:`1/k`):

- :math:`\hat k < 0.5`: finite variance; the importance-sampling estimate of
  :math:`p(x_i)` converges at the usual rate;
- :math:`0.5 \le \hat k < 0.7`: usable with PSIS smoothing;
- :math:`\hat k \ge 0.7` (more precisely :math:`\hat k > \min(1 - 1/\log_{10} S, 0.7)`,
  their §3.2.4): the guide misses parts of the posterior, estimates of :math:`p(x_i)` and
  posterior expectations are unreliable at any practical S.

A Gaussian guide whose standard deviations are ``c`` times those of a Gaussian posterior has
:math:`k = 1 - c^2` for ``c < 1`` (the weights :math:`\propto \exp(\tfrac{1-c^2}{2}\chi^2_d)`),
whatever the dimension: a too-narrow encoder is what :math:`\hat k` detects.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import checks
from ..data import as_dataset
from ..metrics.likelihood import log_weight_chunks
from .inference_data import OBS, import_arviz

KHAT_BAD = 0.7  # Vehtari et al. (2024), §3.2.4: above this no S makes the estimate reliable


def good_khat(num_samples: int) -> float:
    r"""Sample-size-dependent threshold :math:`\min(1 - 1/\log_{10} S, 0.7)` (Vehtari et al.
    2024, §3.2.4); ArviZ's ``loo`` uses the same."""
    return min(1 - 1 / math.log10(num_samples), KHAT_BAD) if num_samples > 10 else -math.inf


def importance_log_weights(model, data, num_samples: int = 1000, *, batch_size: int = 100,
                           max_elements: int = 2**22, seed: int | None = 0, device=None,
                           plate: str | None = None) -> dict[str, torch.Tensor]:
    r"""Log importance weights and log-likelihoods of ``S = num_samples`` guide draws per data
    point, each ``(N, S)`` on the CPU:

    - ``log_weight``: :math:`\log p(x_i, z_s) - \log q(z_s \mid x_i)`;
    - ``log_likelihood``: :math:`\log p(x_i \mid z_s)`, summed over observed sites.

    Particles are drawn in chunks of at most ``max_elements // (batch size * datum size)``;
    with the same ``seed`` and ``batch_size`` the draws are those of
    :func:`pyrovae.metrics.importance_sampling`.
    """
    lws, lls, cur = [], [], None
    for i, _, lw, ll in log_weight_chunks(model, data, num_samples, batch_size=batch_size,
                                          max_elements=max_elements, device=device, seed=seed,
                                          plate=plate, with_log_likelihood=True):
        if i != cur:
            lws.append([])
            lls.append([])
            cur = i
        lws[-1].append(lw.cpu())  # (p, b)
        lls[-1].append(ll.cpu())
    return {"log_weight": torch.cat([torch.cat(c).T for c in lws]),  # (N, S)
            "log_likelihood": torch.cat([torch.cat(c).T for c in lls])}


def _as_numpy(a, name) -> np.ndarray:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(f"{name}: expected an array (N data points, S >= 2 draws), got shape "
                         f"{a.shape}")
    return a.astype(np.float64)


def _from_inference_data(idata):
    """(log weights (N, S), log-likelihoods (N, S) or None, labels or None, obs coords)."""
    if "sample_stats" not in idata.groups() or "log_weight" not in idata.sample_stats:
        raise ValueError("idata: expected sample_stats.log_weight (pyrovae.analysis."
                         "to_inference_data writes it)")
    lw = idata.sample_stats["log_weight"].stack(__sample__=("chain", "draw"))
    lw = lw.transpose(OBS, "__sample__")
    ll = None
    if "log_likelihood" in idata.groups():
        parts = [v.stack(__sample__=("chain", "draw")).transpose(OBS, "__sample__").values
                 for v in idata.log_likelihood.data_vars.values()]
        ll = sum(parts) if parts else None
    y = None
    if "constant_data" in idata.groups() and "y" in idata.constant_data:
        y = idata.constant_data["y"].values
    return lw.values, ll, y, lw[OBS].values


def psis(log_weights, log_likelihood=None, *, labels=None, obs=None, tol: float = 1e-4):
    r"""Per-data-point PSIS of log importance weights ``(N, S)``, or of an ``InferenceData``
    from :func:`~pyrovae.analysis.to_inference_data` (its ``sample_stats.log_weight`` and
    ``log_likelihood``; chains and draws pooled).

    Returns an ``xarray.Dataset`` over ``obs`` with

    - ``khat``: Pareto shape :math:`\hat k_i` of the weights' tail (ArviZ ``psislw``, r_eff = 1:
      guide draws are independent);
    - ``log_px_psis``: :math:`\log \frac1S \sum_s \tilde w_{is}`, the PSIS estimate of
      :math:`\log p(x_i)` from the smoothed (and truncated) weights :math:`\tilde w`;
    - ``log_px_is``: the plain estimate :math:`\log \frac1S \sum_s w_{is}`, the IWAE bound
      :math:`\mathcal L_S` (Burda et al. 2016, eq. 8);
    - ``elbo``: :math:`\frac1S \sum_s \log w_{is}`; ``gap``: ``log_px_psis - elbo``, the part of
      the ELBO's shortfall that more importance samples recover;
    - ``ess``: :math:`(\sum_s w_{is})^2 / \sum_s w_{is}^2` of the raw weights;
    - ``recon``: :math:`-\frac1S \sum_s \log p(x_i \mid z_s)`, the reconstruction error (when
      log-likelihoods are given); ``label``: ``labels``, when given.

    Attributes: ``num_samples``, ``good_k`` (:func:`good_khat`) and ``frac_khat_gt_0.7``.

    For a model with global latents :math:`\theta`, the ``log_weight`` of ``to_inference_data``
    is conditional on each draw's :math:`\theta \sim q(\theta)`: :math:`\hat k_i` then diagnoses
    :math:`q(z \mid x_i, \theta)`, and ``log_px_*`` estimate
    :math:`\log \mathbb E_{q(\theta)}[p(x_i \mid \theta)]`.

    Log weights that span less than ``tol * max(1, |mean|)`` nats are constant to rounding
    error (an exact guide: :math:`w = p(x)` for every draw): there is no tail to fit, so
    :math:`\hat k_i = -\infty` and no smoothing is applied (a Pareto fit to float32 round-off,
    a few distinct values, returns arbitrary shapes).
    """
    az = import_arviz()
    import xarray as xr

    if hasattr(log_weights, "groups") and hasattr(log_weights, "sample_stats"):
        lw, ll_idata, y_idata, obs_idata = _from_inference_data(log_weights)
        log_likelihood = ll_idata if log_likelihood is None else log_likelihood
        labels = y_idata if labels is None else labels
        obs = obs_idata if obs is None else obs
    else:
        lw = log_weights
    lw = _as_numpy(lw, "log_weights")
    n, s = lw.shape
    if not np.isfinite(lw).all():
        raise ValueError(f"log_weights: expected finite values, found "
                         f"{int((~np.isfinite(lw)).sum())} NaN/inf")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol: expected a number >= 0, got {tol!r}")
    spread = lw.max(1) - lw.min(1)  # (N,)
    flat = spread <= tol * np.maximum(1.0, np.abs(lw.mean(1)))
    smoothed = lw.copy()
    khat = np.full(n, -np.inf)
    if (~flat).any():
        smoothed[~flat], khat[~flat] = az.psislw(lw[~flat].copy(), normalize=False)
    log_s = math.log(s)

    def lse(a):  # log-sum-exp over draws, (N, S) -> (N,)
        m = a.max(1, keepdims=True)
        return (m + np.log(np.exp(a - m).sum(1, keepdims=True)))[:, 0]

    data = {
        "khat": khat,
        "log_px_psis": lse(smoothed) - log_s,
        "log_px_is": lse(lw) - log_s,
        "elbo": lw.mean(1),
        "ess": np.exp(2 * lse(lw) - lse(2 * lw)),
    }
    data["gap"] = data["log_px_psis"] - data["elbo"]
    if log_likelihood is not None:
        ll = _as_numpy(log_likelihood, "log_likelihood")
        if ll.shape != lw.shape:
            raise ValueError(f"log_likelihood: expected shape {lw.shape} like log_weights, got "
                             f"{ll.shape}")
        data["recon"] = -ll.mean(1)
    if labels is not None:
        labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
        if labels.shape != (n,):
            raise ValueError(f"labels: expected shape ({n},), got {labels.shape}")
        data["label"] = labels
    obs = np.arange(n) if obs is None else np.asarray(obs)
    if obs.shape != (n,):
        raise ValueError(f"obs: expected {n} coordinates, got shape {obs.shape}")
    return xr.Dataset({k: ((OBS,), v) for k, v in data.items()}, coords={OBS: obs},
                      attrs={"num_samples": s, "good_k": good_khat(s),
                             "frac_khat_gt_0.7": float((khat > KHAT_BAD).mean())})


def psis_diagnostics(model, data, num_samples: int = 1000, *, tol: float = 1e-4, **kwargs):
    """:func:`psis` of ``num_samples`` fresh guide draws per data point of ``data``
    (``kwargs`` go to :func:`importance_log_weights`); labels come from the data."""
    ds = as_dataset(data)
    r = importance_log_weights(model, ds, num_samples, **kwargs)
    return psis(r["log_weight"], r["log_likelihood"], labels=ds.y, tol=tol)


def worst(result, n: int = 16) -> np.ndarray:
    """Positions of the ``n`` data points with the largest k-hat, worst first (ties keep data
    order; exact fits, k-hat = -inf, come last)."""
    checks.positive_int(n, "n")
    return np.argsort(-result["khat"].values, kind="stable")[:n]


def summary(result) -> dict:
    """Headline figures of a :func:`psis` result: how many data points the guide fits."""
    k = result["khat"].values
    out = {
        "n": int(k.size),
        "num_samples": int(result.attrs["num_samples"]),
        "good_k": float(result.attrs["good_k"]),
        "frac_khat_gt_0.7": float((k > KHAT_BAD).mean()),
        "frac_khat_gt_good_k": float((k > result.attrs["good_k"]).mean()),
        "frac_khat_gt_0.5": float((k > 0.5).mean()),
        "khat_median": float(np.median(k)),
        "khat_max": float(k.max()),
        "log_px_psis_mean": float(result["log_px_psis"].mean()),
        "log_px_is_mean": float(result["log_px_is"].mean()),
        "elbo_mean": float(result["elbo"].mean()),
    }
    if "recon" in result:
        finite = np.isfinite(k)
        if finite.sum() > 2:
            from scipy.stats import spearmanr

            out["spearman_khat_recon"] = float(spearmanr(k[finite],
                                                         result["recon"].values[finite])[0])
    return out
