r"""NVAE's training objective (Vahdat and Kautz 2020, §3.2 and appendix A) as a Pyro loss.

For a model/guide pair whose latent sites are groups :math:`z_1 \dots z_N` (any hierarchical
model here; :class:`pyrovae.models.NVAE` in particular) the loss, summed over a batch of
:math:`B` data points, is

.. math:: -\sum_b \Big[\log p(x_b \mid z) - \beta_t \sum_l \gamma_l\,
          \mathrm{KL}_l(x_b)\Big] + B\,\lambda\,(\mathcal L_{SR} + \mathcal L_{BN}),

- :math:`\mathrm{KL}_l = \mathrm{KL}(q(z_l \mid z_{<l}, x) \,\|\, p(z_l \mid z_{<l}))`
  analytic given the sampled :math:`z_{<l}` (:func:`pyrovae.distributions.residual_normal_kl`
  for residual-normal posteriors): a one-sample estimate of the ELBO's KL whose expectation
  is that of ``Trace_ELBO``'s;
- KL warm-up: :math:`\beta_t` rises linearly from ``beta_start`` to 1 over ``warmup_steps``;
- KL balancing (NVAE appendix A): while :math:`\beta_t < 1`,
  :math:`\gamma_l \propto \bar{\mathrm{KL}}_l / d_l` — the group's batch-mean KL per latent
  dimension, normalised so :math:`\sum_l \gamma_l = N` and not differentiated — so groups that
  carry little information are pushed less towards their prior and do not collapse;
  :math:`\gamma_l = 1` afterwards;
- :math:`\mathcal L_{SR}` the sum of the spectral norms of the convolutions and
  :math:`\mathcal L_{BN}` the batch-norm scale penalty
  (:class:`pyrovae.nn.spectral.SpectralRegularizer`), weighted by ``reg_coeff``.

With ``reg_coeff=0`` and ``warmup_steps=0`` the value is a one-sample negative ELBO with
analytic KLs, ``TraceMeanField_ELBO``'s.
"""

from __future__ import annotations

import pyro
import torch
from pyro.distributions.util import sum_rightmost

from .. import checks
from ..callbacks import StepFollower
from ..distributions import ResidualNormal, residual_normal_kl
from ..nn.spectral import SpectralRegularizer
from .registry import register_loss
from .schedules import Schedule
from .traces import guide_model_traces


def _unwrap(fn):
    reinterpreted = 0
    while isinstance(fn, torch.distributions.Independent) or \
            type(fn).__name__ == "ExpandedDistribution":
        if isinstance(fn, torch.distributions.Independent):
            reinterpreted += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    return fn, reinterpreted


def group_kl(guide_fn, model_fn) -> torch.Tensor:
    """Analytic KL of one latent site, summed over its event dims: shape ``batch_shape``."""
    q, nq = _unwrap(guide_fn)
    p, _ = _unwrap(model_fn)
    if isinstance(q, ResidualNormal) and isinstance(p, torch.distributions.Normal):
        kl = residual_normal_kl(q.delta_loc, q.delta_scale, p.scale)
        return sum_rightmost(kl, nq)
    return pyro.distributions.kl_divergence(guide_fn, model_fn)


@register_loss("nvae_elbo")
class TraceNVAE_ELBO(StepFollower):
    """NVAE's loss (module docstring). ``module`` is the ``nn.Module`` whose convolutions and
    batch norms are regularised; by default the object whose bound ``model`` method the loss
    is called with. A :class:`pyrovae.Callback` too, so ``fit`` checkpoints its step count
    and power-iteration vectors. Sets ``last_terms`` (per data point: ``recon``, ``kl``,
    ``beta``; ``spectral``, ``bn``) after each call."""

    def __init__(self, reg_coeff: float = 1e-2, warmup_steps: int = 0,
                 beta_start: float = 1e-2, balance: bool = True, power_iterations: int = 1,
                 module: torch.nn.Module | None = None):
        checks.number_at_least(reg_coeff, "reg_coeff", 0)
        checks.number_in(beta_start, "beta_start", 0, 1, bounds="[]")
        checks.int_at_least(warmup_steps, "warmup_steps", 0)
        checks.int_at_least(power_iterations, "power_iterations", 0)
        if not isinstance(balance, bool):
            raise ValueError(f"balance: expected True or False, got {balance!r}")
        self.reg_coeff, self.warmup_steps = float(reg_coeff), warmup_steps
        self.beta_start, self.balance = float(beta_start), balance
        self.power_iterations = power_iterations
        self.module, self.regularizer, self.step = module, None, 0
        self.warmup = (lambda step: 1.0) if warmup_steps == 0 else \
            Schedule(self.beta_start, 1.0, warmup_steps, shape="linear")
        self.last_terms: dict[str, float] = {}

    def beta(self) -> float:
        """The KL weight β_t at the current step: linear from ``beta_start`` to 1 over
        ``warmup_steps``, then 1."""
        return float(self.warmup(self.step))

    def _regularizer(self, model):
        if self.regularizer is None:
            module = self.module if self.module is not None else getattr(model, "__self__", None)
            if not isinstance(module, torch.nn.Module):
                raise ValueError("module: TraceNVAE_ELBO needs the nn.Module to regularise; "
                                 "pass module= or call it with a module's bound model method, "
                                 f"got model {model!r}")
            self.regularizer = SpectralRegularizer(module, self.power_iterations)
            if getattr(self, "_pending_vectors", None) is not None:
                self.regularizer.load_state_dict(self._pending_vectors)
        return self.regularizer

    def __call__(self, model, guide, *args, **kwargs) -> torch.Tensor:
        model_tr, guide_tr = guide_model_traces(model, guide, kwargs, args=args, block=False)
        model_tr.compute_log_prob()
        recon, kls, sizes, batch = 0.0, [], [], None
        for name, site in model_tr.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                recon = recon + site["log_prob"].sum()
                batch = site["log_prob"].numel()
            elif name in guide_tr.nodes:
                g = guide_tr.nodes[name]
                kls.append(group_kl(g["fn"], site["fn"]))  # (B,)
                sizes.append(g["fn"].event_shape.numel())
        if batch is None:
            raise ValueError("model: TraceNVAE_ELBO found no observed sample site")
        beta = self.beta()
        means = torch.stack([k.detach().mean() for k in kls]) if kls else None
        if kls and self.balance and beta < 1.0:
            per_dim = means / torch.tensor(sizes, dtype=means.dtype, device=means.device)
            gamma = len(kls) * (per_dim + 1e-2) / (per_dim + 1e-2).sum()  # (N,)
        else:
            gamma = [1.0] * len(kls)
        kl_term = sum(gm * k.sum() for gm, k in zip(gamma, kls)) if kls else 0.0
        loss = -recon + beta * kl_term
        spectral = bn = torch.zeros(())
        if self.reg_coeff > 0 and torch.is_grad_enabled():
            spectral, bn = self._regularizer(model).penalties()
            loss = loss + batch * self.reg_coeff * (spectral + bn)
        if torch.is_grad_enabled():
            self.advance()
        self.last_terms = {"recon": float(-recon.detach()) / batch,
                           "kl": float(sum(k.detach().sum() for k in kls)) / batch,
                           "beta": beta, "spectral": float(spectral.detach()),
                           "bn": float(bn.detach())}
        return loss

    def state_dict(self) -> dict:
        return {"step": self.step,
                "regularizer": None if self.regularizer is None else
                self.regularizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state.get("step", 0))
        self._pending_vectors = state.get("regularizer")
        if self.regularizer is not None and self._pending_vectors is not None:
            self.regularizer.load_state_dict(self._pending_vectors)
