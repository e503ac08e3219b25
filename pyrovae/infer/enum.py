r"""Exact expectation over a guide's discrete latents, for models whose code is small."""

from __future__ import annotations

from pyro.infer import TraceEnum_ELBO, config_enumerate

from .registry import register_loss


@register_loss("enum_elbo")
class TraceEnumGuide_ELBO(TraceEnum_ELBO):
    r""":class:`~pyro.infer.TraceEnum_ELBO` with every discrete guide site enumerated.

    Each latent site of the guide whose distribution has finite support is marked for
    parallel enumeration, so the expectation over it is a sum over all its values weighted
    by :math:`q`:

    .. math::
        \mathcal L = \sum_{z} q_\phi(z\mid x)\,\big[\log p_\theta(x, z) - \log q_\phi(z\mid x)\big],

    the ELBO itself rather than an estimate, and its gradient is exact: no score function, no
    variance (Pyro's TraceEnum_ELBO computes it with DiCE factors over the enumerated values;
    Foerster et al. 2018, Obermeyer et al. 2019). The cost grows with the number of joint
    values, so this is for codes such as one categorical of K values
    (:class:`~pyrovae.models.CategoricalVAE`), not for vectors of bits: an ``Independent``
    Bernoulli site over L bits has :math:`2^L` values and cannot be enumerated, and is refused
    with its name rather than silently estimated by the score function.
    """

    def _get_traces(self, model, guide, args, kwargs):
        checked = False
        for model_trace, guide_trace in super()._get_traces(
                model, config_enumerate(guide, "parallel"), args, kwargs):
            if not checked:
                _check_enumerated(guide_trace)
                checked = True
            yield model_trace, guide_trace


def _check_enumerated(guide_trace) -> None:
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        fn = site["fn"]
        if getattr(fn, "has_rsample", False) or type(fn).__name__ == "_Subsample":
            continue
        if site["infer"].get("enumerate") != "parallel":
            raise ValueError(
                f"site {name!r}: TraceEnumGuide_ELBO needs every non-reparametrisable guide "
                f"site to be enumerable, but {type(fn).__name__} with batch shape "
                f"{tuple(fn.batch_shape)} and event shape {tuple(fn.event_shape)} has no "
                f"enumerable support (an Independent over several bits has 2^L values); use "
                f"TraceGraph_ELBO, or a OneHotCategorical over the joint values"
            )
