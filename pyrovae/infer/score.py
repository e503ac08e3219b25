r"""The plain score-function ELBO estimator, without Rao-Blackwellisation."""

from __future__ import annotations

from pyro.distributions.util import is_identically_zero
from pyro.infer import Trace_ELBO
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.util import torch_item

from .registry import register_loss

_PARTICLE_PLATE = "num_particles_vectorized"  # the plate Pyro's ELBO vectorises particles in


@register_loss("score_elbo")
class TraceScore_ELBO(Trace_ELBO):
    r"""Score-function (REINFORCE) gradient of the ELBO with no Rao-Blackwellisation.

    For each non-reparametrisable guide site :math:`z_j` the surrogate adds
    :math:`\log q(z_j)\,\mathrm{stop\_grad}\big(\log p(x, z) - \log q(z)\big)`, the *whole*
    log-ratio of the trace (Ranganath et al. 2014, eq. 3; Williams 1992): every data point's
    score is multiplied by the cost of every other data point in the batch. This is the
    estimator black-box VI starts from; its expectation is the exact ELBO gradient, and its
    variance is what Rao-Blackwellisation removes.

    For comparison, :class:`~pyro.infer.Trace_ELBO` keeps only the cost terms in the same
    plate slice as the site (Rao-Blackwellisation over the conditional independence that
    ``pyro.plate`` declares: per data point), and :class:`~pyro.infer.TraceGraph_ELBO` keeps
    only the terms downstream of the site in the dependency graph, and applies baselines
    (Ranganath et al. 2014, §3.1-3.2; Schulman et al. 2015). Reparametrised sites get their
    pathwise gradient as in :class:`~pyro.infer.Trace_ELBO`, so on a model with only
    reparametrised latents, or with a single datum and site, the two are identical.

    Particles vectorised with ``vectorize_particles=True`` stay separate: each particle's
    scores see only that particle's cost.
    """

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        elbo = 0.0
        surrogate = 0.0
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                elbo = elbo + torch_item(site["log_prob_sum"])
                surrogate = surrogate + site["log_prob_sum"]
        log_r = None
        for site in guide_trace.nodes.values():
            if site["type"] != "sample":
                continue
            _, score_function, entropy_term = site["score_parts"]
            elbo = elbo - torch_item(site["log_prob_sum"])
            if not is_identically_zero(entropy_term):
                surrogate = surrogate - entropy_term.sum()
            if not is_identically_zero(score_function):
                if log_r is None:
                    log_r = _compute_log_r(model_trace, guide_trace)  # detached terms
                # Sum every term over every plate except the particle plate: scalar, or (P, 1..)
                keep = [f for f in site["cond_indep_stack"] if f.name == _PARTICLE_PLATE]
                cost = log_r.sum_to(keep)
                surrogate = surrogate + (cost * score_function).sum()
        return -elbo, -surrogate
