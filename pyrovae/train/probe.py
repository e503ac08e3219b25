"""What training needs to know about a model/guide pair before its first step: the parameters
to optimise, and whether model, guide, loss and data fit together. Public: metrics that must
see the same parameters ``fit`` trains use :func:`discover_params`."""

from __future__ import annotations

import pyro
import torch
from pyro import poutine

from ..infer.traces import guide_model_traces


def probe(model_fn, guide_fn, kwargs: dict):
    """One run of guide and replayed model, in a forked RNG so the training stream is the same
    with or without it. Returns ``({param name: unconstrained tensor}, model_trace,
    guide_trace)``."""
    devices = sorted({v.device for v in kwargs.values() if torch.is_tensor(v)
                      and v.device.type == "cuda"}, key=str)
    # Validation off: the probe learns structure; values (a NaN network output, say) are the
    # first step's business, where the non-finite guard handles them.
    with torch.random.fork_rng(devices=devices), pyro.validation_enabled(False), \
            poutine.block(), poutine.trace(param_only=True) as capture:
        model_tr, guide_tr = guide_model_traces(model_fn, guide_fn, kwargs, block=False)
    params = {}
    for name, site in capture.trace.nodes.items():
        value = site["value"]
        params[name] = value.unconstrained() if hasattr(value, "unconstrained") else value
    return params, model_tr, guide_tr


def discover_params(model, model_fn, guide_fn, kwargs: dict):
    """``(params, extra, model_trace, guide_trace)``: the model's parameters plus ``pyro.param``
    tensors kept outside its modules (``extra``, by name), and the probe's traces.

    In Pyro's default global param store a parameter name the model shares with another model
    (``encoder$$$net.0.weight``, say) can bring that model's tensor into the trace, although the
    computation uses this model's own. So the names this model's modules register are learnt
    first in an empty scratch store, and only other names count as external parameters.
    """
    def module_params():
        return list(model.parameters()) if isinstance(model, torch.nn.Module) else []

    with pyro.get_param_store().scope():
        scratch, _, _ = probe(model_fn, guide_fn, kwargs)
    own_ids = {id(p) for p in module_params()}
    own_names = {n for n, v in scratch.items() if id(v) in own_ids}
    sites, model_tr, guide_tr = probe(model_fn, guide_fn, kwargs)
    params = module_params()
    if params and not sites:
        raise ValueError(
            f"model: it has {len(params)} parameter tensors, but its model and guide record no "
            f"pyro.param sites, so Pyro's ELBOs would compute no gradients. Decorate PyroModule "
            f"methods other than forward with pyro.nn.pyro_method, or register plain modules "
            f"with pyro.module(name, module)"
        )
    seen = {id(p) for p in params}
    extra = {}
    for name, value in sites.items():
        if id(value) in seen or name in own_names or not value.requires_grad:
            continue
        extra[name] = value
        seen.add(id(value))
    return params + list(extra.values()), extra, model_tr, guide_tr


def sample_sites(trace) -> dict:
    """The trace's sample sites other than ``pyro.deterministic`` and plate subsampling."""
    return {n: s for n, s in trace.nodes.items() if s["type"] == "sample"
            and not s["infer"].get("_deterministic")
            and type(s["fn"]).__name__ != "_Subsample"}


def check_sites(model_tr, guide_tr, loss=None) -> None:
    """Raises ``ValueError`` when model and guide do not pair up, before any training.

    Every guide sample site must exist in the model (else it only adds log q terms), and every
    latent model site must be in the guide unless it is enumerated (else Pyro silently draws it
    from the prior and the ELBO is not the one intended). A loss with a
    ``check_traces(model_trace, guide_trace)`` method checks the sites it needs.
    """
    model_sites, guide_sites = sample_sites(model_tr), sample_sites(guide_tr)
    for name, site in guide_sites.items():
        # auxiliary sites (an AutoNormal's ``*_unconstrained``) are the guide's own business
        if site["infer"].get("is_auxiliary"):
            continue
        if not site["is_observed"] and name not in model_sites:
            raise ValueError(
                f"model/guide: the guide samples site {name!r}, which the model does not have "
                f"(model sites: {sorted(model_sites)})"
            )
    for name, site in model_sites.items():
        if site["is_observed"] or name in guide_sites:
            continue
        if site["infer"].get("enumerate") is None:
            raise ValueError(
                f"model/guide: the model's latent site {name!r} has no site of that name in the "
                f"guide (guide sites: {sorted(guide_sites)}); Pyro would draw it from the prior. "
                f"Add it to the guide, or mark it infer={{'enumerate': 'parallel'}} and use "
                f"TraceEnum_ELBO"
            )
    check = getattr(loss, "check_traces", None)
    if callable(check):
        check(model_tr, guide_tr)


def check_observations(model_tr, name: str = "data") -> None:
    """Raises ``ValueError`` when an observed value lies outside its distribution's support
    (grey levels under a Bernoulli, say), naming the site, the distribution and a value, so a
    model without a ``check_data`` of its own gets the same one-line error ours give."""
    for site_name, site in sample_sites(model_tr).items():
        if not site["is_observed"] or site["infer"].get("_deterministic"):
            continue
        fn, value = site["fn"], site["value"]
        if not torch.is_tensor(value):
            continue
        try:
            ok = fn.support.check(value)
        except (NotImplementedError, RuntimeError, TypeError, ValueError):
            continue  # a support that cannot be checked elementwise here
        if bool(ok.all()):
            continue
        bad = value.reshape(-1)[~ok.reshape(-1)] if ok.shape == value.shape else value.reshape(-1)
        hint = (" Binarise the data (fit(..., data=Dataset(x, binarize='dynamic')); on the "
                "command line --binarize dynamic)" if _is_binary(fn) else "")
        base = type(getattr(fn, "base_dist", fn)).__name__
        raise ValueError(
            f"{name}: the model observes site {site_name!r} with a {base} distribution, whose "
            f"support is {fn.support}, but the data has values outside it (e.g. "
            f"{float(bad[0]):g}).{hint}"
        )


def _is_binary(fn) -> bool:
    from torch.distributions import constraints

    support = fn.support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.boolean
