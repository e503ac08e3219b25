r"""Monte-Carlo moments of a stochastic gradient estimator, parameter by parameter."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pyro
import torch

from .. import checks
from .._runtime import module_device, resolve_device, seeded
from ..data import as_dataset
from ..protocol import as_model, input_names
from ..train.probe import discover_params  # the same parameters fit() trains


@dataclass
class GradientMoments:
    r"""Mean and variance of each parameter's gradient estimate over ``num_draws`` draws.

    ``mean[name]`` and ``variance[name]`` have the parameter's (unconstrained) shape;
    ``variance`` is the unbiased per-element sample variance (float64).
    """

    mean: dict[str, torch.Tensor]
    variance: dict[str, torch.Tensor]
    num_draws: int
    losses: torch.Tensor  # (num_draws,) the loss each draw returned

    def _names(self, params) -> list[str]:
        return _select(list(self.mean), params)

    def total_variance(self, params=None) -> float:
        r""":math:`\operatorname{tr}\operatorname{Cov}[\hat g] = \mathbb E\|\hat g -
        \mathbb E\hat g\|^2`, summed over the selected parameters (all by default)."""
        return float(sum(self.variance[n].sum() for n in self._names(params)))

    def mean_squared_norm(self, params=None) -> float:
        r""":math:`\|\bar g\|^2` of the mean gradient over the selected parameters."""
        return float(sum((self.mean[n] ** 2).sum() for n in self._names(params)))

    def standard_error(self) -> dict[str, torch.Tensor]:
        """Per-element Monte-Carlo standard error of ``mean``: sqrt(variance / num_draws)."""
        return {n: (v / self.num_draws).sqrt() for n, v in self.variance.items()}

    def signal_to_noise(self, params=None) -> float:
        r""":math:`\|\bar g\|^2 / \operatorname{tr}\operatorname{Cov}[\hat g]` (Rainforth et
        al. 2018 study its per-element form)."""
        return self.mean_squared_norm(params) / max(self.total_variance(params), 1e-300)


def _select(names: list[str], params) -> list[str]:
    if params is None:
        return names
    if callable(params):
        chosen = [n for n in names if params(n)]
    else:
        if isinstance(params, str):
            params = [params]
        prefixes = list(params)
        chosen = [n for n in names if any(n == p or n.startswith(p) for p in prefixes)]
    if not chosen:
        raise ValueError(f"params: {params!r} selects none of the parameters {names}")
    return chosen


def _named_params(model, model_fn, guide_fn, kwargs) -> dict[str, torch.Tensor]:
    params, extra, _, _ = discover_params(model, model_fn, guide_fn, kwargs)
    named = {}
    if isinstance(model, torch.nn.Module):
        named.update(model.named_parameters())
    named.update(extra)
    ids = {id(p) for p in named.values()}
    for i, p in enumerate(params):  # anything else fit would train
        if id(p) not in ids:
            named[f"param_{i}"] = p
    return {n: p for n, p in named.items() if p.requires_grad}


def gradient_variance(model, data, loss=None, num_draws: int = 100, *,
                      params: Iterable[str] | str | Callable[[str], bool] | None = None,
                      warmup: int = 0, shuffle: bool = False, seed: int | None = 0,
                      device=None) -> GradientMoments:
    r"""Mean and variance of the gradient estimates ``loss`` makes for ``model`` on ``data``.

    Each draw zeroes the gradients, calls ``loss.loss_and_grads(model.model, model.guide,
    **batch)`` (or backpropagates a callable loss's tensor) and reads every parameter's
    ``.grad``; running moments are kept in float64 (Welford 1962), so memory is that of two
    copies of the parameters. Nothing is updated: the parameters stay where they are, so the
    draws are i.i.d. and their mean estimates the expected gradient at this point, with
    standard error :meth:`GradientMoments.standard_error`. Comparing
    :meth:`GradientMoments.total_variance` across losses at one point measures how much each
    estimator's noise costs (Ranganath et al. 2014, §3; Mnih and Gregor 2014, §3).

    :param model: a model/guide pair (``PyroModule`` or ``(model_fn, guide_fn)``).
    :param data: one batch: a dict of batch fields (``x``, ...), a tensor, or a dataset taken
        whole (dynamic binarisation drawn once with ``seed``).
    :param loss: a Pyro ELBO or a callable loss; default ``Trace_ELBO()``.
    :param num_draws: draws to average (at least 2).
    :param params: the parameters to report: names or name prefixes (as in
        ``model.named_parameters()``, and ``pyro.param`` names), or a predicate on names.
    :param warmup: draws made and discarded first, so that a stateful estimator (the decaying
        average baseline of :class:`~pyro.infer.TraceGraph_ELBO`) settles.
    :param shuffle: permute the batch's rows before each draw. The gradient of a sum over
        data points does not depend on their order, but Pyro's decaying-average baseline keeps
        one running average per batch *position*: on one fixed batch it would become a
        per-datum average (an oracle input-dependent baseline), whereas in training with
        shuffled batches it is a batch-wide one. Shuffling measures the latter.
    :param seed: seeds the draws without touching the caller's RNG (``None``: use it as is).
    :returns: :class:`GradientMoments`. Gradients are left cleared (``None``).
    """
    checks.int_at_least(num_draws, "num_draws", 2)
    checks.int_at_least(warmup, "warmup", 0)
    model = as_model(model)
    loss = pyro.infer.Trace_ELBO() if loss is None else loss
    if not (hasattr(loss, "loss_and_grads") or callable(loss)):
        raise TypeError(f"loss: expected a Pyro ELBO or a callable, got {type(loss).__name__}")
    dev = resolve_device(device) if device is not None else module_device(model)
    if isinstance(data, dict):
        if "x" not in data:
            raise ValueError(f"data: a batch dict needs an 'x' field, got keys {sorted(data)}")
        batch = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in data.items()}
    else:
        ds = as_dataset(data, name="data").frozen(0 if seed is None else seed).to(dev)
        batch = ds.batch(torch.arange(len(ds), device=dev))
    check = getattr(model, "check_data", None)
    if check is not None:
        check(batch["x"], "data")
    kwargs = {k: batch[k] for k in input_names(model, batch)}
    named = _named_params(model, model.model, model.guide, kwargs)
    chosen = _select(list(named), params)
    all_params = list(named.values())

    mean = {n: torch.zeros(named[n].shape, dtype=torch.float64, device=dev) for n in chosen}
    m2 = {n: torch.zeros_like(mean[n]) for n in chosen}  # sums of squared deviations
    losses = []

    rows = batch["x"].shape[0] if batch["x"].dim() else 0

    def draw() -> float:
        for p in all_params:
            p.grad = None
        kw = kwargs
        if shuffle and rows > 1:
            perm = torch.randperm(rows, device=dev)
            kw = {k: v[perm] if torch.is_tensor(v) and v.dim() and v.shape[0] == rows else v
                  for k, v in kwargs.items()}
        if hasattr(loss, "loss_and_grads"):
            value = float(loss.loss_and_grads(model.model, model.guide, **kw))
        else:
            t = loss(model.model, model.guide, **kw)
            t.backward()
            value = float(t.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"gradient_variance: the loss is {value}")
        return value

    with seeded(seed, dev):
        for _ in range(warmup):
            draw()
        for k in range(1, num_draws + 1):
            losses.append(draw())
            for n in chosen:
                g = named[n].grad
                g = torch.zeros_like(mean[n]) if g is None else g.detach().double()
                delta = g - mean[n]
                mean[n] += delta / k
                m2[n] += delta * (g - mean[n])
    for p in all_params:
        p.grad = None
    variance = {n: m2[n] / (num_draws - 1) for n in chosen}
    return GradientMoments(mean, variance, num_draws, torch.tensor(losses, dtype=torch.float64))
