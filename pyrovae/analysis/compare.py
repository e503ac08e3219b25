r"""Model comparison by held-out log-likelihood, in ArviZ's ``compare`` layout.

For a test set :math:`x_1..x_N` not used in training, the expected log predictive density is
estimated by :math:`\widehat{\mathrm{elpd}} = \sum_i \log \hat p(x_i)` with standard error
:math:`\sqrt{N \operatorname{Var}_i \log \hat p(x_i)}`, and two models by the pointwise
differences :math:`\sum_i [\log \hat p_A(x_i) - \log \hat p_B(x_i)]` with standard error
:math:`\sqrt{N \operatorname{Var}_i(\cdot)}` (Vehtari, Gelman and Gabry 2017, "Practical
Bayesian model evaluation using leave-one-out cross-validation and WAIC", eqs. 22-24). The
data are already held out, so :math:`\log \hat p(x_i)` needs no leave-one-out correction: it
is the per-data-point importance-sampling estimate of :mod:`pyrovae.analysis.psis` (PSIS
smoothed by default), and each point's :math:`\hat k` goes where ``az.loo`` puts its
``pareto_k``. ArviZ's ``compare`` accepts precomputed results only in its ``loo``/``waic``
layout, so the columns read ``elpd_loo`` and ``p_loo`` (which is NaN here: an amortised model
has no effective-number-of-parameters correction on held-out data).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .inference_data import OBS, import_arviz
from .psis import KHAT_BAD, psis, psis_diagnostics

ESTIMATORS = {"psis": "log_px_psis", "is": "log_px_is"}


def _check_estimator(estimator):
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: expected one of {sorted(ESTIMATORS)}, got {estimator!r}")


def elpd(source, data=None, num_samples: int = 1000, *, estimator: str = "psis", **kwargs):
    r"""Held-out expected log predictive density as an ArviZ ``ELPDData`` (``az.loo``'s layout).

    :param source: a model/guide pair (scored on ``data`` with ``num_samples`` guide draws per
        point; ``kwargs`` go to :func:`~pyrovae.analysis.psis_diagnostics`), a
        :func:`~pyrovae.analysis.psis` result, or an ``InferenceData`` from
        :func:`~pyrovae.analysis.to_inference_data`.
    :param estimator: ``"psis"`` (Pareto-smoothed importance sampling) or ``"is"`` (the plain
        IWAE bound :math:`\mathcal L_S`) for :math:`\log \hat p(x_i)`.

    Fields: ``elpd_loo`` (:math:`\sum_i \log \hat p(x_i)`), ``se``, ``p_loo`` (NaN),
    ``n_samples``, ``n_data_points``, ``warning`` (some :math:`\hat k_i` above ``good_k``),
    ``loo_i`` (pointwise), ``pareto_k``, ``scale`` (``"log"``), ``good_k``.
    """
    _check_estimator(estimator)
    az = import_arviz()
    if hasattr(source, "data_vars") and "khat" in source:
        result = source
    elif hasattr(source, "groups") and hasattr(source, "sample_stats"):
        result = psis(source)
    else:
        if data is None:
            raise ValueError("data: a model needs the held-out data to score, got None")
        result = psis_diagnostics(source, data, num_samples, **kwargs)
    pointwise = result[ESTIMATORS[estimator]].rename("loo_i")
    n = pointwise.sizes[OBS]
    total = float(pointwise.sum())
    se = math.sqrt(n * float(np.var(pointwise.values)))
    good_k = float(result.attrs["good_k"])
    khat = result["khat"].rename("pareto_shape")
    return az.ELPDData(
        data=[total, se, math.nan, int(result.attrs["num_samples"]), n,
              bool((khat > good_k).any()), pointwise, khat, "log", good_k],
        index=["elpd_loo", "se", "p_loo", "n_samples", "n_data_points", "warning", "loo_i",
               "pareto_k", "scale", "good_k"],
    )


def compare(models: dict, data=None, num_samples: int = 1000, *, estimator: str = "psis",
            method: str = "stacking", **kwargs):
    r"""``az.compare`` of several models on one held-out data set.

    :param models: ``{name: model | psis result | InferenceData | ELPDData}``; models are scored
        on ``data`` with ``num_samples`` draws each (see :func:`elpd`). All must cover the
        same data points in the same order.
    :param method: ArviZ's weighting, ``"stacking"`` (Yao et al. 2018), ``"BB-pseudo-BMA"`` or
        ``"pseudo-BMA"``. Stacking exponentiates pointwise log-densities, so it is only usable
        while :math:`\log \hat p(x_i) > -700` (float64); otherwise use ``"pseudo-BMA"``.

    Returns ArviZ's table, best model first: ``rank``, ``elpd_loo`` (here the held-out elpd),
    ``p_loo`` (NaN), ``elpd_diff`` and ``dse`` (difference to the best model and its standard
    error, from pointwise differences), ``weight``, ``se``, ``warning`` (some
    :math:`\hat k` above ``good_k``), ``scale``.
    """
    _check_estimator(estimator)
    if not isinstance(models, dict) or len(models) < 2:
        what = f"a dict of {len(models)}" if isinstance(models, dict) else type(models).__name__
        raise ValueError(f"models: expected a dict of at least two named models, got {what}")
    az = import_arviz()
    elpds = {}
    for name, m in models.items():
        elpds[name] = m if isinstance(m, az.ELPDData) else elpd(
            m, data, num_samples, estimator=estimator, **kwargs)
    sizes = {name: e["n_data_points"] for name, e in elpds.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"models: they were scored on different numbers of data points "
                         f"{sizes}; compare them on one data set")
    with warnings.catch_warnings():  # ArviZ 0.23 calls a pandas API that pandas 3.1 deprecates
        warnings.filterwarnings("ignore", message="The inplace keyword")
        return az.compare(elpds, method=method)


__all__ = ["ESTIMATORS", "KHAT_BAD", "compare", "elpd"]
