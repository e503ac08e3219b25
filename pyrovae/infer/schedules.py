r"""Weights on the latent sites of any model/guide pair: β-VAE and KL warm-up as effect handlers.

Scaling the log-density of every *latent* sample site by :math:`\beta`, in model and guide
alike, turns any Pyro ELBO of :math:`\log p(x \mid z) + \log p(z) - \log q(z \mid x)` into

.. math:: \mathbb E_q[\log p_\theta(x \mid z)] - \beta\, \mathrm{KL}(q_\phi(z \mid x) \,\|\, p(z)),

the β-VAE objective (Higgins et al. 2017, eq. 4); under
:class:`~pyro.infer.TraceMeanField_ELBO` the analytic KL is multiplied by exactly β (it reads
the guide site's scale). Read as an information bottleneck (Alemi et al. 2017; Burgess et al.
2018), β prices the information the code carries about x. :class:`LatentScale` is Pyro's
``poutine.scale`` restricted to unobserved sites, so the likelihood keeps weight 1.

A *schedule* makes β a function of the optimiser step: KL warm-up (Bowman et al. 2016;
Sønderby et al. 2016) raises it from 0 to 1, linearly or by another shape; the cyclical
schedule of Fu et al. (2019) repeats the ramp. Two ways to use one:

- as a :class:`pyrovae.Callback` with any loss: ``fit(m, x, loss, callbacks=[KLWarmup(10000)])``
  (:class:`Beta`, :class:`KLWarmup`; ``wrap`` scales the programs the loss sees);
- as a loss wrapping another, :class:`ScaledLatentELBO`, which also works with Pyro's own
  ``SVI`` (it counts its steps) and from the command line (``--loss beta_elbo``).

References: Higgins et al. (2017) β-VAE, ICLR; Burgess et al. (2018) Understanding
disentangling in β-VAE, arXiv:1804.03599; Alemi et al. (2017) Deep variational information
bottleneck, ICLR; Bowman et al. (2016) Generating sentences from a continuous space, CoNLL;
Sønderby et al. (2016) Ladder variational autoencoders, NeurIPS; Fu et al. (2019) Cyclical
annealing schedule, NAACL.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pyro.infer import ELBO, Trace_ELBO
from pyro.poutine.messenger import Messenger

from .. import checks
from ..callbacks import StepFollower
from .registry import make_loss, register_loss

SHAPES = ("linear", "cosine", "sigmoid", "step", "cyclical")


class LatentScaleMessenger(Messenger):
    """Multiplies the scale of every unobserved sample site by ``scale``.

    ``scale`` is a number >= 0 or a zero-argument callable returning one, read at each site,
    so a schedule can change it without re-wrapping the program. Observed sites (and
    ``pyro.deterministic`` sites, which Pyro records as observed) keep their scale.
    """

    def __init__(self, scale: float | Callable[[], float]):
        super().__init__()
        if not callable(scale):
            checks.finite_number(scale, "scale", minimum=0)
        self.scale = scale

    def _process_message(self, msg) -> None:
        if msg["type"] != "sample" or msg["is_observed"]:
            return
        s = self.scale() if callable(self.scale) else self.scale
        if callable(self.scale):
            checks.finite_number(s, "scale", minimum=0)
        msg["scale"] = s * msg["scale"]


def scale_latents(fn=None, scale=1.0):
    """``fn`` with the log-densities of its latent (unobserved) sample sites multiplied by
    ``scale`` (a number or a zero-argument callable). Apply to model and guide alike. Without
    ``fn``, the messenger itself (a context manager)."""
    msngr = LatentScaleMessenger(scale)
    return msngr if fn is None else msngr(fn)


class Schedule:
    r"""A weight as a function of the optimiser step ``t`` (steps taken so far).

    With progress :math:`u = \mathrm{clip}((t - \text{delay}) / \text{steps}, 0, 1)` the value is
    ``start + (end - start) * g(u)`` where ``g`` is the ``shape``:

    - ``"linear"``: :math:`g(u) = u` (Bowman et al. 2016; Sønderby et al. 2016);
    - ``"cosine"``: :math:`g(u) = (1 - \cos \pi u) / 2`;
    - ``"sigmoid"``: a logistic :math:`\sigma(k(u - 1/2))`, rescaled so that g(0) = 0 and
      g(1) = 1 (``k = 10``);
    - ``"step"``: ``start`` until ``delay + steps``, then ``end``;
    - ``"cyclical"`` (Fu et al. 2019): the ``steps`` after ``delay`` are split into
      ``cycles`` periods; in each, the value rises linearly over the first ``ratio`` of the
      period and holds at ``end`` for the rest. After the last cycle it stays at ``end``.
    """

    def __init__(self, start: float = 0.0, end: float = 1.0, steps: int = 10000, *,
                 shape: str = "linear", delay: int = 0, cycles: int = 4, ratio: float = 0.5):
        checks.finite_number(start, "start", minimum=0)
        checks.finite_number(end, "end", minimum=0)
        checks.positive_int(steps, "steps")
        checks.int_at_least(delay, "delay", 0)
        checks.positive_int(cycles, "cycles")
        if shape not in SHAPES:
            raise ValueError(f"shape: expected one of {SHAPES}, got {shape!r}")
        if not (isinstance(ratio, (int, float)) and 0 < ratio <= 1):
            raise ValueError(f"ratio: expected a number in (0, 1], got {ratio!r}")
        self.start, self.end, self.steps = float(start), float(end), steps
        self.shape, self.delay, self.cycles, self.ratio = shape, delay, cycles, float(ratio)

    def progress(self, step: int) -> float:
        """``g(u)`` in [0, 1] at ``step``."""
        u = min(max((step - self.delay) / self.steps, 0.0), 1.0)
        if self.shape == "linear":
            return u
        if self.shape == "cosine":
            return 0.5 * (1 - math.cos(math.pi * u))
        if self.shape == "sigmoid":
            k = 10.0
            lo, hi = 1 / (1 + math.exp(k / 2)), 1 / (1 + math.exp(-k / 2))
            return (1 / (1 + math.exp(-k * (u - 0.5))) - lo) / (hi - lo)
        if self.shape == "step":
            return 1.0 if u >= 1 else 0.0
        # cyclical
        if u >= 1:
            return 1.0
        period = 1 / self.cycles
        tau = (u % period) / period  # position inside the current cycle, [0, 1)
        return min(tau / self.ratio, 1.0)

    def __call__(self, step: int) -> float:
        return self.start + (self.end - self.start) * self.progress(step)

    def __repr__(self) -> str:
        return (f"Schedule({self.start} -> {self.end} over {self.steps} steps, {self.shape!r}, "
                f"delay={self.delay})")


def as_schedule(beta) -> Callable[[int], float]:
    """A constant (number) or a schedule (``Schedule`` or any callable ``step -> weight``)."""
    if callable(beta):
        return beta
    checks.finite_number(beta, "scale", minimum=0)
    value = float(beta)
    return lambda step: value


class LatentScaleSchedule(StepFollower):
    """Callback: the loss sees model and guide with their latent sites scaled by
    ``schedule(step)`` (see :func:`scale_latents`). The weight used at each logged step is
    recorded in the history as ``"beta"``."""

    def __init__(self, schedule):
        self.schedule = as_schedule(schedule)
        self.step = 0

    @property
    def value(self) -> float:
        """The weight the next step uses."""
        return float(self.schedule(self.step))

    def wrap(self, model, guide):
        return scale_latents(model, scale=lambda: self.value), \
            scale_latents(guide, scale=lambda: self.value)

    def on_step_end(self, state) -> None:
        steps = state.history.steps
        if steps and steps[-1].get("step") == state.step:
            steps[-1]["beta"] = float(self.schedule(state.step - 1))  # the weight just used
        super().on_step_end(state)


class Beta(LatentScaleSchedule):
    """β-VAE (Higgins et al. 2017, eq. 4): a constant weight β on the KL term of any ELBO."""

    def __init__(self, beta: float):
        super().__init__(beta)
        self.beta = float(beta)


class KLWarmup(LatentScaleSchedule):
    """KL warm-up (Sønderby et al. 2016): the KL weight rises from ``start`` to ``end``
    over ``steps`` optimiser steps after ``delay``, by ``shape`` (see :class:`Schedule`)."""

    def __init__(self, steps: int, *, shape: str = "linear", start: float = 0.0,
                 end: float = 1.0, delay: int = 0, cycles: int = 4, ratio: float = 0.5):
        super().__init__(Schedule(start, end, steps, shape=shape, delay=delay, cycles=cycles,
                                  ratio=ratio))


class ScaledLatentELBO(ELBO, StepFollower):
    """A loss: ``loss`` (any Pyro ELBO) evaluated on model and guide with latent sites scaled by
    ``beta`` (a number, or a schedule ``step -> weight``).

    A :class:`pyro.infer.ELBO`, so Pyro's ``SVI`` takes it; it advances its own step count on
    each ``loss_and_grads``/``differentiable_loss`` call, so schedules run under ``SVI`` too;
    under :func:`pyrovae.fit` the count follows the trainer's (resumes included).
    ``last_terms`` reports the weight used, as ``beta``.
    """

    def __init__(self, loss=None, beta=1.0):
        super().__init__()
        self.loss_fn = Trace_ELBO() if loss is None else loss
        if not hasattr(self.loss_fn, "loss_and_grads"):
            raise TypeError(f"loss: expected a Pyro ELBO (with loss_and_grads), got "
                            f"{type(self.loss_fn).__name__}")
        self.schedule = as_schedule(beta)
        self.step = 0
        self.last_terms: dict[str, float] = {}

    @property
    def value(self) -> float:
        return float(self.schedule(self.step))

    def _wrapped(self, model, guide):
        v = self.value
        self.last_terms = {"beta": v, **(getattr(self.loss_fn, "last_terms", None) or {})}
        return scale_latents(model, scale=v), scale_latents(guide, scale=v)

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        m, g = self._wrapped(model, guide)
        out = self.loss_fn.loss_and_grads(m, g, *args, **kwargs)
        self.last_terms.update(getattr(self.loss_fn, "last_terms", None) or {})
        self.advance()
        return out

    def differentiable_loss(self, model, guide, *args, **kwargs):
        m, g = self._wrapped(model, guide)
        out = self.loss_fn.differentiable_loss(m, g, *args, **kwargs)
        self.advance()
        return out

    def loss(self, model, guide, *args, **kwargs) -> float:
        m, g = self._wrapped(model, guide)
        return self.loss_fn.loss(m, g, *args, **kwargs)

    def _get_trace(self, model, guide, args, kwargs):
        m, g = self._wrapped(model, guide)
        return self.loss_fn._get_trace(m, g, args, kwargs)


@register_loss("beta_elbo")
def beta_elbo(beta: float = 4.0, base: str = "trace_elbo", **kw) -> ScaledLatentELBO:
    """β-VAE (Higgins et al. 2017): the loss registered as ``base`` on β-scaled latent sites."""
    return ScaledLatentELBO(make_loss(base, **kw), beta)


@register_loss("warmup_elbo")
def warmup_elbo(steps: int = 10000, shape: str = "linear", start: float = 0.0, end: float = 1.0,
                delay: int = 0, base: str = "trace_elbo", **kw) -> ScaledLatentELBO:
    """KL warm-up (Sønderby et al. 2016): the latent sites' weight follows a :class:`Schedule`
    from ``start`` to ``end`` over ``steps`` optimiser steps."""
    return ScaledLatentELBO(make_loss(base, **kw),
                            Schedule(start, end, steps, shape=shape, delay=delay))
