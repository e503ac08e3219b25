"""The VAE written in plain PyTorch: the side-by-side reference for the benchmarks.

Encoder and decoder are ordinary ``nn.Module``s (pyrovae's networks are plain torch, so a copy
of them serves); the loss, sampling, optimiser loop and importance-weighted evaluation below are
written here without Pyro. The loss is the single-sample Monte-Carlo ELBO that
``pyro.infer.Trace_ELBO`` estimates,

    -ELBO(x) = -[log p(x | z) + log p(z) - log q(z | x)],  z = mu + sigma * eps,  eps ~ N(0, I),

with a Bernoulli p(x | z) and the encoder's scale ``softplus(raw) + min_scale`` (or, with
``scale="exp"``, ``exp(raw) + min_scale``, as ``VAEConfig(scale="exp")``), so for equal weights
and equal noise the two losses and gradients are equal (tests check it). ``analytic_kl=True``
replaces ``log q(z | x) - log p(z)`` in the training loss by KL(q || p) in closed form
(``TraceMeanField_ELBO``'s estimator), for the comparison of the two.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

LOG_2PI = math.log(2 * math.pi)


class TorchVAE(nn.Module):
    def __init__(self, encoder: nn.Module, decoder: nn.Module, event_dims: int,
                 min_scale: float = 1e-4, scale: str = "softplus", analytic_kl: bool = False):
        super().__init__()
        if scale not in ("softplus", "exp"):
            raise ValueError(f"scale: expected 'softplus' or 'exp', got {scale!r}")
        self.encoder, self.decoder = encoder, decoder
        self.event_dims, self.min_scale = event_dims, min_scale
        self.scale, self.analytic_kl = scale, analytic_kl

    @classmethod
    def like(cls, vae, analytic_kl: bool = False) -> TorchVAE:
        """Same architecture and current weights as a ``pyrovae.VAE`` with Bernoulli output."""
        return cls(copy.deepcopy(vae.encoder), copy.deepcopy(vae.decoder),
                   len(vae.config.input_shape), vae.config.min_scale,
                   getattr(vae.config, "scale", "softplus"), analytic_kl)

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.encoder(x).chunk(2, -1)
        positive = raw.exp() if self.scale == "exp" else F.softplus(raw)
        return loc, positive + self.min_scale

    def _terms(self, x: torch.Tensor, num_samples: int):
        """``log p(x | z)``, ``log p(z) - log q(z | x)`` (each ``(K, B)``) and the encoder's
        ``(loc, scale)``, with ``z = loc + scale * eps`` for ``eps ~ N(0, I)``."""
        loc, scale = self._encode(x)
        eps = torch.randn((num_samples, *loc.shape), device=x.device, dtype=loc.dtype)
        z = loc + scale * eps  # (K, B, L)
        log_q = (-0.5 * eps**2 - scale.log() - 0.5 * LOG_2PI).sum(-1)
        log_pz = (-0.5 * z**2 - 0.5 * LOG_2PI).sum(-1)
        logits = self.decoder(z)  # (K, B, *event)
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits),
                                                     reduction="none")
        log_px = log_px.sum(tuple(range(-self.event_dims, 0)))
        return log_px, log_pz - log_q, loc, scale

    def log_weights(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """``(num_samples, B)`` values of ``log p(x, z) - log q(z | x)`` with z ~ q(z | x)."""
        log_px, log_ratio, _, _ = self._terms(x, num_samples)
        return log_px + log_ratio

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Negative single-sample ELBO summed over the batch (Pyro's convention); with
        ``analytic_kl`` the KL term in closed form, KL(N(m, s^2) || N(0, 1)) =
        (m^2 + s^2 - 1)/2 - log s per dimension."""
        log_px, log_ratio, loc, scale = self._terms(x, 1)
        if not self.analytic_kl:
            return -(log_px + log_ratio).sum()
        kl = (0.5 * (loc**2 + scale**2 - 1) - scale.log()).sum()
        return -log_px.sum() + kl

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, num_samples: int = 1000,
                       chunk: int = 100) -> torch.Tensor:
        """IWAE estimate L_K of log p(x) per data point (Burda et al. 2016, eq. 8)."""
        lse = torch.full((x.shape[0],), -math.inf, device=x.device)
        done = 0
        while done < num_samples:
            k = min(chunk, num_samples - done)
            lse = torch.logaddexp(lse, torch.logsumexp(self.log_weights(x, k), 0))
            done += k
        return lse - math.log(num_samples)


def train_epoch(model: TorchVAE, optimizer, x: torch.Tensor, batch_size: int,
                generator: torch.Generator) -> float:
    """One pass over intensities ``x`` with dynamic binarisation; mean loss per data point."""
    order = torch.randperm(len(x), generator=generator, device=x.device)
    total, n = 0.0, len(x) // batch_size
    for i in range(n):
        xb = torch.bernoulli(x[order[i * batch_size:(i + 1) * batch_size]], generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss(xb)
        loss.backward()
        optimizer.step()
        total += loss.item() / batch_size
    return total / n
