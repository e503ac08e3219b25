"""What training needs to know about a model/guide pair before its first step: the parameters
to optimise, and whether model, guide, loss and data fit together. Public: metrics that must
see the same parameters ``fit`` trains use :func:`discover_params`."""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from ..infer.traces import guide_model_traces


class _PlateIndices(Messenger):
    """Records each plate's subsample indices as the program asked for them (``subsample=``,
    seen before a replay outside this handler overrides them) and as they were used."""

    def __init__(self):
        super().__init__()
        self.asked: dict = {}
        self.used: dict = {}

    def _pyro_sample(self, msg) -> None:
        if type(msg["fn"]).__name__ == "_Subsample" and msg["value"] is not None:
            self.asked[msg["name"]] = msg["value"]

    def _pyro_post_sample(self, msg) -> None:
        if type(msg["fn"]).__name__ == "_Subsample":
            self.used[msg["name"]] = msg["value"]


def probe(model_fn, guide_fn, kwargs: dict):
    """One run of guide and replayed model, in a forked RNG so the training stream is the same
    with or without it. Returns ``({param name: unconstrained tensor}, model_trace,
    guide_trace)``."""
    devices = sorted({v.device for v in kwargs.values() if torch.is_tensor(v)
                      and v.device.type == "cuda"}, key=str)
    # Validation off: the probe learns structure; values (a NaN network output, say) are the
    # first step's business, where the non-finite guard handles them.
    indices = _PlateIndices()
    with torch.random.fork_rng(devices=devices), pyro.validation_enabled(False), \
            poutine.block(), poutine.trace(param_only=True) as capture:
        model_tr, guide_tr = guide_model_traces(indices(model_fn), guide_fn, kwargs,
                                                block=False)
    _check_replayed_indices(indices, guide_fn)
    params = {}
    for name, site in capture.trace.nodes.items():
        value = site["value"]
        params[name] = value.unconstrained() if hasattr(value, "unconstrained") else value
    return params, model_tr, guide_tr


def _check_replayed_indices(indices: _PlateIndices, guide_fn) -> None:
    """Raises ``ValueError`` when the model's plate asks for given indices (``subsample=``) but
    the guide's plate of that name drew others: Pyro replays the guide's plate indices into the
    model (Trace_ELBO, every ELBO here, SVI alike), so the model would pair its latents and
    data with points other than the ones it was given."""
    for name, asked in indices.asked.items():
        used = indices.used.get(name)
        if used is None or used is asked or (torch.is_tensor(asked) and torch.is_tensor(used)
                                             and asked.shape == used.shape
                                             and bool(torch.equal(asked.to(used.device),
                                                                  used))):
            continue
        from pyro.infer.autoguide import AutoContinuous, AutoGuide

        if isinstance(guide_fn, AutoContinuous):
            fix = (f" {type(guide_fn).__name__} cannot take the indices (it has no "
                   f"create_plates, and its latent vector holds one entry per batch position): "
                   f"use AutoNormal or AutoDelta, whose parameters are per data point, for the "
                   f"latents inside the plate (an AutoGuideList if other sites need it)")
        elif isinstance(guide_fn, AutoGuide):
            fix = (f" Give the autoguide the model's indices: {type(guide_fn).__name__}(model, "
                   f"create_plates=lambda x, index: pyro.plate({name!r}, N, subsample=index))")
        else:
            fix = " Open the guide's plate with the same subsample= as the model's"
        raise ValueError(
            f"model/guide: the model's plate {name!r} is given its indices (subsample=, e.g. "
            f"{_head(asked)}), but the guide's plate {name!r} draws its own (e.g. "
            f"{_head(used)}), and Pyro replays the guide's into the model, so the model would "
            f"observe its data with the latents of other points.{fix}"
        )


def _head(t) -> str:
    return str(t.reshape(-1)[:4].tolist()) if torch.is_tensor(t) else repr(t)


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


def autoguides(model) -> list:
    """The Pyro autoguides of a model/guide pair: its guide if it is one, and those among its
    modules; an ``AutoGuideList`` as its parts (each keeps its own parameters)."""
    from pyro.infer.autoguide import AutoGuide, AutoGuideList

    found: list = []
    for root in (model.guide, model):
        if not isinstance(root, torch.nn.Module):
            continue
        for m in root.modules():
            if isinstance(m, AutoGuide) and not isinstance(m, AutoGuideList) \
                    and not any(m is f for f in found):
                found.append(m)
    return found


def check_autoguides(model, model_tr, kwargs: dict, *, n_data: int, batch_size: int,
                     validating: bool = False) -> None:
    """Raises ``ValueError`` when an autoguide of ``model`` cannot train the way ``fit`` would
    run it on ``n_data`` points in batches of ``batch_size`` (after the probe has set it up).

    An autoguide keeps the parameters of a latent inside a plate (a local latent) per plate
    position, and those of every other latent once. So, when batches are not all the data: a
    local latent needs a plate over all ``n_data`` points subsampled by the batch's positions
    (``pyro.plate(name, N, subsample=index)``, in the model and, through ``create_plates``, in
    the guide), which ``AutoContinuous`` guides cannot take; and a global latent needs the
    batch's likelihood scaled to all the data, which such a plate does. Local latents have no
    parameters for validation points.
    """
    from pyro.infer.autoguide import AutoContinuous

    many = batch_size < n_data
    globals_ = []  # (site, who): checked once every local latent has passed
    for g in autoguides(model):
        trace = getattr(g, "prototype_trace", None)
        if trace is None:
            continue
        owner = g.master() if getattr(g, "master", None) is not None else g
        kind = type(g).__name__
        who = kind if owner is g else f"{kind} (in {type(owner).__name__})"
        for site_name, site in trace.iter_stochastic_nodes():
            frames = [f for f in site["cond_indep_stack"] if f.vectorized]
            sub = [f for f in frames if (f.full_size or f.size) != f.size]
            batch = [f for f in frames if f.size == batch_size and f not in sub]
            if not sub and not batch:
                globals_.append((site_name, who))
                continue
            for f in sub:
                full = f.full_size
                positions = (f"pyro.plate({f.name!r}, {full}, subsample=index) with "
                             f"model(x, index)")
                if isinstance(g, AutoContinuous):
                    raise ValueError(
                        f"model/guide: {who} keeps its latent vector's entries for site "
                        f"{site_name!r} per position of plate {f.name!r}'s subsample ({f.size} "
                        f"of {full}), not per data point, so each step would train them on "
                        f"other points. Use AutoNormal or AutoDelta for the latents inside the "
                        f"plate (in an AutoGuideList with create_plates=lambda x, index: "
                        f"pyro.plate({f.name!r}, {full}, subsample=index)), the model's plate "
                        f"being {positions}")
                if owner.create_plates is None:
                    obs = _observes_batch(model_tr, f.name, kwargs)
                    if obs is not None:
                        raise ValueError(
                            f"model/guide: {who} draws plate {f.name!r}'s subsample at random "
                            f"({f.size} of {full}), but the model observes site {obs!r} on "
                            f"fit's batch, another draw of the data, so the parameters of "
                            f"latent {site_name!r} for one point would be trained on another's "
                            f"data. Subsample by the batch's data positions: the model's "
                            f"plate {positions}, and {type(owner).__name__}(..., "
                            f"create_plates=lambda x, index: pyro.plate({f.name!r}, {full}, "
                            f"subsample=index))")
            if many:
                for f in batch:
                    fix = (f"Subsample a plate over all the data by the batch's positions: "
                           f"model(x, index) with pyro.plate({f.name!r}, {n_data}, "
                           f"subsample=index)")
                    fix += (f", and AutoNormal or AutoDelta (which take create_plates) for "
                            f"{site_name!r}" if isinstance(g, AutoContinuous) else
                            f", and {type(owner).__name__}(..., create_plates=lambda x, index: "
                            f"pyro.plate({f.name!r}, {n_data}, subsample=index))")
                    raise ValueError(
                        f"model/guide: {who} keeps the parameters of latent site "
                        f"{site_name!r} per position of the model's plate {f.name!r}, whose "
                        f"size is the batch's ({batch_size}), but the data has {n_data} "
                        f"points, so each position would be trained on a different point at "
                        f"every step. {fix}; or batch_size={n_data}")
            if validating:
                raise ValueError(
                    f"validation_data: {who} has parameters for the latent site {site_name!r} "
                    f"(in plate {(sub + batch)[0].name!r}) of each training point only, none "
                    f"for other points, so it cannot score validation data. Leave out "
                    f"validation_data (and early_stopping), or use an amortised guide")
    if globals_ and many:
        unscaled = _unscaled_batch_observation(model_tr, batch_size)
        if unscaled is not None:
            obs, plate = unscaled
            site_name, who = globals_[0]
            raise ValueError(
                f"model/guide: the model observes site {obs!r} in plate {plate!r} of "
                f"the batch's size ({batch_size}) unscaled, but the data has {n_data} "
                f"points: each step's likelihood counts {batch_size} points as all "
                f"the data, so the global latent {site_name!r} ({who}) would get the "
                f"posterior of {batch_size} points. Write the plate as "
                f"pyro.plate({plate!r}, {n_data}, subsample=index) with "
                f"model(x, index), which scales the batch by {n_data}/{batch_size}; "
                f"or batch_size={n_data}")


def _observes_batch(model_tr, plate: str, kwargs: dict) -> str | None:
    """A model site observed inside ``plate`` on (a view of) a tensor of the batch."""
    batch = {v.untyped_storage().data_ptr() for v in kwargs.values() if torch.is_tensor(v)}
    for name, site in sample_sites(model_tr).items():
        value = site["value"]
        if site["is_observed"] and torch.is_tensor(value) \
                and any(f.name == plate for f in site["cond_indep_stack"]) \
                and value.untyped_storage().data_ptr() in batch:
            return name
    return None


def _unscaled_batch_observation(model_tr, batch_size: int) -> tuple[str, str] | None:
    """``(site, plate)``: an observed model site in a plate of ``batch_size`` that is not a
    subsample of a larger one, with no scale of its own (``poutine.scale``)."""
    for name, site in sample_sites(model_tr).items():
        if not site["is_observed"]:
            continue
        scale = site["scale"]
        if not (isinstance(scale, (int, float)) and scale == 1.0):
            continue
        for f in site["cond_indep_stack"]:
            if f.vectorized and f.size == batch_size and (f.full_size or f.size) == f.size:
                return name, f.name
    return None


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
