r"""Natural-gradient variational inference for mean-field Gaussian factors, as an optimiser.

A Gaussian :math:`q = \mathcal N(\mu, \mathrm{diag}\,\sigma^2)` is an exponential family with
natural parameters :math:`\eta = (S\mu, -\tfrac12 S)`, :math:`S = \mathrm{diag}\,\sigma^{-2}`,
and mean parameters :math:`m = (\mu, \mu^2 + \sigma^2)`. The natural gradient — the ordinary
gradient preconditioned by the inverse Fisher information :math:`F(\eta)^{-1}` — of the ELBO
with respect to :math:`\eta` equals its ordinary gradient with respect to :math:`m`, because
:math:`F(\eta) = \partial m / \partial \eta` (Hoffman et al. 2013, §2.3; Khan and Lin 2017). A
step of size :math:`\rho` in :math:`\eta` is, written in :math:`(\mu, S)` (the Gaussian case
of Khan and Rue's 2023 Bayesian learning rule; the variational online Newton step of Khan et
al. 2018):

.. math::
    S' = S - 2\rho\,\nabla_{\sigma^2}\mathcal L,\qquad
    \mu' = \mu + \rho\, S'^{-1} \nabla_\mu \mathcal L .

For a Gaussian posterior (a conjugate Gaussian model) :math:`\nabla_{\sigma^2}\mathcal L =
\tfrac12(S - \Lambda)` and :math:`\nabla_\mu\mathcal L = -\Lambda(\mu - \mu^*)`, so one step
with :math:`\rho = 1` lands on the exact posterior from anywhere, while a first-order method's
progress is limited by the conditioning of :math:`\Lambda`. With noisy (Monte-Carlo or
mini-batch) gradients and steps :math:`\rho_t` with :math:`\sum\rho_t = \infty`,
:math:`\sum\rho_t^2 < \infty` it is stochastic VI (Hoffman et al. 2013, §2.4; Robbins and
Monro 1951).

A large or noisy step can make :math:`S` non-positive; there the improved rule of Lin, Schmidt
and Khan (2020) for Gaussians adds :math:`\tfrac{\rho^2}2 \hat G S^{-1} \hat G` (with
:math:`\hat G = -2\nabla_{\sigma^2}\mathcal L`), which keeps :math:`S` positive for any step.

The optimiser reads the gradients Pyro's ELBOs leave on the *unconstrained* parameters
(:math:`\mu` and :math:`u` with :math:`\sigma = h(u)`, :math:`h` = exp or softplus) and
converts them by the chain rule: :math:`\nabla_{\sigma^2}\mathcal L = \nabla_u \mathcal L /
(2\sigma h'(u))`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pyro
import torch
from pyro.distributions import constraints
from torch.distributions import biject_to

CORRECTIONS = ("auto", "iblr", "none")
_NAMED = {"exp": torch.distributions.ExpTransform,
          "softplus": torch.distributions.SoftplusTransform}


def _as_transform(t, where: str) -> torch.distributions.Transform:
    """``"exp"``, ``"softplus"``, a positivity constraint, or an elementwise ``Transform``
    from the reals onto the positive half-line."""
    if isinstance(t, str):
        if t not in _NAMED:
            raise ValueError(f"{where}: transform must be one of {sorted(_NAMED)}, a constraint "
                             f"or a Transform, got {t!r}")
        return _NAMED[t]()
    if isinstance(t, constraints.Constraint):
        t = biject_to(t)
    if not isinstance(t, torch.distributions.Transform):
        raise TypeError(f"{where}: expected a transform name, constraint or Transform, got "
                        f"{t!r}")
    probe = t(torch.linspace(-5.0, 5.0, 11, dtype=torch.float64))
    if t.domain.event_dim != 0 or not bool((probe > 0).all()):
        raise ValueError(f"{where}: the scale's transform {t} must map each real number to a "
                         f"positive one (as constraints.positive or softplus_positive do)")
    return t


def _sigma_and_slope(u: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
    """sigma = h(u) and dsigma/du (> 0) for an elementwise transform h."""
    sigma = t(u)
    return sigma, torch.exp(t.log_abs_det_jacobian(u, sigma))


class NaturalGradient(torch.optim.Optimizer):
    r"""Natural-gradient steps for mean-field Gaussian factors (see the module docstring).

    :param gaussians: one entry per Gaussian factor, ``(loc, unconstrained_scale, transform)``
        where ``scale = transform(unconstrained_scale)``: ``"exp"`` (how Pyro stores a
        ``constraints.positive`` parameter), ``"softplus"`` (``constraints.softplus_positive``,
        as ``AutoNormal``), a constraint or a ``Transform``; the tensors are the ones the loss
        fills ``.grad`` of. :meth:`from_param_store` and :meth:`from_module` build this list
        by name.
    :param lr: the step size :math:`\rho` in natural parameters (1 is exact for a Gaussian
        posterior with exact gradients; smaller, or decreasing, for noisy gradients).
    :param others: parameters that are not Gaussian factors (a decoder's weights, say),
        updated by plain gradient descent with ``others_lr``.
    :param correction: where :math:`S` would become non-positive: ``"auto"`` uses Lin et al.'s
        (2020) positivity-preserving step there only; ``"iblr"`` uses it everywhere; ``"none"``
        raises ``FloatingPointError``.
    """

    def __init__(self, gaussians, lr: float = 1.0, *, others=(), others_lr: float | None = None,
                 correction: str = "auto"):
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"lr: expected a positive number, got {lr!r}")
        if correction not in CORRECTIONS:
            raise ValueError(f"correction: expected one of {CORRECTIONS}, got {correction!r}")
        groups = []
        for i, entry in enumerate(gaussians):
            if not (isinstance(entry, (tuple, list)) and len(entry) == 3):
                raise TypeError(f"gaussians[{i}]: expected (loc, unconstrained_scale, "
                                f"transform), got {entry!r}")
            loc, u, transform = entry
            transform = _as_transform(transform, f"gaussians[{i}]")
            if not (torch.is_tensor(loc) and torch.is_tensor(u)) or loc.shape != u.shape:
                raise ValueError(f"gaussians[{i}]: loc and scale must be tensors of one shape, "
                                 f"got {getattr(loc, 'shape', loc)} and {getattr(u, 'shape', u)}")
            groups.append({"params": [loc, u], "kind": "gaussian", "transform": transform})
        if not groups:
            raise ValueError("gaussians: expected at least one Gaussian factor")
        others = [p for p in others]
        if others:
            if not (isinstance(others_lr, (int, float)) and others_lr > 0):
                raise ValueError(f"others_lr: {len(others)} other parameters need a positive "
                                 f"step size, got {others_lr!r}")
            groups.append({"params": others, "kind": "sgd", "lr": others_lr})
        super().__init__(groups, {"lr": lr, "correction": correction})

    @staticmethod
    def from_param_store(pairs: Mapping[str, str], lr: float = 1.0, **kwargs) -> NaturalGradient:
        """Factors named ``{loc_name: scale_name}`` in Pyro's global param store."""
        store = pyro.get_param_store()
        cons = store.get_state()["constraints"]
        gaussians = []
        for loc_name, scale_name in _check_pairs(pairs).items():
            for n in (loc_name, scale_name):
                if n not in store:
                    raise ValueError(f"pairs: no parameter {n!r} in the param store (it has "
                                     f"{sorted(store.keys())}); run the guide once first")
            if cons[loc_name] is not constraints.real:
                raise ValueError(f"pairs: the loc {loc_name!r} must be unconstrained, has "
                                 f"{cons[loc_name]}")
            gaussians.append((store[loc_name].unconstrained(),
                              store[scale_name].unconstrained(), cons[scale_name]))
        return NaturalGradient(gaussians, lr, **kwargs)

    @staticmethod
    def from_module(module: torch.nn.Module, pairs: Mapping[str, str], lr: float = 1.0,
                    **kwargs) -> NaturalGradient:
        r"""Factors held as ``PyroParam``\ s of a ``PyroModule`` (an ``AutoNormal`` guide, say):
        ``{"locs.z": "scales.z"}``, dotted paths from ``module``."""
        gaussians = []
        for loc_path, scale_path in _check_pairs(pairs).items():
            loc, loc_con = _pyro_param(module, loc_path)
            u, scale_con = _pyro_param(module, scale_path)
            if loc_con is not constraints.real:
                raise ValueError(f"pairs: the loc {loc_path!r} must be unconstrained, has "
                                 f"{loc_con}")
            gaussians.append((loc, u, scale_con))
        return NaturalGradient(gaussians, lr, **kwargs)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            rho = group["lr"]
            if group["kind"] == "sgd":
                for p in group["params"]:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-rho)
                continue
            loc, u = group["params"]
            if loc.grad is None and u.grad is None:
                continue
            g_loc = torch.zeros_like(loc) if loc.grad is None else loc.grad  # d(-ELBO)/d mu
            g_u = torch.zeros_like(u) if u.grad is None else u.grad  # d(-ELBO)/d u
            sigma, slope = _sigma_and_slope(u, group["transform"])
            prec = sigma ** -2  # S
            g_hat = g_u / (sigma * slope)  # -2 dELBO/d sigma^2
            step = prec + rho * g_hat
            corrected = step + 0.5 * (rho * g_hat) ** 2 / prec
            if group["correction"] == "iblr":
                new_prec = corrected
            else:
                bad = step <= 0
                if bool(bad.any()) and group["correction"] == "none":
                    raise FloatingPointError(
                        f"NaturalGradient: {int(bad.sum())} precision(s) would become "
                        f"non-positive at lr={rho}; lower lr or use correction='auto'")
                new_prec = torch.where(bad, corrected, step)
            loc.sub_(rho * g_loc / new_prec)
            u.copy_(group["transform"].inv(new_prec.rsqrt()))
        return loss


def _check_pairs(pairs) -> dict:
    if not isinstance(pairs, Mapping) or not pairs:
        raise TypeError(f"pairs: expected a non-empty mapping {{loc_name: scale_name}}, got "
                        f"{pairs!r}")
    return dict(pairs)


def _pyro_param(module, path: str):
    owner = module
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part, None)
        if owner is None:
            raise ValueError(f"pairs: {type(module).__name__} has no submodule on path {path!r}")
    specs = owner.__dict__.get("_pyro_params", {})
    if name not in specs:
        raise ValueError(f"pairs: {path!r} is not a PyroParam of {type(owner).__name__} "
                         f"(it has {sorted(specs)})")
    return owner._parameters[name + "_unconstrained"], specs[name][0]


def natural_gradient(pairs: Mapping[str, str], lr: float = 1.0, *,
                     module: torch.nn.Module | None = None, others_lr: float | None = None,
                     correction: str = "auto") -> Callable:
    r"""A factory ``params -> NaturalGradient`` for :func:`pyrovae.fit`'s ``optimizer``.

    The Gaussian factors are found by name (in ``module``'s ``PyroParam``\ s if given, else in
    Pyro's param store); every other parameter ``fit`` trains goes to plain gradient descent
    with ``others_lr`` (required when there are any).
    """
    _check_pairs(pairs)

    def make(params) -> NaturalGradient:
        if module is not None:
            opt = NaturalGradient.from_module(module, pairs, lr, correction=correction)
        else:
            opt = NaturalGradient.from_param_store(pairs, lr, correction=correction)
        taken = {id(p) for g in opt.param_groups for p in g["params"]}
        rest = [p for p in params if id(p) not in taken]
        if rest:
            if not (isinstance(others_lr, (int, float)) and others_lr > 0):
                raise ValueError(f"others_lr: {len(rest)} parameters besides the Gaussian "
                                 f"factors need a positive step size, got {others_lr!r}")
            opt.add_param_group({"params": rest, "kind": "sgd", "lr": others_lr})
        return opt

    return make
