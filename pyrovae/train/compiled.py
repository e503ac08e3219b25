"""``fit(..., compile=True)``: the ELBO of a model/guide pair with a static structure, traced
once and run as one function.

The model and guide stay ordinary Pyro programs. Once, before training, they are run under
:func:`torch.fx.experimental.proxy_tensor.make_fx` on fake tensors: every tensor operation the
Pyro program performs for :func:`pyrovae.infer.lean.lean_elbo` — the networks, the
distributions' ``rsample`` and ``log_prob``, the sums — is recorded as one ATen graph whose
inputs are the model's parameters, buffers and the batch, while Pyro's handlers, messages and
Python control flow run only during the trace. Each step then runs that graph: compiled by
``torch.compile`` (``compile=True`` or ``"inductor"``: fused kernels), or replayed op by op
(``compile="trace"``: no compilation time). Random draws are graph operations that take the
global generator's numbers in the same order as eager Pyro (``fallback_random``), so a
compiled run draws the very noise an eager one does: same value and gradient as
``Trace_ELBO`` (``TraceMeanField_ELBO``) to floating-point tolerance, same checkpoints.

What a trace cannot see is refused up front, with a one-line reason, and training runs eager:
data-dependent control flow (a branch on a tensor's value fails on fake tensors), sites that
change from batch to batch (two probe batches are compared), callbacks that transform the
programs (a KL schedule's weight would be frozen at its traced value), ``pyro.param`` or
``PyroParam`` tensors outside ``nn.Parameter``\\ s, and batches of another shape than the traced
one (each such step runs eager). Python-side state a program reads (``random.random()``, a
counter) would be frozen too: such programs should not be compiled.
"""

from __future__ import annotations

import logging

import pyro
import torch
from pyro import poutine
from torch.nn.utils.stateless import _reparametrize_module

from ..infer.lean import lean_elbo
from ..infer.traces import guide_model_traces

log = logging.getLogger("pyrovae")

MODES = ("inductor", "trace")


def _structure(model_fn, guide_fn, kwargs) -> list:
    """Names, distribution types and value shapes of every sample site, guide then model."""
    devices = sorted({v.device for v in kwargs.values() if v.device.type == "cuda"}, key=str)
    with torch.random.fork_rng(devices=devices), torch.no_grad(), \
            pyro.validation_enabled(False):
        model_tr, guide_tr = guide_model_traces(model_fn, guide_fn, kwargs)
    return [(n, type(s["fn"]).__name__, tuple(s["value"].shape))
            for tr in (guide_tr, model_tr) for n, s in tr.nodes.items() if s["type"] == "sample"]


def why_not(model, model_fn, guide_fn, extra_params: dict, originals: bool,
            batches: list[dict]) -> str | None:
    """``None`` when the pair can be traced once for all steps, else the reason."""
    if not isinstance(model, torch.nn.Module):
        return "the model is not an nn.Module (its parameters cannot be graph inputs)"
    if not originals:
        return "a callback transforms the programs (its wrap), so the traced step could differ"
    if extra_params:
        return f"pyro.param tensors outside the model's modules ({sorted(extra_params)[:3]})"
    for m in model.modules():
        if getattr(m, "_pyro_params", None):
            return f"{type(m).__name__} has PyroParam attributes (read through the param store)"
    first = _structure(model_fn, guide_fn, batches[0])
    for other in batches[1:]:
        if _structure(model_fn, guide_fn, other) != first:
            return "the model's or guide's sample sites change from batch to batch"
    return None


class CompiledStep:
    """The lean ELBO's forward pass as one traced graph (module docstring); ``__call__`` runs
    it and its backward. Built by :func:`build`."""

    def __init__(self, fn, params, buffers, names, shapes, analytic, model_fn, guide_fn):
        self.fn, self.params, self.buffers = fn, params, buffers
        self.names, self.shapes, self.analytic = names, shapes, analytic
        self.model_fn, self.guide_fn = model_fn, guide_fn
        self.eager_steps = 0  # steps whose batch had another shape: run eager

    def __call__(self, kwargs: dict, detail: bool = False):
        inputs = [kwargs[k] for k in self.names]
        if detail or [tuple(t.shape) for t in inputs] != self.shapes:
            if not detail:
                self.eager_steps += 1
            loss, terms = lean_elbo(self.model_fn, self.guide_fn, (), kwargs,
                                    analytic=self.analytic, per_site=detail)
        else:
            loss, recon, kl = self.fn(self.params, self.buffers, inputs)
            terms = {"recon": recon.detach(), "kl": kl.detach()}
        loss.backward()
        return loss.detach(), terms


def build(model, model_fn, guide_fn, kwargs: dict, *, analytic: bool, mode, bf16: bool,
          options: dict | None = None):
    """``(CompiledStep, None)``, or ``(None, reason)`` when tracing fails. ``options``: more
    inductor options (``{"triton.cudagraphs": True}``, say)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    mode = "inductor" if mode is True else mode
    names = list(kwargs)
    pnames = [n for n, _ in model.named_parameters()]
    bnames = [n for n, _ in model.named_buffers()]
    params = [p for _, p in model.named_parameters()]
    buffers = [b for _, b in model.named_buffers()]

    def elbo(ps, bs, inputs):
        state = {**dict(zip(pnames, ps)), **dict(zip(bnames, bs))}
        with _reparametrize_module(model, state), poutine.block():
            loss, terms = lean_elbo(model_fn, guide_fn, (), dict(zip(names, inputs)),
                                    analytic=analytic)
        return loss, terms["recon"], terms["kl"]

    inputs = [kwargs[k] for k in names]
    devices = [inputs[0].device] if inputs[0].device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), pyro.validation_enabled(False), \
                pyro.get_param_store().scope(), \
                torch.autocast(inputs[0].device.type, dtype=torch.bfloat16, enabled=bf16):
            gm = make_fx(elbo, tracing_mode="fake", _allow_non_fake_inputs=True)(
                params, buffers, inputs)
    except Exception as e:  # noqa: BLE001 - any failure to trace means: run eager
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return None, f"tracing failed ({type(e).__name__}: {first[:160]})"
    gm.graph.eliminate_dead_code()
    gm.recompile()
    fn = gm
    if mode == "inductor":
        # fallback_random: draws are aten ops on the global generator, as in eager Pyro
        fn = torch.compile(gm, dynamic=False,
                           options={"fallback_random": True, **(options or {})})
    shapes = [tuple(t.shape) for t in inputs]
    return CompiledStep(fn, params, buffers, names, shapes, analytic, model_fn, guide_fn), None
