"""Figures for discrete latents: how often each code is used."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .plots import _save


def plot_code_usage(usage: dict[str, dict], path, title: str = "code usage"):
    """One panel per code site: the codes' counts sorted from most to least used (log scale),
    with usage, perplexity and dead codes in the panel title. ``usage`` is what
    :func:`pyrovae.metrics.codebook_usage` returns."""
    if not usage:
        raise ValueError("usage: expected at least one site's summary")
    fig = Figure(figsize=(4.6 * len(usage), 3.4))
    for i, (name, s) in enumerate(usage.items()):
        ax = fig.add_subplot(1, len(usage), i + 1)
        counts = np.sort(np.asarray(s["counts"], dtype=float))[::-1]
        ax.bar(np.arange(len(counts)), np.maximum(counts, 0.5), width=1.0, color="tab:blue")
        ax.set_yscale("log")
        ax.set_xlabel("code (sorted by use)")
        ax.set_ylabel("assignments (log scale; unused codes at 0.5)")
        ax.set_title(f"{name}: {s['usage']:.1%} used, perplexity {s['perplexity']:.0f}/"
                     f"{s['num_codes']}, {s['dead_codes']} dead", fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)
