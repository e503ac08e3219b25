r"""Disentanglement scores of a representation against known generative factors.

Codes are ``(N, L)`` arrays (posterior means, or Gaussian posteriors as ``loc``/``scale``),
factors ``(N, K)`` integer classes (e.g. :class:`pyrovae.data.DSprites` factor classes).

- :func:`mig` — mutual information gap (Chen et al. 2018, §5) with their full-dataset
  estimator of :math:`I(z_j; v_k)` from the Gaussian posteriors;
- :func:`mig_histogram` — the same gap with the codes' means discretised into histogram bins and
  scikit-learn's ``mutual_info_score`` (the variant of disentanglement_lib, Locatello et al.
  2019);
- :func:`factor_vae_score` — the majority-vote classifier of Kim and Mnih (2018);
- :func:`dci` — disentanglement, completeness and informativeness (Eastwood and Williams 2018)
  from gradient-boosted trees or the lasso (scikit-learn).

References: Chen, Li, Grosse and Duvenaud (2018) Isolating sources of disentanglement in VAEs,
NeurIPS; Kim and Mnih (2018) Disentangling by factorising, ICML; Eastwood and Williams (2018)
A framework for the quantitative evaluation of disentangled representations, ICLR; Locatello
et al. (2019) Challenging common assumptions in the unsupervised learning of disentangled
representations, ICML.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .. import checks


def _as_codes(a, name: str) -> np.ndarray:
    a = a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"{name}: expected shape (N >= 2, dims), got {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: expected finite numbers")
    return a.astype(np.float64)


def _as_factors(f, n: int) -> np.ndarray:
    f = f.detach().cpu().numpy() if torch.is_tensor(f) else np.asarray(f)
    if f.ndim == 1:
        f = f[:, None]
    if f.ndim != 2 or f.shape[0] != n:
        raise ValueError(f"factors: expected shape ({n}, K) to match the codes, got {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
        raise TypeError(f"factors: expected integer factor classes, got dtype {f.dtype}")
    return f


def _entropy(labels: np.ndarray) -> float:
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def _gap(mi: np.ndarray, entropy: np.ndarray) -> tuple[float, np.ndarray]:
    """MIG from a ``(L, K)`` MI matrix: mean over factors of (top - second) / H(v_k)."""
    top2 = -np.sort(-mi, axis=0)[:2] if mi.shape[0] > 1 else np.vstack([mi, np.zeros_like(mi)])
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where(entropy > 0, (top2[0] - top2[1]) / entropy, np.nan)
    return float(np.nanmean(per)), per


def mig(loc, scale, factors, *, num_samples: int = 10000, seed: int = 0,
        chunk: int = 512) -> dict:
    r"""Mutual information gap with Chen et al.'s (2018, §5) full-dataset estimator.

    .. math::

       \mathrm{MIG} = \frac1K \sum_k \frac{1}{H(v_k)}
         \Bigl(I(z_{j^{(k)}}; v_k) - \max_{j \ne j^{(k)}} I(z_j; v_k)\Bigr),
       \quad j^{(k)} = \arg\max_j I(z_j; v_k),

    with the data set as the distribution of n, :math:`q(z_j) = \frac1N \sum_n q(z_j \mid n)`,
    :math:`q(z_j \mid v_k{=}v) = \frac{1}{|X_v|} \sum_{n \in X_v} q(z_j \mid n)` and
    :math:`I(z_j; v_k) = \mathbb E_{q(z_j, v_k)}[\log q(z_j \mid v_k) - \log q(z_j)]`, the
    expectation taken over one draw :math:`z \sim q(z \mid n)` for each of ``num_samples``
    points n drawn without replacement (all N when fewer). :math:`H(v_k)` is the factor's
    entropy in the data (log K_k on a full grid).

    :param loc: ``(N, L)`` means of the Gaussian posteriors :math:`q(z_j \mid n)`.
    :param scale: ``(N, L)`` their standard deviations.
    :param factors: ``(N, K)`` integer factor classes.
    :returns: ``{"mig": float, "per_factor": (K,), "mi": (L, K), "entropy": (K,),
        "normalized_mi": (L, K)}`` (nats; ``normalized_mi`` = I / H).
    """
    mu, sd = _as_codes(loc, "loc"), _as_codes(scale, "scale")
    if mu.shape != sd.shape:
        raise ValueError(f"scale: expected the shape of loc {mu.shape}, got {sd.shape}")
    if not np.all(sd > 0):
        raise ValueError("scale: expected positive standard deviations")
    n, dims = mu.shape
    f = _as_factors(factors, n)
    checks.positive_int(num_samples, "num_samples")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(n)[:num_samples]  # the points whose codes are drawn
    s = len(idx)
    z = mu[idx] + sd[idx] * rng.standard_normal((s, dims))  # (S, L)
    groups, log_sizes, own = [], [], []
    for k in range(f.shape[1]):
        values, inverse = np.unique(f[:, k], return_inverse=True)
        inv = torch.from_numpy(inverse)  # (N,) value index of each point
        groups.append((inv, len(values)))
        log_sizes.append(torch.log(torch.bincount(inv, minlength=len(values)).double()))
        own.append(inv[idx])  # (S,) value of each sample's point
    mi = np.zeros((dims, f.shape[1]))
    # float32 for the (S_c, N) matrices: they are memory-bound, and log-densities relative to
    # each row's maximum lose nothing that matters at single precision.
    zt = torch.from_numpy(z).float()
    inv_sd = (1 / torch.from_numpy(sd)).float()  # (N, L)
    shift = (torch.from_numpy(mu) / torch.from_numpy(sd)).float()  # (N, L)
    log_norm = (-torch.log(torch.from_numpy(sd)) - 0.5 * math.log(2 * math.pi)).float()
    for j in range(dims):
        acc = np.zeros(f.shape[1])
        for start in range(0, s, chunk):
            zc = zt[start:start + chunk, j]  # (S_c,)
            u = torch.outer(zc, inv_sd[:, j]).sub_(shift[:, j])  # (S_c, N): (z_s - mu_n) / sd_n
            lp = torch.addcmul(log_norm[:, j].expand_as(u), u, u, value=-0.5)  # log q(z_s | n)
            top = lp.max(1, keepdim=True).values  # (S_c, 1)
            e = lp.sub_(top).exp_()  # (S_c, N), in (0, 1]
            top = top[:, 0].double()
            log_qz = torch.log(e.sum(1, dtype=torch.float64)) + top - math.log(n)  # log q(z_j)
            rows = torch.arange(len(zc))
            for k, (inv, size) in enumerate(groups):
                # (S_c, K_k): sums of q(z_s | n) over the points of each value
                g = torch.zeros(len(zc), size).index_add_(1, inv, e)
                v = own[k][start:start + chunk]
                log_qzv = torch.log(g[rows, v].double()) + top - log_sizes[k][v]
                acc[k] += float((log_qzv - log_qz).sum())
        mi[j] = acc / s
    ent = np.array([_entropy(f[:, k]) for k in range(f.shape[1])])
    value, per = _gap(mi, ent)
    return {"mig": value, "per_factor": per, "mi": mi, "entropy": ent,
            "normalized_mi": mi / np.where(ent > 0, ent, np.nan)}


def discretize(codes, num_bins: int = 20) -> np.ndarray:
    """Each column of ``codes`` cut into ``num_bins`` equal-width bins over its range (bin
    indices 0..num_bins-1), as disentanglement_lib's histogram discretiser does."""
    c = _as_codes(codes, "codes")
    checks.int_at_least(num_bins, "num_bins", 2)
    out = np.empty(c.shape, dtype=np.int64)
    for j in range(c.shape[1]):
        edges = np.histogram_bin_edges(c[:, j], bins=num_bins)
        out[:, j] = np.digitize(c[:, j], edges[1:-1])
    return out


def mig_histogram(codes, factors, *, num_bins: int = 20) -> dict:
    """MIG with each code dimension discretised into ``num_bins`` bins (:func:`discretize`) and
    the plug-in mutual information of :func:`sklearn.metrics.mutual_info_score`; factor
    entropies are ``mutual_info_score(v, v)``. Returns the keys of :func:`mig`."""
    from sklearn.metrics import mutual_info_score

    d = discretize(codes, num_bins)
    f = _as_factors(factors, d.shape[0])
    mi = np.array([[mutual_info_score(f[:, k], d[:, j]) for k in range(f.shape[1])]
                   for j in range(d.shape[1])])
    ent = np.array([mutual_info_score(f[:, k], f[:, k]) for k in range(f.shape[1])])
    value, per = _gap(mi, ent)
    return {"mig": value, "per_factor": per, "mi": mi, "entropy": ent,
            "normalized_mi": mi / np.where(ent > 0, ent, np.nan)}


def factor_vae_score(represent: Callable, factor_data, *, num_train: int = 800,
                     num_eval: int = 800, batch_size: int = 64, num_variance: int = 10000,
                     prune_threshold: float = 0.0, seed: int = 0) -> dict:
    r"""FactorVAE disentanglement score (Kim and Mnih 2018).

    Each vote fixes one factor k (uniformly chosen) at a random value, draws ``batch_size``
    observations with the other factors random, represents them, divides each code dimension
    by its standard deviation over ``num_variance`` random observations, and votes for the
    dimension of least variance, labelled k. A majority-vote classifier maps each dimension to
    the factor it most often voted for; the score is its accuracy on ``num_eval`` fresh votes.
    Dimensions whose variance is at most ``prune_threshold`` are left out.

    :param represent: observations ``(n, ...)`` -> codes ``(n, L)`` (e.g. posterior means;
        see :func:`posterior_mean_fn`).
    :param factor_data: has ``factor_sizes``, ``sample_factors(n, generator)`` and
        ``images(factors)`` (:class:`pyrovae.data.DSprites` does).
    :returns: ``{"score": eval accuracy, "train_accuracy", "votes": (L, K) eval votes,
        "active": (L,) bool}``.
    """
    for name, v in (("num_train", num_train), ("num_eval", num_eval),
                    ("batch_size", batch_size), ("num_variance", num_variance)):
        checks.positive_int(v, name)
    if batch_size < 2:
        raise ValueError(f"batch_size: expected at least 2 (a variance is taken), got {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    sizes = tuple(factor_data.factor_sizes)

    def codes(f):
        with torch.no_grad():
            c = represent(factor_data.images(f))
        c = c.detach().cpu().double() if torch.is_tensor(c) else torch.as_tensor(c).double()
        if c.dim() != 2 or c.shape[0] != len(f):
            raise ValueError(f"represent: expected codes of shape ({len(f)}, L), got "
                             f"{tuple(c.shape)}")
        return c

    pool = codes(factor_data.sample_factors(num_variance, gen))
    var = pool.var(0, unbiased=True)  # (L,)
    active = var > prune_threshold
    if not bool(active.any()):
        raise ValueError("factor_vae_score: every code dimension has (near) zero variance")
    sd = var.sqrt()

    def votes(n):
        table = np.zeros((len(var), len(sizes)), dtype=np.int64)
        for _ in range(n):
            k = int(torch.randint(len(sizes), (1,), generator=gen))
            f = factor_data.sample_factors(batch_size, gen)
            f[:, k] = int(torch.randint(sizes[k], (1,), generator=gen))
            v = (codes(f) / sd).var(0, unbiased=True)  # (L,)
            v[~active] = math.inf
            table[int(v.argmin()), k] += 1
        return table

    train, test = votes(num_train), votes(num_eval)
    vote_for = train.argmax(1)  # (L,) each dimension's majority factor
    train_acc = train.max(1).sum() / num_train
    eval_acc = test[np.arange(len(vote_for)), vote_for].sum() / num_eval
    return {"score": float(eval_acc), "train_accuracy": float(train_acc), "votes": test,
            "active": active.numpy()}


def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy of each row of non-negative ``p`` (normalised per row) in log base ``base``."""
    p = p / np.clip(p.sum(1, keepdims=True), 1e-300, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(1)
    return h / math.log(base) if base > 1 else np.zeros(len(p))


def dci(codes_train, factors_train, codes_test, factors_test, *, regressor: str = "gbt",
        alpha: float = 0.02, seed: int = 0, gbt_args: dict | None = None) -> dict:
    r"""Disentanglement, completeness and informativeness (Eastwood and Williams 2018).

    One predictor per factor k from the codes gives importances :math:`R_{jk} \ge 0` of code j
    for factor k: ``"gbt"`` — scikit-learn's ``GradientBoostingClassifier`` (factors as
    classes; ``feature_importances_``; informativeness = mean test accuracy), as
    disentanglement_lib does; ``"lasso"`` — ``Lasso(alpha)`` on standardised codes and factors
    (:math:`|w|`; informativeness = mean test :math:`R^2`), as the paper does. Then

    .. math::

       D = \sum_j \rho_j \bigl(1 - H_K(P_{j\cdot})\bigr), \quad
       C = \sum_k \tilde\rho_k \bigl(1 - H_L(\tilde P_{\cdot k})\bigr),

    with :math:`P_{jk} = R_{jk} / \sum_k R_{jk}`, :math:`\tilde P_{jk} = R_{jk} / \sum_j R_{jk}`,
    entropies in bases K and L, code weights :math:`\rho_j = \sum_k R_{jk} / \sum R` and factor
    weights :math:`\tilde\rho_k = \sum_j R_{jk} / \sum R`.

    :returns: ``{"disentanglement", "completeness", "informativeness", "importance": (L, K)}``.
    """
    ctr, cte = _as_codes(codes_train, "codes_train"), _as_codes(codes_test, "codes_test")
    ftr, fte = _as_factors(factors_train, len(ctr)), _as_factors(factors_test, len(cte))
    if ctr.shape[1] != cte.shape[1] or ftr.shape[1] != fte.shape[1]:
        raise ValueError("codes_test/factors_test: expected the widths of the training arrays")
    dims, k = ctr.shape[1], ftr.shape[1]
    importance = np.zeros((dims, k))
    scores = []
    if regressor == "gbt":
        from sklearn.ensemble import GradientBoostingClassifier

        for i in range(k):
            clf = GradientBoostingClassifier(random_state=seed, **(gbt_args or {}))
            clf.fit(ctr, ftr[:, i])
            importance[:, i] = np.abs(clf.feature_importances_)
            scores.append(float(np.mean(clf.predict(cte) == fte[:, i])))
    elif regressor == "lasso":
        from sklearn.linear_model import Lasso

        mean, sd = ctr.mean(0), ctr.std(0)
        sd = np.where(sd > 0, sd, 1.0)
        xtr, xte = (ctr - mean) / sd, (cte - mean) / sd
        for i in range(k):
            y_mean, y_sd = ftr[:, i].mean(), ftr[:, i].std() or 1.0
            reg = Lasso(alpha=alpha, random_state=seed).fit(xtr, (ftr[:, i] - y_mean) / y_sd)
            importance[:, i] = np.abs(reg.coef_)
            scores.append(float(reg.score(xte, (fte[:, i] - y_mean) / y_sd)))
    else:
        raise ValueError(f"regressor: expected 'gbt' or 'lasso', got {regressor!r}")
    total = importance.sum()
    if total <= 0:
        return {"disentanglement": 0.0, "completeness": 0.0,
                "informativeness": float(np.mean(scores)), "importance": importance}
    d_per = 1 - _entropy_rows(importance, k)  # (L,)
    c_per = 1 - _entropy_rows(importance.T, dims)  # (K,)
    rho_code, rho_factor = importance.sum(1) / total, importance.sum(0) / total
    return {"disentanglement": float((rho_code * d_per).sum()),
            "completeness": float((rho_factor * c_per).sum()),
            "informativeness": float(np.mean(scores)), "importance": importance}


def posterior_mean_fn(model, *, site: str | None = None, batch_size: int = 256) -> Callable:
    """``x -> (n, L)`` posterior means of ``site`` under ``model``'s guide, for
    :func:`factor_vae_score`."""
    from .latents import posterior_moments

    return lambda x: posterior_moments(model, x, site=site, batch_size=batch_size)["loc"]
