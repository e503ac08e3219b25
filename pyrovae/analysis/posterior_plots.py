"""Figures of amortised posteriors: ArviZ's posterior and forest plots for chosen latents and
inputs, Pareto k-hat diagnostics, latent maps and posterior-predictive image grids.

Like :mod:`pyrovae.analysis.plots`, every figure is a ``matplotlib.figure.Figure`` made without
pyplot (ArviZ draws into axes handed to it), written atomically and returned as a path.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager

import numpy as np
from matplotlib.figure import Figure

from .inference_data import OBS, import_arviz
from .plots import _save, _show_grid, as_images, image_grid
from .psis import KHAT_BAD, worst


@contextmanager
def _quiet():
    """ArviZ 0.23's matplotlib backend calls an API matplotlib 3.11 deprecates."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Passing a dict or None as alias_mapping")
        yield


def _latent_var(idata, var):
    """``var`` or, when None, the first posterior variable with an ``obs`` dim."""
    post = idata.posterior
    if var is None:
        local = [k for k, v in post.data_vars.items() if OBS in v.dims]
        if not local:
            raise ValueError("idata: its posterior has no per-data-point latent variable")
        return local[0]
    if var not in post:
        raise ValueError(f"var: expected one of the posterior's variables "
                         f"{sorted(post.data_vars)}, got {var!r}")
    return var


def _selection(idata, var, obs, components):
    """ArviZ ``coords`` picking data points ``obs`` and latent ``components`` of ``var``."""
    da = idata.posterior[var]
    coords = {}
    if OBS in da.dims:
        obs = list(da[OBS].values[:4]) if obs is None else list(obs)
        missing = [o for o in obs if o not in set(da[OBS].values.tolist())]
        if missing:
            raise ValueError(f"obs: {missing} are not among the data points of idata")
        coords[OBS] = obs
    event = [d for d in da.dims if d not in ("chain", "draw", OBS)]
    if event:
        first = event[0]
        comps = list(da[first].values[:2]) if components is None else list(components)
        coords[first] = comps
    n_panels = 1
    for d in da.dims:
        if d in ("chain", "draw"):
            continue
        n_panels *= len(coords[d]) if d in coords else da.sizes[d]
    return coords, n_panels


def _latent_labeller(idata, var: str):
    """An ArviZ labeller that names a panel by what it shows: ``z[1], data point 3`` instead of
    ArviZ's ``z`` above ``3, 1`` (the coordinates in dim order). ``var``'s event dims
    (``<var>_dim_<i>``) become its indices, ``obs`` the data point, a plate dim
    ``name=value``. (The forest plot passes no variable name after its first row, hence
    ``var`` given here.)"""
    from arviz.labels import BaseLabeller

    event = [d for d in idata.posterior[var].dims if d.startswith(f"{var}_dim_")]

    class LatentLabeller(BaseLabeller):
        def make_label_vert(self, var_name, sel, isel):
            index = [str(sel[d]) for d in event if d in sel]
            name = f"{var}[{', '.join(index)}]" if index else var
            rest = [f"data point {v}" if d == OBS else f"{d}={v}" for d, v in sel.items()
                    if d not in event]
            return ", ".join([name, *rest])

        make_label_flat = make_label_vert

    return LatentLabeller()


def plot_posterior(idata, path, var: str | None = None, obs=None, components=None,
                   kind: str = "posterior", **kwargs):
    """``az.plot_posterior`` (``kind="posterior"``: one density per panel with its HDI) or
    ``az.plot_forest`` (``kind="forest"``: intervals side by side, chains apart) of latent
    ``var`` for data points ``obs`` (default the first four) and latent components
    ``components`` of its first latent dim (default the first two); ``kwargs`` go to ArviZ.

    Each panel (each row of the forest) is titled with the component and the data point it
    shows, e.g. ``z[1], data point 3``; the x axis is the latent's value."""
    az = import_arviz()
    if kind not in ("posterior", "forest"):
        raise ValueError(f"kind: expected 'posterior' or 'forest', got {kind!r}")
    var = _latent_var(idata, var)
    coords, n = _selection(idata, var, obs, components)
    kwargs.setdefault("labeller", _latent_labeller(idata, var))
    hdi = kwargs.get("hdi_prob")
    if kind == "posterior":
        ncol = min(n, 4)
        nrow = math.ceil(n / ncol)
        fig = Figure(figsize=(3.4 * ncol, 3.1 * nrow + 0.4), layout="constrained")
        axes = np.array([fig.add_subplot(nrow, ncol, i + 1) for i in range(nrow * ncol)])
        for ax in axes[n:]:
            ax.axis("off")
        with _quiet():
            az.plot_posterior(idata, var_names=[var], coords=coords, ax=axes[:n], show=False,
                              textsize=kwargs.pop("textsize", 9), **kwargs)
        for ax in axes[:n]:
            ax.set_xlabel(f"value of {ax.get_title().split(',')[0]}", fontsize=8)
            ax.set_ylabel("density of the guide's draws", fontsize=8)
        fig.suptitle(f"guide posterior q({var} | x) per data point (kernel density of "
                     f"{idata.posterior.sizes['draw'] * idata.posterior.sizes['chain']} draws, "
                     f"with its {'94%' if hdi is None else f'{100 * hdi:g}%'} HDI)",
                     fontsize=9)
    else:
        fig = Figure(figsize=(6.4, 1.3 + 0.35 * n * idata.posterior.sizes["chain"]))
        ax = fig.add_subplot(1, 1, 1)
        with _quiet():
            az.plot_forest(idata, var_names=[var], coords=coords, combined=False, ax=ax,
                           show=False, **kwargs)
        ax.set_xlabel(f"value of {var} (point: median; thick: central 50%; thin: "
                      f"{'94%' if hdi is None else f'{100 * hdi:g}%'} HDI)", fontsize=9)
        ax.set_ylabel(f"component and data point (one line per chain of "
                      f"{idata.posterior.sizes['draw']} draws)", fontsize=9)
        ax.set_title(f"guide posterior q({var} | x): intervals per data point")
    return _save(fig, path)


def plot_khat(result, path, title: str = "Pareto k-hat per data point"):
    """``az.plot_khat`` of a :func:`~pyrovae.analysis.psis` result or an ``ELPDData``, with
    the 0.5 / ``good_k`` / 0.7 lines and the share of points in each band."""
    az = import_arviz()
    from .compare import elpd

    e = result if isinstance(result, az.ELPDData) else elpd(result)
    k = e["pareto_k"]
    if np.isneginf(k.values).any():  # exact weights: drawn at the bottom of the finite range
        e = e.copy()
        e["pareto_k"] = k.where(~np.isneginf(k), min(float(k.where(np.isfinite(k)).min()
                                                             if np.isfinite(k).any() else 0.0),
                                                       -0.5))
    fig = Figure(figsize=(7, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    with _quiet():
        az.plot_khat(e, ax=ax, show_bins=True, show=False)
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":", label="k-hat = 0.5")
    ax.axhline(KHAT_BAD, color="C3", lw=0.8, ls="--", label=f"k-hat = {KHAT_BAD}")
    ax.set_xlabel("data point (position in the scored split)")
    ax.set_ylabel("Pareto k-hat of its importance weights")
    ax.legend(loc="lower left", fontsize="x-small")
    ax.set_title(title)
    return _save(fig, path)


def _finite_khat(result):
    k = result["khat"].values.copy()
    lo = np.min(k[np.isfinite(k)], initial=0.0)
    return np.where(np.isneginf(k), min(lo, -0.5), k)  # exact weights drawn at the bottom


def plot_khat_vs_recon(result, path):
    """k-hat against the reconstruction error -E_q[log p(x|z)] per data point (coloured by
    label when the result has labels)."""
    if "recon" not in result:
        raise ValueError("result: it has no 'recon'; compute it from log-likelihoods "
                         "(psis_diagnostics, or psis with log_likelihood)")
    fig = Figure(figsize=(5.4, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    k, r = _finite_khat(result), result["recon"].values
    if "label" in result:
        sc = ax.scatter(r, k, c=result["label"].values, cmap="tab10", s=8)
        fig.colorbar(sc, ax=ax, label="label y of the data point")
    else:
        ax.scatter(r, k, s=8)
    ax.axhline(KHAT_BAD, color="C3", lw=0.8, ls="--", label="k-hat = 0.7")
    ax.set_xlabel("reconstruction error  -E_q[log p(x | z)]  (nats)")
    ax.set_ylabel("Pareto k-hat")
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title("guide fit against reconstruction")
    return _save(fig, path)


def plot_worst_inputs(result, x, path, n: int = 16, ncol: int = 8):
    """The ``n`` inputs with the largest k-hat (the encoder's worst fits), each titled with its
    k-hat (and label). ``x`` holds the inputs in the order of ``result``'s ``obs``."""
    k = result["khat"].values
    if len(x) != len(k):
        raise ValueError(f"x: expected the {len(k)} inputs the result scores, got {len(x)}")
    order = worst(result, n)
    imgs = as_images(x[order] if hasattr(x, "shape") else np.asarray(x)[order])
    ncol = min(ncol, len(order))
    nrow = math.ceil(len(order) / ncol)
    fig = Figure(figsize=(1.3 * ncol, 1.55 * nrow))
    labels = result["label"].values if "label" in result else None
    for j, i in enumerate(order):
        ax = fig.add_subplot(nrow, ncol, j + 1)
        ax.imshow(imgs[j], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.axis("off")
        tag = f"k={k[i]:.2f}" + ("" if labels is None else f" y={labels[i]}")
        ax.set_title(tag, fontsize=7)
    fig.suptitle("inputs with the largest k-hat (panel: k = its Pareto k-hat" +
                 ("" if labels is None else ", y = its label") + ")", fontsize=9)
    return _save(fig, path)


def plot_khat_distributions(results: dict, path, title: str = "k-hat by group"):
    """Histograms of k-hat for several groups of data points (e.g. trained and held-out
    classes), ``{name: psis result or k-hat array}``."""
    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    vals = {}
    for name, r in results.items():
        k = np.asarray(r["khat"].values if hasattr(r, "data_vars") else r, float)
        vals[name] = k[np.isfinite(k)]
    allv = np.concatenate(list(vals.values()))
    bins = np.linspace(min(allv.min(), 0.0), max(allv.max(), 1.0), 40)
    for name, k in vals.items():
        ax.hist(k, bins=bins, alpha=0.55, density=True, label=f"{name} (n={len(k)})")
    ax.axvline(KHAT_BAD, color="C3", lw=0.8, ls="--", label=f"k-hat = {KHAT_BAD}")
    ax.set_xlabel("Pareto k-hat")
    ax.set_ylabel("density")
    ax.legend(fontsize="small")
    ax.set_title(title)
    return _save(fig, path)


def plot_latent_map(idata, path, var: str | None = None, n_clouds: int = 6):
    """2-D map of latent ``var``: posterior means of every data point coloured by label, with
    the guide's draws for ``n_clouds`` of them as clouds (first two principal components of
    the means when the latent has more than two dims)."""
    var = _latent_var(idata, var)
    da = idata.posterior[var]
    if OBS not in da.dims:
        raise ValueError(f"var: {var!r} is a global latent (no 'obs' dim); pick a local one")
    draws = da.stack(__sample__=("chain", "draw")).transpose(OBS, "__sample__", ...).values
    draws = draws.reshape(draws.shape[0], draws.shape[1], -1)  # (N, S, L)
    means = draws.mean(1)
    xlabel, ylabel = f"{var}[0]", f"{var}[1]"
    if means.shape[1] > 2:
        from sklearn.decomposition import PCA

        pca = PCA(2).fit(means)
        means, proj = pca.transform(means), pca.transform
        xlabel, ylabel = (f"principal component {i} of the posterior means of {var}"
                          for i in (1, 2))
    elif means.shape[1] == 1:
        def proj(a):
            return np.concatenate([a, np.zeros_like(a)], 1)

        means = proj(means)
        ylabel = "(none: a 1-d latent)"
    else:
        def proj(a):
            return a
    fig = Figure(figsize=(5.4, 4.6))
    ax = fig.add_subplot(1, 1, 1)
    labels = None
    if "constant_data" in idata.groups() and "y" in idata.constant_data:
        labels = idata.constant_data["y"].values
    if labels is None:
        ax.scatter(means[:, 0], means[:, 1], s=6, c="0.4")
    else:
        sc = ax.scatter(means[:, 0], means[:, 1], s=6, c=labels, cmap="tab10")
        fig.colorbar(sc, ax=ax, label="label y of the data point")
    for i in np.linspace(0, len(draws) - 1, min(n_clouds, len(draws))).astype(int):
        cloud = proj(draws[i, :150])  # up to 150 draws per cloud
        ax.scatter(cloud[:, 0], cloud[:, 1], s=3, alpha=0.35, color="k", linewidths=0)
        ax.scatter(*means[i], s=30, marker="x", color="k")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(f"posterior means of {var}, one dot per data point (clouds: draws for "
                 f"{min(n_clouds, len(draws))} points, x their means)", fontsize=9)
    return _save(fig, path)


def plot_posterior_predictive(idata, path, obs=None, n_draws: int = 7, var: str | None = None):
    """Image grid: one row per data point in ``obs`` (default the first eight), the observed
    image first, then ``n_draws`` draws of x from the posterior predictive."""
    if "posterior_predictive" not in idata.groups():
        raise ValueError("idata: it has no posterior_predictive group (to_inference_data with "
                         "predictive=True writes one)")
    pp = idata.posterior_predictive
    var = var or next(iter(pp.data_vars))
    if var not in pp:
        raise ValueError(f"var: expected one of {sorted(pp.data_vars)}, got {var!r}")
    da = pp[var]
    obs = list(da[OBS].values[:8]) if obs is None else list(obs)
    draws = da.stack(__sample__=("chain", "draw")).transpose(OBS, "__sample__", ...)
    n_draws = min(n_draws, draws.sizes["__sample__"])
    rows = []
    observed = idata.observed_data[var]
    for o in obs:
        rows.append(observed.sel({OBS: o}).values[None])
        rows.append(draws.sel({OBS: o}).values[:n_draws])
    observed_imgs = np.concatenate(rows[0::2]).astype(float)
    draw_imgs = np.concatenate(rows[1::2]).astype(float)
    fig = Figure(figsize=(1.0 * (n_draws + 1) + 1.6, 1.0 * len(obs) + 0.6))
    grid = fig.add_gridspec(1, 2, width_ratios=[1, n_draws], wspace=0.05)
    ax = fig.add_subplot(grid[0, 0])
    observed_grid = image_grid(observed_imgs, ncol=1)
    _show_grid(ax, observed_grid, "observed x")
    ax.axis("on")  # the row labels name the data points
    for side in ax.spines.values():
        side.set_visible(False)
    h = observed_grid.shape[0] / len(obs)
    ax.set_yticks([h * (r + 0.5) for r in range(len(obs))])
    ax.set_yticklabels([f"data point {o}" for o in obs], fontsize=8)
    ax.set_xticks([])
    _show_grid(fig.add_subplot(grid[0, 1]), image_grid(draw_imgs, ncol=n_draws),
               f"{n_draws} posterior-predictive draws x ~ p(x | z), z ~ q(z | x) per row")
    return _save(fig, path)


__all__ = ["plot_khat", "plot_khat_distributions", "plot_khat_vs_recon", "plot_latent_map",
           "plot_posterior", "plot_posterior_predictive", "plot_worst_inputs"]
