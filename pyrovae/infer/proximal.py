r"""Proximal gradient steps for a group-lasso penalty on one parameter tensor.

For an objective :math:`f(w) + \lambda \sum_{\text{groups } G} \|w_G\|_2` with smooth f, the
proximal gradient step with step size η is (Parikh and Boyd 2014, the prox of a sum of norms)

.. math::

   u = w - \eta \nabla f(w), \qquad
   w_G \leftarrow u_G \, \max\Bigl(0,\ 1 - \frac{\eta \lambda}{\|u_G\|_2}\Bigr),

which sets whole groups exactly to zero — what oi-VAE needs for its latent-to-group weights
(Ainsworth et al. 2018, whose released code takes plain proximal SGD steps on W and Adam
on the rest).

:class:`ProximalGroupLasso` is a :class:`pyrovae.Callback` doing just that inside
:func:`pyrovae.fit`: while training it takes the parameter's gradient away from fit's
optimiser (a post-accumulate-grad hook hands it over and leaves ``.grad`` empty, so the
optimiser skips the tensor) and, after each step, applies the update above itself. f is the
loss fit minimises, which Pyro's ELBOs sum over the batch; λ is in the same units, so the
penalty per data point is λ / batch size.

Reference: Parikh and Boyd (2014) Proximal algorithms, Foundations and Trends in Optimization.
"""

from __future__ import annotations

import torch

from .. import checks
from ..callbacks import Callback


def group_soft_threshold(w: torch.Tensor, threshold: float, dim) -> torch.Tensor:
    """``w`` with every group (the entries sharing all indices but ``dim``) shrunk towards 0 by
    ``threshold`` in Euclidean norm, and set to 0 when its norm is below it."""
    norm = w.norm(dim=dim, keepdim=True)
    factor = (1 - threshold / norm.clamp(min=1e-30)).clamp(min=0)
    return w * factor


class ProximalGroupLasso(Callback):
    """Proximal SGD on ``param`` for the penalty ``lam * sum ||param_G||`` (see the module).

    :param param: the tensor (an ``nn.Parameter`` of the model being fit).
    :param lam: λ ≥ 0, in the units of fit's loss (summed over the batch).
    :param lr: η, the step size of the gradient step on ``param``.
    :param dim: the dim(s) spanned by one group; e.g. ``1`` for the columns
        :math:`w^{(g)}_{\\cdot j}` of oi-VAE's ``W: (G, p, L)``.
    """

    def __init__(self, param: torch.Tensor, lam: float, lr: float, dim=1):
        if not isinstance(param, torch.Tensor) or not param.requires_grad or not param.is_leaf:
            raise TypeError(f"param: expected a leaf tensor that requires grad (an "
                            f"nn.Parameter), got {type(param).__name__}")
        checks.finite_number(lam, "lam", minimum=0)
        checks.finite_number(lr, "lr", positive=True)
        self.param, self.lam, self.lr, self.dim = param, float(lam), float(lr), dim
        self._grad = None
        self._handle = None

    def _take(self, p: torch.Tensor) -> None:
        if p.grad is not None:
            g = p.grad.detach()
            self._grad = g.clone() if self._grad is None else self._grad + g
            p.grad = None  # the optimiser skips it

    def on_train_start(self, state) -> None:
        self._handle = self.param.register_post_accumulate_grad_hook(self._take)

    @torch.no_grad()
    def on_step_end(self, state) -> None:
        if self._grad is None:
            return
        u = self.param - self.lr * self._grad
        self.param.copy_(group_soft_threshold(u, self.lr * self.lam, self.dim))
        self._grad = None

    def on_train_end(self, state) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
