r"""The single-sample ELBO of a fully reparametrised guide, with one effect handler.

For a guide whose every sample site is reparametrised, ``Trace_ELBO``'s surrogate is the ELBO
estimate itself (the score-function terms vanish; Ranganath et al. 2014, eq. 3 with
:math:`\nabla_\phi \log q = 0` under reparametrisation, Kingma and Welling 2014, eq. 7):

.. math:: -\hat{\mathcal L} = \sum_{\text{guide sites}} \log q(z \mid x)
          - \sum_{\text{model sites}} \log p(x, z), \qquad z \sim q(z \mid x),

each log-density scaled and masked as its site is (``pyro.plate`` subsampling, ``poutine.scale``,
``poutine.mask``). With ``analytic=True`` each latent site's :math:`\log q - \log p` is
replaced by :math:`\mathrm{KL}(q \,\|\, p)` where ``kl_divergence`` knows the pair, which is
``TraceMeanField_ELBO``'s estimator.

Pyro computes this with a trace of the guide, a replayed trace of the model, copies of both
with subsample sites pruned, log-densities stored per site, and one host read per site; here
one :class:`~pyro.poutine.messenger.Messenger` records the guide's sites, replays them into the
model and keeps the sums on the device. A Normal guide site's :math:`\log q` is computed from
the noise of its draw (:func:`_log_prob_sum`), which gives its gradient exactly where the
formula in :math:`z` gives it up to rounding. Same draws in the same order, so the same value
and gradient as Pyro's estimator up to rounding (tested). It does not validate:
:func:`pyrovae.fit` runs Pyro's own ELBO beside its validated step, for the checks.

Use :func:`eligible` on a probe's traces to decide whether a pair qualifies.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import pyro.infer as pi
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.block_messenger import BlockMessenger
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK
from torch.distributions import kl_divergence
from torch.distributions.utils import _standard_normal

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class _Sites(Messenger):
    r"""Records sample sites; replays the latent values of ``replay`` (the guide's record).

    Recording a guide with ``noise``, a Normal site (or ``Independent`` of one) is drawn here
    as torch's ``rsample`` draws it, :math:`z = \mu + \sigma\varepsilon` with the same
    :math:`\varepsilon` and so the same bits, and :math:`\varepsilon` is kept in
    ``self.noise`` for :func:`_log_prob_sum`.
    """

    def __init__(self, replay: dict | None = None, noise: bool = False):
        super().__init__()
        self.replay = replay
        self.sites: dict[str, dict] = {}
        self.noise: dict[str, torch.Tensor] | None = {} if noise else None

    def _pyro_sample(self, msg) -> None:
        if self.replay is not None and not msg["is_observed"]:
            guide_msg = self.replay.get(msg["name"])
            if guide_msg is not None:  # as poutine.replay does
                msg["value"] = guide_msg["value"]
                msg["infer"] = guide_msg["infer"]
                msg["done"] = True
        elif self.noise is not None and not msg["is_observed"] and msg["value"] is None \
                and not msg["args"] and not msg["kwargs"] and not msg["done"]:
            base = _normal(msg["fn"])
            if base is not None:  # Normal.rsample, keeping eps
                eps = _standard_normal(base.loc.shape, dtype=base.loc.dtype,
                                       device=base.loc.device)
                msg["value"] = base.loc + eps * base.scale
                msg["done"] = True
                self.noise[msg["name"]] = eps

    def _pyro_post_sample(self, msg) -> None:
        self.sites[msg["name"]] = msg


def _counts(msg) -> bool:
    return not msg["infer"].get("_deterministic") and type(msg["fn"]).__name__ != "_Subsample"


def _normal(fn):
    """The ``Normal`` that ``fn`` is or reinterprets (exactly Pyro's classes), else ``None``."""
    if type(fn) is dist.Independent:
        fn = fn.base_dist
    return fn if type(fn) is dist.Normal else None


def _log_prob_sum(msg, eps: torch.Tensor | None = None) -> torch.Tensor:
    r""":math:`\sum \text{scale}\cdot\text{mask}\cdot\log p(\text{value})` of a site; with
    ``eps`` (a Normal site drawn as :math:`\mu + \sigma\varepsilon`) from the noise,
    :math:`\log q = -\tfrac12\varepsilon^2 - \log\sigma - \tfrac12\log 2\pi`, the same
    density without recomputing :math:`(z-\mu)/\sigma` from :math:`z`. Its gradient is the
    exact one, :math:`\partial_\mu = 0`, :math:`\partial_\sigma = -1/\sigma`, where
    the formula in :math:`z` gives them up to rounding."""
    if eps is None:
        lp = msg["fn"].log_prob(msg["value"], *msg["args"], **msg["kwargs"])
    else:  # eps: (*batch, *event), no gradient; sigma broadcast to it
        lp = (-0.5 * eps * eps - _HALF_LOG_2PI) - _normal(msg["fn"]).scale.log()
        event = getattr(msg["fn"], "reinterpreted_batch_ndims", 0)
        if event:
            lp = lp.sum(tuple(range(-event, 0)))  # (*batch)
    return scale_and_mask(lp, msg["scale"], msg["mask"]).sum()


def lean_elbo(model, guide, args: tuple = (), kwargs: dict | None = None, *,
              analytic: bool = False, per_site: bool = False, noise: bool = True):
    """``(loss, terms)``: ``loss`` the negative ELBO estimate summed over the batch (a
    differentiable 0-d tensor), ``terms`` as :func:`pyrovae.infer.terms.trace_terms` gives them
    (``recon``, ``kl`` and, with ``per_site``, ``kl/<site>``; detached). ``noise=False``: every
    log q by the distribution's own ``log_prob`` of the drawn value (the measured
    alternative)."""
    kwargs = kwargs or {}
    # below an outer handler other than a block (a condition, say), a value drawn here could
    # be replaced: then Pyro's own draw and density
    own = noise and all(isinstance(h, BlockMessenger) for h in _PYRO_STACK)
    with _Sites(noise=own) as g:
        guide(*args, **kwargs)
    with _Sites(g.sites) as m:
        model(*args, **kwargs)
    return elbo_from_sites(m.sites, g.sites, analytic=analytic, per_site=per_site,
                           noise=g.noise)


def elbo_from_sites(model_sites: dict, guide_sites: dict, *, analytic: bool = False,
                    per_site: bool = False, noise: dict | None = None):
    r""":func:`lean_elbo`'s sums from the site messages (or trace nodes) of a guide run and the
    model replayed on it; the one place the estimator is written. ``noise``: the
    :math:`\varepsilon` of guide sites drawn by :class:`_Sites`, whose :math:`\log q` is
    computed from it."""
    noise = noise or {}
    log_p_obs, kls, paired = 0.0, {}, set()
    for name, site in model_sites.items():
        if site["type"] != "sample" or not _counts(site):
            continue
        if site["is_observed"]:
            log_p_obs = log_p_obs + _log_prob_sum(site)
            continue
        q = guide_sites.get(name)
        if q is None:  # an enumerated model site: not a term of a single-draw ELBO
            continue
        paired.add(name)
        kl = None
        if analytic:  # TraceMeanField_ELBO: KL(q || p) where torch knows the pair
            try:
                kl = scale_and_mask(kl_divergence(q["fn"], site["fn"]), q["scale"],
                                    q["mask"]).sum()
            except NotImplementedError:
                pass
        kls[name] = _log_prob_sum(q, noise.get(name)) - _log_prob_sum(site) if kl is None \
            else kl
    # guide-only sites (auxiliary variables, guide factors) enter the ELBO as -log q
    other = sum((_log_prob_sum(s, noise.get(n)) for n, s in guide_sites.items() if n not in paired
                 and s["type"] == "sample" and _counts(s)), 0.0)
    recon, kl = -log_p_obs, sum(kls.values(), 0.0)
    terms = {"recon": _detached(recon), "kl": _detached(kl)}
    if per_site and len(kls) > 1:
        terms.update({f"kl/{n}": _detached(v) for n, v in kls.items()})
    return recon + kl + other, terms


def _detached(v) -> torch.Tensor:
    return v.detach() if torch.is_tensor(v) else torch.tensor(float(v))


def eligible(loss, model_trace, guide_trace) -> str | None:
    """``None`` when :func:`lean_elbo` computes exactly what ``loss`` does on this pair, else
    the reason it does not (one line)."""
    if type(loss) not in (pi.Trace_ELBO, pi.TraceMeanField_ELBO):
        return f"the loss is {type(loss).__name__}, not Trace_ELBO or TraceMeanField_ELBO"
    if loss.num_particles != 1 or loss.vectorize_particles or loss.retain_graph:
        return "the loss uses several particles or retain_graph"
    for trace, who in ((model_trace, "model"), (guide_trace, "guide")):
        for name, site in trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["infer"].get("enumerate") is not None:
                return f"the {who}'s site {name!r} is enumerated"
            if who == "guide" and _counts(site) and not site["fn"].has_rsample:
                return f"the guide's site {name!r} is not reparametrised"
    return None
