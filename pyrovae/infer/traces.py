"""Run the guide, then the model replayed on the guide's draws: the pair of traces every
objective, metric and check here reads."""

from __future__ import annotations

from pyro import poutine
from pyro.poutine.util import prune_subsample_sites


def guide_model_traces(model, guide, kwargs: dict, *, args: tuple = (), block: bool = True,
                       log_prob: bool = False):
    """``(model_trace, guide_trace)``: the guide traced on ``kwargs``, then the model traced
    under ``poutine.replay`` on the guide's trace, so latent sites take the guide's values.

    Subsample sites (a ``pyro.plate``'s indices) are pruned from both. ``block`` hides the runs
    from handlers outside (a caller's own trace sees nothing); ``log_prob`` computes every
    site's ``log_prob`` and ``log_prob_sum`` (scaled and masked as the sites are).
    """
    with poutine.block(hide_fn=lambda msg: block):
        guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args,
                                                                                   **kwargs)
    model_tr, guide_tr = prune_subsample_sites(model_tr), prune_subsample_sites(guide_tr)
    if log_prob:
        model_tr.compute_log_prob()
        guide_tr.compute_log_prob()
    return model_tr, guide_tr
