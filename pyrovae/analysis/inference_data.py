"""Export of amortised posteriors to ArviZ ``InferenceData``.

ArviZ's Pyro converter takes MCMC runs only; here every data point has its own posterior
q(z | x_i), so draws carry an ``obs`` dim beside ``chain`` and ``draw``. Sites are discovered
from traces, not hard-coded, so any model/guide pair exports: local latent sites (inside the
data plate) get an ``obs`` dim, global ones (outside it: a Bayesian decoder layer, mixture
means) do not, and every other batch dim is named after the ``pyro.plate`` that made it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from pyro import poutine

from .. import checks
from .._runtime import eval_mode, module_device, seeded
from ..data import as_dataset
from ..infer.particles import _PARTICLES, ParticleTracer
from ..protocol import as_model, input_names

OBS = "obs"  # the dim that indexes data points


def import_arviz():
    """ArviZ, with its import-time notice about the 1.0 refactor silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def _arrange(tracer, site: dict, value: torch.Tensor, event_dim: int, p: int):
    """A site's value ``(P?, plates..., *event)`` as ``(P, [B,] other plates..., *event)`` and
    the names of its dims after the particle dim.

    Batch dims are named by the plate that made them (the data plate's dim is ``"obs"`` and comes
    first); size-1 dims that no plate made (broadcasting room) are dropped.
    """
    n = tracer.max_plate_nesting + 1
    batch_nd = value.dim() - event_dim
    v = value.reshape((1,) * (n - batch_nd) + tuple(value.shape))  # n batch dims, then event
    frames = {f.dim: f for f in site["cond_indep_stack"]
              if f.vectorized and f.name != _PARTICLES}
    axes, names, dropped = [], [], []
    for axis in range(1, n):
        f = frames.get(axis - n)
        if f is not None and f.name == tracer.plate:
            axes.insert(0, axis)  # the data dim goes first
            names.insert(0, OBS)
        elif f is not None:
            axes.append(axis)
            names.append(f.name)
        elif v.shape[axis] != 1:
            axes.append(axis)
            names.append(f"{site['name']}_batch_{axis}")
        else:
            dropped.append(axis)
    event = list(range(n, v.dim()))
    v = v.permute(0, *axes, *dropped, *event)
    kept = 1 + len(axes)
    v = v.reshape(v.shape[:kept] + v.shape[kept + len(dropped):])  # size-1 dims removed
    names += [f"{site['name']}_dim_{i}" for i in range(event_dim)]
    return v.expand(p, *v.shape[1:]), names


def _global_trace(guide_tr, names):
    """The guide trace reduced to its global latent sites, to replay on later batches."""
    tr = guide_tr.copy()
    for name in list(tr.nodes):
        if name not in names:
            tr.remove_node(name)
    return tr


def _draw(model, ds, p: int, batch_size: int, seed, predictive: bool, dev, plate):
    """Guide draws, log-densities and predictive draws for every data point of ``ds``:
    arrays with ``P = p`` leading particles."""
    post, loglik, pred, obs, dims, lw_all = {}, {}, {}, {}, {}, []
    glob, lw_glob = {}, None
    tracer = None
    with eval_mode(model), seeded(seed, dev), torch.no_grad():
        for batch in ds.batches(batch_size):
            b = batch["x"].shape[0]
            kwargs = {k: batch[k] for k in input_names(model, batch)}
            if tracer is None:
                tracer = ParticleTracer(model.model, model.guide, kwargs, b, plate,
                                        global_latents=True)
            model_tr, guide_tr = tracer.traces(kwargs, p)
            if tracer.global_latent and not glob:
                # One draw of the global latents per particle, the same for every data point:
                # later batches replay them.
                for info in tracer.global_latent:
                    site = guide_tr.nodes[info.name]
                    v, dims[info.name] = _arrange(tracer, site, site["value"], info.event_dim, p)
                    glob[info.name] = v.cpu()
                lw_glob = tracer.global_log_weights(model_tr, guide_tr, p).cpu()  # (P,)
                tracer.guide = poutine.replay(model.guide,
                                              trace=_global_trace(guide_tr, tracer.global_names))
            for info in tracer.latent:
                site = guide_tr.nodes[info.name]
                v, dims[info.name] = _arrange(tracer, site, site["value"], info.event_dim, p)
                post.setdefault(info.name, []).append(v.cpu())
            for info in tracer.observed:
                site = model_tr.nodes[info.name]
                loglik.setdefault(info.name, []).append(
                    tracer.per_datum(site["log_prob"], p, b).cpu())  # (P, B)
                v, dims[info.name] = _arrange(tracer, site, site["value"], info.event_dim, 1)
                obs.setdefault(info.name, []).append(v[0].cpu())  # (B, ...)
                if predictive:
                    draw = site["fn"].sample()
                    v, _ = _arrange(tracer, site, draw, info.event_dim, p)
                    pred.setdefault(info.name, []).append(v.cpu())
            lw_all.append(tracer.log_weights(model_tr, guide_tr, p, b).cpu())  # (P, B)

    def cat(chunks, axis=1):
        return torch.cat(chunks, dim=axis).numpy()

    return {
        "posterior": {**{k: v.numpy() for k, v in glob.items()},
                      **{k: cat(v) for k, v in post.items()}},
        "log_likelihood": {k: cat(v) for k, v in loglik.items()},
        "posterior_predictive": {k: cat(v) for k, v in pred.items()},
        "observed_data": {k: cat(v, 0) for k, v in obs.items()},
        "log_weight": cat(lw_all),
        "log_weight_global": None if lw_glob is None else lw_glob.numpy(),
        "dims": dims,
    }


def to_inference_data(model, data, num_samples: int = 100, *, chains: int = 1,
                      batch_size: int = 100, seed: int | None = 0, predictive: bool = True,
                      device=None, plate: str | None = None, coords: dict | None = None,
                      dims: dict | None = None):
    r"""``InferenceData`` for a model/guide pair on ``data`` (N data points).

    Groups (``S = num_samples`` draws per chain):

    - ``posterior``: each local latent site's draws :math:`z \sim q(z \mid x_i)`, dims
      ``(chain, draw, obs, <site>_dim_0, ...)``; each global latent site's draws
      :math:`\theta \sim q(\theta)` (sites outside the data plate), dims
      ``(chain, draw, <plate>..., <site>_dim_0, ...)``, one draw shared by all data points;
    - ``log_likelihood``: :math:`\log p(x_i \mid z_i, \theta)` per observed site,
      ``(chain, draw, obs)``;
    - ``sample_stats``: ``log_weight`` :math:`= \log p(x_i, z_i \mid \theta) - \log q(z_i \mid
      x_i, \theta)`, ``(chain, draw, obs)``: the importance weights behind the IWAE bound
      (Burda et al. 2016, eq. 8) and the PSIS diagnostics of :mod:`pyrovae.analysis.psis`;
      with global latents also ``log_weight_global`` :math:`= \log p(\theta) - \log q(\theta)`,
      ``(chain, draw)``;
    - ``posterior_predictive`` (if ``predictive``): :math:`x \sim p(x \mid z, \theta)` per draw;
    - ``observed_data``: x; ``constant_data``: labels ``y``, when the data has them.

    :param model: a model/guide pair, or a *list* of them (separately trained runs of one
        model): run ``r`` then gives chains ``r * chains ... (r + 1) * chains - 1``, drawn with
        seed ``seed + r``. Within a run, chains are independent streams of guide draws.
    :param plate: the data plate's name when more than one plate has the batch's size.
    :param coords: extra or replacing coordinates, e.g. ``{"obs": ids, "z_dim_0": names}``
        (default ``obs`` = 0..N-1).
    :param dims: dim names replacing the defaults for a variable (without chain and draw),
        e.g. ``{"z": ["obs", "latent"]}``.
    """
    az = import_arviz()
    checks.positive_int(num_samples, "num_samples")
    checks.positive_int(chains, "chains")
    checks.positive_int(batch_size, "batch_size")
    runs = model if isinstance(model, list) else [model]
    if not runs:
        raise ValueError("model: expected a model/guide pair or a non-empty list of them, got []")
    runs = [as_model(m) for m in runs]
    for name, value in (("coords", coords), ("dims", dims)):
        if value is not None and not isinstance(value, dict):
            raise TypeError(f"{name}: expected a dict, got {type(value).__name__}")
    dev = module_device(runs[0]) if device is None else torch.device(device)
    ds = as_dataset(data).frozen(0 if seed is None else seed).to(dev)
    p = num_samples * chains
    parts = []
    for r, m in enumerate(runs):
        s = None if seed is None else seed + r
        parts.append(_draw(m, ds, p, batch_size, s, predictive, dev, plate))
    first = parts[0]
    for r, part in enumerate(parts[1:], 1):
        for group in ("posterior", "log_likelihood", "observed_data"):
            a = {k: v.shape for k, v in first[group].items()}
            b = {k: v.shape for k, v in part[group].items()}
            if a != b:
                raise ValueError(f"model: run {r} of the list has {group} sites {b}, run 0 has "
                                 f"{a}; chains must come from runs of the same model")

    def chained(key, group=None):
        arrays = [part[key] if group is None else part[group][key] for part in parts]
        a = np.concatenate([x.reshape(chains, num_samples, *x.shape[1:]) for x in arrays], 0)
        return a  # (runs * chains, S, ...)

    names_dims = {k: list(v) for k, v in first["dims"].items()}
    sample_stats = {"log_weight": chained("log_weight")}
    names_dims["log_weight"] = [OBS]
    if first["log_weight_global"] is not None:
        sample_stats["log_weight_global"] = chained("log_weight_global")
        names_dims["log_weight_global"] = []
    for k in first["log_likelihood"]:
        names_dims[k] = names_dims.get(k, [OBS])
    groups = {
        "posterior": {k: chained(k, "posterior") for k in first["posterior"]} or None,
        "log_likelihood": {k: chained(k, "log_likelihood") for k in first["log_likelihood"]},
        "sample_stats": sample_stats,
        "observed_data": first["observed_data"],
    }
    if predictive:
        groups["posterior_predictive"] = {
            k: chained(k, "posterior_predictive") for k in first["posterior_predictive"]}
    if ds.y is not None:
        groups["constant_data"] = {"y": ds.y.cpu().numpy()}
        names_dims["y"] = [OBS]
    names_dims.update(dims or {})
    all_coords = {OBS: np.arange(len(ds)), **(coords or {})}
    if len(all_coords[OBS]) != len(ds):
        raise ValueError(f"coords: 'obs' needs {len(ds)} labels, one per data point, got "
                         f"{len(all_coords[OBS])}")
    return az.from_dict(**groups, coords=all_coords, dims=names_dims,
                        attrs={"inference_library": "pyrovae", "num_runs": len(runs),
                               "chains_per_run": chains})


def save_inference_data(idata, path) -> Path:
    """Writes ``idata`` to the netCDF file ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        idata.to_netcdf(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_inference_data(path):
    """Reads an ``InferenceData`` netCDF file fully into memory (the file is closed after)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such netCDF file {path}")
    az = import_arviz()
    with az.rc_context({"data.load": "eager"}):
        return az.from_netcdf(str(path))
