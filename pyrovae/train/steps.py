"""One training step's forward and backward pass, and the ELBO's terms it yields for free.

Two ways to run it, chosen once per run from a probe of the model/guide pair:

- :class:`LossStep` calls the loss as given (a Pyro ELBO's ``loss_and_grads``, or a callable's
  tensor and ``backward``). When the loss is a Pyro ELBO run on the original programs, its
  own traces are read for the reconstruction and KL terms (no extra forward pass).
- :class:`LeanStep`, for ``Trace_ELBO``/``TraceMeanField_ELBO`` on a fully reparametrised
  guide: the same estimator computed by :func:`pyrovae.infer.lean.lean_elbo`, with PyroModule
  sub-networks read as plain attributes (:func:`pinned`), so the step pays almost nothing for
  the model being a Pyro program.

Both return ``(loss, terms)``: the loss summed over this process's batch (a float or a 0-d
tensor) and ``{"recon", "kl", ...}`` summed likewise (0-d tensors, read back only when
logged), or ``None`` when the terms are not known.
"""

from __future__ import annotations

import contextlib
import math

import pyro
import pyro.infer as pi
import torch
from pyro.nn import PyroModule

from ..infer.lean import lean_elbo
from ..infer.terms import trace_terms


class LossStep:
    """The loss as given; ``terms`` from its traces when it is a Pyro ELBO (see module).

    """

    def __init__(self, loss, model_fn, guide_fn, terms: bool = True):
        self.loss, self.model_fn, self.guide_fn = loss, model_fn, guide_fn
        self.elbo = hasattr(loss, "loss_and_grads")
        self.terms = terms
        self.analytic = isinstance(loss, pi.TraceMeanField_ELBO)
        tappable = terms and self.elbo \
            and callable(getattr(loss, "_get_traces", None)) \
            and not isinstance(loss, pi.TraceEnum_ELBO)  # enumerated sites: no single draw
        self._traces: list | None = None
        self._saved = None
        if tappable:
            self._tap()

    def _tap(self) -> None:
        loss, inner = self.loss, self.loss._get_traces
        self._saved = loss.__dict__.get("_get_traces")

        def tapped(model, guide, args, kwargs):
            own = model is self.model_fn and guide is self.guide_fn
            for model_tr, guide_tr in inner(model, guide, args, kwargs):
                if own and self._traces is not None:
                    self._traces.append((model_tr, guide_tr))
                yield model_tr, guide_tr

        loss._get_traces = tapped

    def close(self) -> None:
        """Takes the tap off the loss object."""
        if "_get_traces" in self.loss.__dict__:
            del self.loss._get_traces
            if self._saved is not None:
                self.loss._get_traces = self._saved

    def __call__(self, kwargs: dict, detail: bool = False):
        self._traces = []
        if self.elbo:
            value = self.loss.loss_and_grads(self.model_fn, self.guide_fn, **kwargs)
        else:
            t = self.loss(self.model_fn, self.guide_fn, **kwargs)
            t.backward()
            value = t.detach()
        traces, self._traces = self._traces, None
        if not traces:
            return value, None
        sums = [trace_terms(m, g, analytic=self.analytic, per_site=detail) for m, g in traces]
        n = getattr(self.loss, "num_particles", 1)
        return value, {k: sum(s[k] for s in sums) / n for k in sums[0]}


class LeanStep:
    """``Trace_ELBO`` (``TraceMeanField_ELBO`` with ``analytic``) via :func:`lean_elbo`."""

    def __init__(self, model_fn, guide_fn, analytic: bool, terms: bool):
        self.model_fn, self.guide_fn = model_fn, guide_fn
        self.analytic, self.terms = analytic, terms

    def __call__(self, kwargs: dict, detail: bool = False):
        loss, terms = lean_elbo(self.model_fn, self.guide_fn, (), kwargs,
                                analytic=self.analytic, per_site=detail)
        loss.backward()
        return loss.detach(), terms if self.terms else None


class CheckedLeanStep:
    """A :class:`LeanStep` preceded by the loss's own Pyro ELBO on the same draws, without
    gradients, for its validation (model/guide site agreement, shapes, supports): the step
    ``fit`` validates is then the same float computation as the unvalidated ones, so a run
    resumed from a checkpoint (validated again on its first step) stays bitwise equal to the
    uninterrupted run. Costs one forward pass, on the steps it runs."""

    def __init__(self, loss, lean: LeanStep, device: torch.device):
        self.loss, self.lean = loss, lean
        self.devices = [device] if device.type == "cuda" else []

    def __call__(self, kwargs: dict, detail: bool = False):
        with torch.random.fork_rng(devices=self.devices):  # the draws the lean step makes
            self.loss.loss(self.lean.model_fn, self.lean.guide_fn, **kwargs)
        return self.lean(kwargs, detail)

    def close(self) -> None:
        """Nothing to take off (as :meth:`LossStep.close`)."""


def run_step(step, kwargs: dict, *, validate: bool, bf16: bool, device: torch.device,
             detail: bool = False):
    """``step(kwargs)`` under Pyro's validation setting and the autocast precision. A NaN
    distribution parameter that validation reports ("found invalid values") counts as a
    non-finite loss, which the guard handles."""
    try:
        with pyro.validation_enabled(validate), torch.autocast(
                device.type, dtype=torch.bfloat16, enabled=bf16):
            return step(kwargs, detail)
    except ValueError as e:
        if "found invalid values" not in str(e):
            raise
        return math.nan, None


@contextlib.contextmanager
def pinned(model):
    """Within it, the plain ``nn.Module`` children and ``nn.Parameter`` attributes of every
    ``PyroModule`` in ``model`` are read as ordinary attributes.

    ``PyroModule.__getattr__`` sends one ``pyro.param`` message per parameter each time a
    sub-network is read (so that traces record param sites and the param store sees them);
    a loss that calls ``backward`` itself does not need them. Putting the objects in the
    instance ``__dict__`` makes Python find them before ``__getattr__`` is consulted;
    ``nn.Module.__setattr__`` removes such an entry when the attribute is assigned, so the
    model stays consistent, and everything is removed on exit. ``PyroParam`` and
    ``PyroSample`` attributes keep their behaviour (they are not in ``_parameters``/
    ``_modules`` under their own names).
    """
    pins = []
    if isinstance(model, torch.nn.Module):
        for mod in model.modules():
            if not isinstance(mod, PyroModule):
                continue
            for name, child in mod._modules.items():
                if child is not None and not isinstance(child, PyroModule) \
                        and name not in mod.__dict__:
                    mod.__dict__[name] = child
                    pins.append((mod, name, child))
            for name, p in mod._parameters.items():
                if p is not None and not name.endswith("_unconstrained") \
                        and name not in mod.__dict__:
                    mod.__dict__[name] = p
                    pins.append((mod, name, p))
    try:
        yield
    finally:
        for mod, name, obj in pins:
            if mod.__dict__.get(name) is obj:
                del mod.__dict__[name]
