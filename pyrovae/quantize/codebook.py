r"""Vector quantisation against a learned codebook (van den Oord et al. 2017, "Neural Discrete
Representation Learning", §3.1-3.2 and appendix A.1).

A codebook :math:`E = (e_1, \dots, e_K) \in \mathbb R^{K \times D}` maps an encoder output
:math:`z_e \in \mathbb R^D` to its nearest code (eq. 1-2)

.. math:: k^* = \arg\min_k \lVert z_e - e_k \rVert_2, \qquad z_q = e_{k^*}.

The argmin has no gradient, so the encoder is trained by the straight-through estimator (§3.2):
the decoder's gradient with respect to :math:`z_q` is copied to :math:`z_e`
(:func:`straight_through`). The codebook learns from the codebook loss
:math:`\lVert \mathrm{sg}[z_e] - e \rVert^2` (:func:`codebook_loss`) or, in its place, from
exponential moving averages of the vectors each code is assigned (:func:`ema_update`); the
commitment loss :math:`\beta \lVert z_e - \mathrm{sg}[e] \rVert^2` (:func:`commitment_loss`)
keeps the encoder close to the codes it picks (eq. 3, :math:`\beta = 0.25`).

:class:`VectorQuantizer` bundles these with k-means initialisation from the first training
batches and restarts of dead codes (Dhariwal et al. 2020, "Jukebox", §3.2: a code whose average
use falls below a threshold is moved onto a random encoder output of the current batch).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from .. import checks
from .. import distributed as ddp
from .kmeans import kmeans
from .nearest import nearest_code


def straight_through(z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    r"""The straight-through estimator of van den Oord et al. (2017, §3.2).

    Returns a tensor equal to ``z_q`` in value (bit for bit: ``z_q`` plus an exact zero) whose
    gradient flows to ``z_e`` unchanged and not to ``z_q``:

    .. math:: \tilde z = \mathrm{sg}[z_q] + z_e - \mathrm{sg}[z_e],\qquad
              \partial \tilde z / \partial z_e = I,\quad \partial \tilde z / \partial z_q = 0.

    So the encoder receives exactly the gradient the decoder sends to its input, and the
    reconstruction term never moves the codebook.
    """
    if z_e.shape != z_q.shape:
        raise ValueError(f"z_q: expected the shape of z_e {tuple(z_e.shape)}, got "
                         f"{tuple(z_q.shape)}")
    return z_q.detach() + (z_e - z_e.detach())


def codebook_loss(z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    r""":math:`\lVert \mathrm{sg}[z_e] - z_q \rVert_2^2` over the last dim (van den Oord et al.
    2017, eq. 3, second term): moves the chosen codes towards the encoder outputs, and only the
    codes. Shape ``z_e.shape[:-1]``."""
    return (z_e.detach() - z_q).pow(2).sum(-1)


def commitment_loss(z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    r""":math:`\lVert z_e - \mathrm{sg}[z_q] \rVert_2^2` over the last dim (eq. 3, third term,
    before the weight :math:`\beta`): pulls the encoder towards its codes, and only the encoder.
    Shape ``z_e.shape[:-1]``."""
    return (z_e - z_q.detach()).pow(2).sum(-1)


def code_statistics(z: torch.Tensor, indices: torch.Tensor, num_codes: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-code assignment counts :math:`n_i` ``(K,)`` and sums of assigned vectors
    :math:`\sum_{j: k_j = i} z_j` ``(K, D)`` for rows ``z: (N, D)`` assigned ``indices: (N,)``."""
    counts = torch.bincount(indices, minlength=num_codes).to(z.dtype)  # (K,)
    sums = torch.zeros(num_codes, z.shape[1], dtype=z.dtype, device=z.device)
    sums.index_add_(0, indices, z)  # (K, D)
    return counts, sums


def ema_update(ema_count: torch.Tensor, ema_sum: torch.Tensor, counts: torch.Tensor,
               sums: torch.Tensor, decay: float = 0.99, eps: float = 1e-5
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""One exponential-moving-average codebook step (van den Oord et al. 2017, appendix A.1,
    eqs. 6-8), with Laplace smoothing of the counts.

    .. math::
        N_i &\leftarrow \gamma N_i + (1 - \gamma) n_i, \qquad
        m_i \leftarrow \gamma m_i + (1 - \gamma) \textstyle\sum_{j: k_j = i} z_j,\\
        \tilde N_i &= \frac{N_i + \epsilon}{n + K \epsilon}\, n \quad (n = \textstyle\sum_i N_i),
        \qquad e_i = m_i / \tilde N_i.

    The smoothing keeps an unused code's :math:`\tilde N_i` away from zero, so :math:`e_i` stays
    finite while :math:`N_i` decays; :math:`\sum_i \tilde N_i = n`. Returns the new
    ``(ema_count (K,), ema_sum (K, D), codebook (K, D))``; the inputs are not modified.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay: expected a number in [0, 1), got {decay!r}")
    if not eps >= 0.0:
        raise ValueError(f"eps: expected a non-negative number, got {eps!r}")
    count = decay * ema_count + (1.0 - decay) * counts  # (K,)
    total = decay * ema_sum + (1.0 - decay) * sums  # (K, D)
    n = count.sum()
    k = count.shape[0]
    smoothed = (count + eps) / (n + k * eps) * n  # (K,)
    return count, total, total / smoothed.unsqueeze(1)


class Quantized(NamedTuple):
    """What :meth:`VectorQuantizer.forward` returns; every field has the input's leading dims."""

    z_q: torch.Tensor  # (..., D) the chosen codes, straight-through to z_e (value == codebook rows)
    indices: torch.Tensor  # (...,) int64 code indices
    commitment: torch.Tensor  # (...,) ||z_e - sg[e]||^2 (unweighted)
    codebook: torch.Tensor | None  # (...,) ||sg[z_e] - e||^2; None when the codebook is an EMA


class VectorQuantizer(nn.Module):
    r"""Nearest-neighbour quantiser over a codebook of ``num_codes`` x ``code_dim`` (K x D).

    ``forward(z_e: (..., D))`` returns :class:`Quantized`: the straight-through codes, their
    indices and the per-position codebook and commitment losses (unweighted; ``beta`` is kept
    here for the model to apply). :meth:`embed` maps indices back to codes.

    Learning the codebook:

    - ``ema=True`` (default): the codebook is a buffer updated by :func:`ema_update` with
      ``decay`` and Laplace ``eps``; ``codebook`` in :class:`Quantized` is ``None``.
    - ``ema=False``: the codebook is a parameter trained by the codebook loss.

    Updates (EMA step, k-means initialisation, dead-code restarts) happen once for every
    training-mode forward pass *whose result is back-propagated*: a gradient hook on ``z_e``
    applies them when the backward pass reaches it. Forward passes under ``torch.no_grad``, in
    eval mode, or never differentiated (a trace that only inspects the program) change nothing.
    The backward pass never needs the codebook's old values (distances are computed without
    gradient and lookups copy), so updating it in place there is safe.

    - ``kmeans_init`` (batches, default 1): the codebook is set by k-means (k-means++ seeding,
      then Lloyd iterations) on the encoder outputs of the first ``kmeans_init`` training batches;
      0 keeps the random initialisation.
    - ``restart_threshold``: after each update, codes whose moving-average count (assignments
      per batch, decay ``decay``) is below it are moved onto random encoder outputs of the
      current batch; 0 disables restarts.

    Under data-parallel training (:func:`pyrovae.fit` on a ``torch.distributed`` group) these
    updates use the global batch: statistics are summed across processes, and k-means and the
    restarts' draws run on rank 0 over the gathered encoder outputs (see :meth:`update`).
    """

    def __init__(self, num_codes: int = 512, code_dim: int = 64, *, beta: float = 0.25,
                 ema: bool = True, decay: float = 0.99, eps: float = 1e-5,
                 kmeans_init: int = 1, kmeans_iters: int = 20,
                 restart_threshold: float = 1.0):
        super().__init__()
        checks.positive_int(num_codes, "num_codes")
        checks.positive_int(code_dim, "code_dim")
        if not (isinstance(beta, (int, float)) and beta >= 0 and math.isfinite(beta)):
            raise ValueError(f"beta: expected a non-negative number, got {beta!r}")
        if not (isinstance(decay, (int, float)) and 0 <= decay < 1):
            raise ValueError(f"decay: expected a number in [0, 1), got {decay!r}")
        if not (isinstance(eps, (int, float)) and eps >= 0):
            raise ValueError(f"eps: expected a non-negative number, got {eps!r}")
        checks.int_at_least(kmeans_init, "kmeans_init", 0)  # a number of batches
        if not (isinstance(restart_threshold, (int, float)) and restart_threshold >= 0):
            raise ValueError(f"restart_threshold: expected a non-negative number, got "
                             f"{restart_threshold!r}")
        self.num_codes, self.code_dim = num_codes, code_dim
        self.beta, self.ema, self.decay, self.eps = float(beta), bool(ema), float(decay), eps
        self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
        self.restart_threshold = float(restart_threshold)
        init = torch.randn(num_codes, code_dim)  # replaced by k-means unless kmeans_init == 0
        if self.ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_sum", init.clone())  # m_i  (K, D)
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("ema_count", torch.ones(num_codes))  # N_i  (K,)
        self.register_buffer("initialized", torch.tensor(kmeans_init == 0))
        self._init_vectors: list[torch.Tensor] = []  # encoder outputs gathered for k-means

    def extra_repr(self) -> str:
        return (f"num_codes={self.num_codes}, code_dim={self.code_dim}, beta={self.beta}, "
                f"ema={self.ema}, decay={self.decay}")

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes ``(..., D)`` for ``indices: (...)`` (decoding from indices)."""
        if indices.dtype not in (torch.int64, torch.int32):
            indices = indices.long()
        return nn.functional.embedding(indices, self.codebook)

    def quantize(self, z_e: torch.Tensor) -> torch.Tensor:
        """Indices ``(...)`` of the codes nearest to ``z_e: (..., D)``."""
        self._check_input(z_e)
        with torch.no_grad():
            idx, _ = nearest_code(z_e.reshape(-1, self.code_dim), self.codebook.detach())
        return idx.reshape(z_e.shape[:-1])

    def _check_input(self, z_e):
        if not isinstance(z_e, torch.Tensor) or z_e.dim() < 1 or z_e.shape[-1] != self.code_dim:
            shape = tuple(z_e.shape) if isinstance(z_e, torch.Tensor) else type(z_e).__name__
            raise ValueError(f"z_e: expected shape (..., {self.code_dim}) (code_dim last), "
                             f"got {shape}")

    def forward(self, z_e: torch.Tensor) -> Quantized:
        # Quantisation stays in fp32 under bf16 autocast: distances, losses and the EMA
        # statistics would otherwise round to 8 bits of mantissa.
        if z_e.dtype in (torch.bfloat16, torch.float16):
            z_e = z_e.to(self.codebook.dtype)
        with torch.autocast(z_e.device.type, enabled=False):
            return self._forward(z_e)

    def _forward(self, z_e: torch.Tensor) -> Quantized:
        idx = self.quantize(z_e)  # (...)
        z_q = self.embed(idx)  # (..., D); carries the codebook's gradient when it is a parameter
        commit = commitment_loss(z_e, z_q)
        cb = None if self.ema else codebook_loss(z_e, z_q)
        if self.training and torch.is_grad_enabled() and z_e.requires_grad:
            flat, flat_idx = z_e.detach().reshape(-1, self.code_dim), idx.reshape(-1)

            def hook(grad):
                self.update(flat, flat_idx)

            z_e.register_hook(hook)
        return Quantized(straight_through(z_e, z_q), idx, commit, cb)

    @torch.no_grad()
    def update(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        r"""The per-batch codebook bookkeeping for encoder outputs ``z: (N, D)`` assigned
        ``indices: (N,)``: k-means initialisation while it is pending, else the EMA step (and the
        usage count in either mode), then dead-code restarts.

        Data-parallel (:func:`pyrovae.distributed.synced` names a group, as inside a distributed
        :func:`~pyrovae.fit`), the processes' shares of the global batch act as one batch: the
        counts and sums :math:`n_i, \sum_{j: k_j = i} z_j` are summed across processes before
        the EMA step, k-means runs on the gathered encoder outputs and the restarts draw from
        them, each on rank 0 with the result broadcast. W processes then keep the codebook one
        process with their batches together would (every process must call this in step)."""
        world = ddp.synced()
        if not bool(self.initialized):
            self._init_vectors.append(z.clone() if world is None else ddp.gather_rows(z))
            if len(self._init_vectors) >= self.kmeans_init:
                if world is None or world.is_main:
                    self._initialize(torch.cat(self._init_vectors))
                self._init_vectors = []
                if world is not None:
                    ddp.broadcast_(self._statistics())
                    self.initialized.fill_(True)
            return
        counts, sums = code_statistics(z, indices, self.num_codes)  # (K,), (K, D)
        if world is not None:  # statistics of the global batch
            ddp.all_reduce_([counts, sums])
        if self.ema:
            count, total, codebook = ema_update(self.ema_count, self.ema_sum, counts, sums,
                                                self.decay, self.eps)
            self.ema_count.copy_(count)
            self.ema_sum.copy_(total)
            self.codebook.copy_(codebook)
        else:
            self.ema_count.mul_(self.decay).add_((1 - self.decay) * counts)
        if self.restart_threshold > 0:
            self.restart_dead_codes(z)

    def _statistics(self) -> list[torch.Tensor]:
        """The tensors the bookkeeping writes: codebook, counts and (EMA) sums."""
        return [self.codebook, self.ema_count] + ([self.ema_sum] if self.ema else [])

    @torch.no_grad()
    def _initialize(self, z: torch.Tensor) -> None:
        n = z.shape[0]
        if n >= self.num_codes:
            result = kmeans(z, self.num_codes, init="k-means++", max_iter=self.kmeans_iters)
            centers, labels = result.centers, result.labels
        else:  # fewer vectors than codes: each code copies a vector, with a little jitter
            pick = torch.randint(n, (self.num_codes,), device=z.device)
            scale = z.std() if n > 1 else z.abs().mean()
            centers = z[pick] + 1e-3 * scale * torch.randn_like(z[pick])
            labels = nearest_code(z, centers)[0]
        batches = max(self.kmeans_init, 1)
        count = torch.bincount(labels, minlength=self.num_codes).to(z.dtype) / batches
        self.codebook.copy_(centers.to(self.codebook.dtype))
        self.ema_count.copy_(count)
        if self.ema:
            self.ema_sum.copy_(self.codebook * count.unsqueeze(1))
        self.initialized.fill_(True)

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor) -> torch.Tensor:
        """Moves codes whose moving-average count is below ``restart_threshold`` onto random rows
        of ``z: (N, D)``; returns their indices. A restarted code's count is reset to the
        average per code, ``N / K`` (at least the threshold), so it has time to be used.
        Data-parallel, the rows are those of every process and rank 0 draws the pick."""
        dead = (self.ema_count < self.restart_threshold).nonzero().squeeze(1)
        if dead.numel() == 0:  # the counts agree across processes, so all return here or none
            return dead
        world = ddp.synced()
        if world is not None:
            z = ddp.gather_rows(z)  # (N, D), the global batch
        n = z.shape[0]
        if world is None or world.is_main:
            pick = torch.randperm(n, device=z.device)[:dead.numel()] if n >= dead.numel() \
                else torch.randint(n, (dead.numel(),), device=z.device)
        else:
            pick = torch.empty(dead.numel(), dtype=torch.int64, device=z.device)
        if world is not None:
            ddp.broadcast_([pick])
        count = max(n / self.num_codes, self.restart_threshold)
        self.codebook[dead] = z[pick].to(self.codebook.dtype)
        self.ema_count[dead] = count
        if self.ema:
            self.ema_sum[dead] = self.codebook[dead] * count
        return dead
