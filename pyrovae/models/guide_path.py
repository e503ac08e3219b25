r"""Handing a top-down path from a guide to the model replayed on its draws.

In the Ladder VAE and the NVAE the guide runs the generative model's own top-down networks:
the prior parameters of layer :math:`l` are a function of :math:`z_{>l}` (Ladder) or
:math:`z_{<l}` (NVAE) only. Every ELBO, and ``log_likelihood``, runs the guide and then the
model under ``poutine.replay`` on the guide's draws, so the model would compute the very same
states again. The guide records them here; the model reuses a record for as long as each
of its draws *is* the guide's tensor (replay hands over the same object) and computes its
own path from the first draw that is not (prior sampling, another guide's trace). The
autograd graph is shared instead of rebuilt: same values and gradients, less work.
"""

from __future__ import annotations

_KEY = "_guide_path"


class GuidePath:
    """One pass of the path. ``GuidePath(module, guide=True)`` records ``add(z=..., **states)``
    per sample site in order and leaves the record on ``module`` at :meth:`close`;
    ``GuidePath(module, guide=False)`` takes that record (once) and answers :meth:`entry`
    and :meth:`follow` per site, in the same order."""

    def __init__(self, module, guide: bool):
        self.module, self.guide = module, guide
        self.entries: list[dict] | None = [] if guide else module.__dict__.pop(_KEY, None)

    def add(self, **entry) -> None:
        self.entries.append(entry)

    def close(self) -> None:
        if self.guide:
            self.module.__dict__[_KEY] = self.entries

    def entry(self, i: int) -> dict | None:
        """Model side: the guide's states at site ``i`` while every earlier draw was the
        guide's, else ``None``."""
        e = self.entries
        return e[i] if e is not None and i < len(e) else None

    def follow(self, i: int, z) -> bool:
        """Model side: whether draw ``i`` is the guide's; stops following at the first that
        is not."""
        e = self.entry(i)
        if e is not None and z is e["z"]:
            return True
        self.entries = None
        return False


class SharesGuidePath:
    """Mixin for modules using :class:`GuidePath`: the record holds one step's autograd graph,
    so it is never copied or pickled (``deepcopy`` refuses non-leaf tensors)."""

    def __getstate__(self):
        state = super().__getstate__()
        state.pop(_KEY, None)
        return state
