"""``pyrovae analyze RUN`` and ``pyrovae compare RUN RUN ...``: posterior analysis of run
folders, from Python.

:func:`analyze_run` writes into the run folder

- ``inference_data.nc``: ArviZ ``InferenceData`` of ``draws`` guide draws for the first
  ``num_points`` points of the split (:func:`~pyrovae.analysis.to_inference_data`);
- ``psis.json`` (headline figures) and ``psis.csv`` (one row per data point: k-hat, PSIS and
  plain IS estimates of log p(x), ELBO, reconstruction error, ESS, label) from
  ``num_samples`` fresh draws per point (:func:`~pyrovae.analysis.psis_diagnostics`);
- ``khat.png``, ``khat_recon.png``, ``worst_khat.png``, ``posterior.png``, ``forest.png``,
  ``posterior_predictive.png``, ``latent_map.png``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from .. import checks
from .._runtime import resolve_device
from ..run_folder import load_run, write_json
from . import posterior_plots as pp
from .compare import compare, elpd
from .inference_data import save_inference_data, to_inference_data
from .psis import psis_diagnostics, summary

SPLITS = ("train", "valid", "test")
# ArviZ names its compare columns for leave-one-out CV; ours are held-out scores
HELD_OUT_COLUMNS = {"elpd_loo": "elpd_heldout", "se": "elpd_se", "dse": "diff_se",
                    "warning": "khat_warning"}


def _split(splits, split, num_points):
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    ds = getattr(splits, split)
    if ds is None:
        raise ValueError(f"split: this run's data has no {split!r} split")
    ds = ds.frozen(0)
    return ds if num_points is None else ds.subset(torch.arange(min(num_points, len(ds))))


def _load(run, device):
    model, splits, cfg = load_run(run)
    model.to(resolve_device(device))
    return model, splits, cfg


def _csv(result, path: Path) -> Path:
    cols = [c for c in ("khat", "log_px_psis", "log_px_is", "elbo", "gap", "recon", "ess",
                        "label") if c in result]
    rows = ["obs," + ",".join(cols)]
    for i, o in enumerate(result["obs"].values):
        rows.append(f"{o}," + ",".join(repr(float(result[c].values[i])) if c != "label"
                                       else str(int(result[c].values[i])) for c in cols))
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("\n".join(rows) + "\n")
    tmp.replace(path)
    return path


def analyze_run(run, *, num_points: int = 500, num_samples: int = 1000, draws: int = 100,
                split: str = "test", seed: int = 0, device: str = "cpu",
                batch_size: int = 100) -> dict:
    """Posterior analysis of a trained run (see the module docstring); returns the headline
    figures also written to ``psis.json``."""
    for name, v in (("num_points", num_points), ("num_samples", num_samples),
                    ("draws", draws), ("batch_size", batch_size)):
        checks.positive_int(v, name)
    run = Path(run)
    model, splits, cfg = _load(run, device)
    ds = _split(splits, split, num_points)
    idata = to_inference_data(model, ds, draws, batch_size=batch_size, seed=seed)
    if "posterior" not in idata.groups():
        raise ValueError(f"run: the {cfg['model']!r} model has no latent variables to analyse")
    save_inference_data(idata, run / "inference_data.nc")
    result = psis_diagnostics(model, ds, num_samples, batch_size=batch_size, seed=seed)
    figures = [
        pp.plot_khat(result, run / "khat.png"),
        pp.plot_khat_vs_recon(result, run / "khat_recon.png"),
        pp.plot_worst_inputs(result, ds.x.cpu(), run / "worst_khat.png"),
        pp.plot_posterior(idata, run / "posterior.png"),
        pp.plot_posterior(idata, run / "forest.png", kind="forest"),
        pp.plot_latent_map(idata, run / "latent_map.png"),
    ]
    if ds.x.dim() >= 2:  # data points that are images
        figures.append(pp.plot_posterior_predictive(idata, run / "posterior_predictive.png"))
    out = {"split": split, "draws": draws, "seed": seed, **summary(result)}
    e = elpd(result)
    out.update(elpd=float(e["elpd_loo"]), elpd_se=float(e["se"]))
    write_json(run / "psis.json", out)
    _csv(result, run / "psis.csv")
    out["files"] = [str(p.name) for p in figures] + ["inference_data.nc", "psis.json",
                                                      "psis.csv"]
    return out


def compare_runs(runs, *, num_points: int | None = None, num_samples: int = 1000,
                 split: str = "test", estimator: str = "psis", seed: int = 0,
                 device: str = "cpu", batch_size: int = 100, method: str = "stacking", out=None):
    """The runs scored on the same held-out points (:func:`pyrovae.analysis.compare`, ArviZ's
    ``compare``), best first, with columns named for what they are here: ``elpd_heldout`` (the
    sum over the points of each run's estimate of log p(x)), ``elpd_se``, ``elpd_diff`` and
    ``diff_se`` (to the best run, from paired per-point differences), ``weight`` and
    ``khat_warning``; written as CSV to ``out`` when given."""
    runs = [Path(r) for r in runs]
    if len(runs) < 2:
        raise ValueError(f"runs: expected at least two run folders, got {len(runs)}")
    if num_points is not None:
        checks.positive_int(num_points, "num_points")
    checks.positive_int(num_samples, "num_samples")
    scored, data_specs = {}, {}
    for r in runs:
        model, splits, cfg = _load(r, device)
        data_specs[str(r)] = (cfg["data"]["spec"], cfg["data"]["seed"], cfg["data"]["binarize"],
                              cfg["data"].get("valid_size"))
        ds = _split(splits, split, num_points)
        name = r.name if r.name not in scored else str(r)
        scored[name] = elpd(model, ds, num_samples, estimator=estimator, seed=seed,
                            batch_size=batch_size)
    if len(set(data_specs.values())) != 1:
        raise ValueError(f"runs: they were trained on different data or splits {data_specs}; "
                         f"held-out comparison needs the same test points")
    table = compare(scored, method=method).rename(columns=HELD_OUT_COLUMNS)
    table = table.drop(columns=[c for c in ("p_loo", "scale") if c in table.columns])
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out)
    return table


def format_summary(s: dict) -> str:
    """Lines for the terminal."""
    lines = [
        f"PSIS on {s['n']} {s['split']} points, S = {s['num_samples']} guide draws each:",
        f"  k-hat > 0.7: {100 * s['frac_khat_gt_0.7']:.1f}%  (> good_k {s['good_k']:.2f}: "
        f"{100 * s['frac_khat_gt_good_k']:.1f}%; > 0.5: {100 * s['frac_khat_gt_0.5']:.1f}%)",
        f"  median k-hat {s['khat_median']:.3f}, max {s['khat_max']:.3f}",
        f"  log p(x): PSIS {s['log_px_psis_mean']:.3f}, IS {s['log_px_is_mean']:.3f}, "
        f"ELBO {s['elbo_mean']:.3f} nats per point",
    ]
    if "spearman_khat_recon" in s and not math.isnan(s["spearman_khat_recon"]):
        lines.append(f"  Spearman correlation of k-hat and reconstruction error: "
                     f"{s['spearman_khat_recon']:.3f}")
    return "\n".join(lines)


__all__ = ["analyze_run", "compare_runs", "format_summary"]
