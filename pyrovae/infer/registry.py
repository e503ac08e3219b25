"""Losses by name, as the CLI takes them: ``--loss tc_elbo`` or ``--loss mypkg.mymod:MyLoss``.

A loss registers itself beside its class, as models do::

    @register_loss("tc_elbo")
    class TraceTC_ELBO(Trace_ELBO): ...

A factory function registers the same way. A loss that needs to know something about the
training data declares it in ``loss_context`` (a class or function attribute): names that
:func:`make_loss` fills from the ``context`` the caller knows (``dataset_size``, the number of
training points, for β-TCVAE's minibatch estimators) when the arguments leave them out.
"""

from __future__ import annotations

import pyro.infer as pi

from ..protocol import import_path, registrar

LOSSES: dict[str, object] = {}

#: ``@register_loss("name")``: makes the loss class (or factory) available as ``name``.
register_loss = registrar(LOSSES, "loss")


# Pyro's own estimators, under the names the CLI has always used.
register_loss("trace_elbo")(pi.Trace_ELBO)
register_loss("meanfield_elbo")(pi.TraceMeanField_ELBO)
register_loss("tracegraph_elbo")(pi.TraceGraph_ELBO)
register_loss("renyi_elbo")(pi.RenyiELBO)


@register_loss("iwae")
def iwae(num_particles: int = 50, **kw):
    """The IWAE bound (Burda et al. 2016, eq. 8): the Rényi bound at alpha = 0 (Li and Turner
    2016) with ``num_particles`` importance samples."""
    return pi.RenyiELBO(alpha=0.0, num_particles=num_particles, **kw)


def resolve_loss(spec: str):
    """The class or factory registered as ``spec``, or named by an import path."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"loss: expected a registered name or 'module:Name', got {spec!r}")
    if ":" in spec:
        return import_path(spec, "loss")
    try:
        return LOSSES[spec]
    except KeyError:
        raise ValueError(f"loss: expected one of {sorted(LOSSES)} or an import path "
                         f"'module:Name', got {spec!r}") from None


def loss_arguments(name: str, args: dict, context: dict) -> dict:
    """``args`` with the entries of ``context`` that the loss declares in its ``loss_context``
    and ``args`` leave out (what a run folder records as the loss's arguments)."""
    wanted = getattr(resolve_loss(name), "loss_context", ())
    return {**{k: context[k] for k in wanted if k in context and k not in args}, **args}


def make_loss(name: str = "trace_elbo", **kwargs):
    """The loss registered as ``name`` (or at an import path), built with ``kwargs`` (e.g.
    ``num_particles=5``)."""
    factory = resolve_loss(name)
    if not callable(factory):
        raise ValueError(f"loss {name!r}: {factory!r} is not a class or factory")
    try:
        loss = factory(**kwargs)
    except TypeError as e:
        raise ValueError(f"loss {name!r}: bad arguments {kwargs}: {e}") from None
    if not (hasattr(loss, "loss_and_grads") or callable(loss)):
        raise ValueError(f"loss {name!r}: {type(loss).__name__} is neither a Pyro ELBO "
                         f"(loss_and_grads) nor a callable loss")
    return loss
