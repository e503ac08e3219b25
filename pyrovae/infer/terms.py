"""The ELBO split into its terms, from one guide trace and the model replayed against it."""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites


def elbo_terms(model, guide, kwargs: dict) -> dict[str, float]:
    r"""Single-sample estimates of the ELBO's terms, summed over the batch.

    - ``recon``: :math:`-\sum_{\text{obs}} \log p(x \mid z)` over observed sites;
    - ``kl``: :math:`\sum_{\text{latent}} [\log q(z \mid x) - \log p(z)]`, the Monte-Carlo
      KL of each latent site (``kl/<site>`` per site when there are several);
    - ``loss``: ``recon + kl``, the negative ELBO estimate :class:`~pyro.infer.Trace_ELBO` uses.

    Works for any model/guide pair; used by the trainer's progress display and history.
    """
    with torch.no_grad(), poutine.block():
        guide_tr = prune_subsample_sites(poutine.trace(guide).get_trace(**kwargs))
        model_tr = prune_subsample_sites(
            poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(**kwargs)
        )
        model_tr.compute_log_prob()
        guide_tr.compute_log_prob()
        recon, kls = 0.0, {}
        for name, site in model_tr.nodes.items():
            if site["type"] != "sample" or site["infer"].get("_deterministic"):
                continue
            if site["is_observed"]:
                recon -= float(site["log_prob_sum"])
            elif name in guide_tr.nodes:
                kls[name] = float(guide_tr.nodes[name]["log_prob_sum"] - site["log_prob_sum"])
    out = {"recon": recon, "kl": sum(kls.values())}
    if len(kls) > 1:
        out.update({f"kl/{k}": v for k, v in kls.items()})
    out["loss"] = out["recon"] + out["kl"]
    return out
