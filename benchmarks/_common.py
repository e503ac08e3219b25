"""Shared set-up for the benchmark scripts: data and the two VAEs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_MNIST = Path(os.environ.get("PYROVAE_MNIST", HERE.parent.parent / "shared" / "data" /
                                    "mnist.npz"))
sys.path.insert(0, str(HERE))

from torch_vae import TorchVAE  # noqa: E402

import pyrovae  # noqa: E402

NETWORKS = {
    # Burda et al. (2016): 784-200-200-50, tanh
    "burda": dict(latent_dim=50, hidden=(200, 200), activation="tanh", network="mlp"),
    # a small conv VAE on 28x28 (two stride-2 convs, 256-unit FC layer)
    "conv": dict(latent_dim=32, hidden=(256,), activation="relu", network="conv"),
}


def load_data(spec: str | None, seed: int = 0) -> pyrovae.data.Splits:
    """MNIST (all 60,000 training images, dynamic binarisation) or another pyrovae data spec."""
    if spec is None:
        if not DEFAULT_MNIST.is_file():
            raise SystemExit(f"MNIST not found at {DEFAULT_MNIST}; pass --data mnist:PATH")
        spec = f"mnist:{DEFAULT_MNIST}"
    return pyrovae.data.load(spec, binarize="dynamic", seed=seed, valid_size=0)


def make_pair(network: str, input_shape, seed: int = 0):
    """A pyrovae VAE and a plain-PyTorch VAE with identical architecture and initial weights."""
    torch.manual_seed(seed)
    vae = pyrovae.VAE(pyrovae.VAEConfig(input_shape=tuple(input_shape), **NETWORKS[network]))
    return vae, TorchVAE.like(vae)


class StepPair:
    """One Adam step (lr 1e-3) on the batch ``x`` for each side of the comparison, each with its
    own copy of the network and its own optimiser:

    - ``pyro``: pyrovae's eager step (what ``fit`` runs after its validated first step);
    - ``trace_elbo``: Pyro's ``Trace_ELBO.loss_and_grads`` on the same model;
    - ``pyro_traced``: ``fit(compile="trace")``'s step (the traced graph replayed);
    - ``pyro_compiled``: ``fit(compile=True)``'s step (``pyrovae.train.compiled``);
    - ``torch``, ``torch_compiled``: the plain-PyTorch twin, its loss eager or compiled.

    ``vae`` (the first copy) is what ``fit`` side-by-side measurements train.
    """

    def __init__(self, vae, ref, x: torch.Tensor, *, compiled: bool = True,
                 compile_options: dict | None = None, bf16: bool = False):
        import contextlib
        import copy
        import time

        import pyro

        from pyrovae.train import compiled as comp
        from pyrovae.train.steps import LeanStep, pinned

        self.x = x
        self.elbo = pyro.infer.Trace_ELBO()
        # every side's forward and backward under the same autocast (bf16: networks in bf16)
        self._autocast = lambda: torch.autocast(x.device.type, dtype=torch.bfloat16,
                                                enabled=bf16)
        self.vae, self.ref = vae, ref
        self._lean_vae = copy.deepcopy(vae)
        self._elbo_vae = copy.deepcopy(vae)
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(pinned(self._lean_vae))  # as fit does on the fast path
        self._lean = LeanStep(self._lean_vae.model, self._lean_vae.guide, analytic=False,
                              terms=True)
        self.opt_p = torch.optim.Adam(self._lean_vae.parameters(), lr=1e-3)
        self.opt_e = torch.optim.Adam(self._elbo_vae.parameters(), lr=1e-3)
        self.opt_t = torch.optim.Adam(ref.parameters(), lr=1e-3)
        self._trace_vae = copy.deepcopy(vae)
        self._traced, why = comp.build(self._trace_vae, self._trace_vae.model,
                                       self._trace_vae.guide, {"x": x}, analytic=False,
                                       mode="trace", bf16=bf16)
        if why is not None:
            raise RuntimeError(f"trace: {why}")
        self.opt_r = torch.optim.Adam(self._trace_vae.parameters(), lr=1e-3)
        self.compile_seconds = (float("nan"), float("nan"))
        if compiled:
            self._comp_vae, self._comp_ref = copy.deepcopy(vae), copy.deepcopy(ref)
            t0 = time.perf_counter()
            self._comp, why = comp.build(self._comp_vae, self._comp_vae.model,
                                         self._comp_vae.guide, {"x": x}, analytic=False,
                                         mode="inductor", bf16=bf16, options=compile_options)
            if why is not None:
                raise RuntimeError(f"compile: {why}")
            self.opt_c = torch.optim.Adam(self._comp_vae.parameters(), lr=1e-3)
            self.pyro_compiled()  # compiles
            t1 = time.perf_counter()
            self._ref_loss = torch.compile(self._comp_ref.loss, dynamic=False,
                                           options=compile_options)
            self.opt_tc = torch.optim.Adam(self._comp_ref.parameters(), lr=1e-3)
            self.torch_compiled()
            self.compile_seconds = (t1 - t0, time.perf_counter() - t1)

    def pyro(self) -> None:
        self.opt_p.zero_grad(set_to_none=True)
        with self._autocast():
            self._lean({"x": self.x})
        self.opt_p.step()

    def trace_elbo(self) -> None:
        self.opt_e.zero_grad(set_to_none=True)
        with self._autocast():
            self.elbo.loss_and_grads(self._elbo_vae.model, self._elbo_vae.guide, self.x)
        self.opt_e.step()

    def pyro_traced(self) -> None:
        self.opt_r.zero_grad(set_to_none=True)
        self._traced({"x": self.x})
        self.opt_r.step()

    def pyro_compiled(self) -> None:
        self.opt_c.zero_grad(set_to_none=True)
        self._comp({"x": self.x})
        self.opt_c.step()

    def torch(self) -> None:
        self.opt_t.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.ref.loss(self.x)
        loss.backward()
        self.opt_t.step()

    def torch_compiled(self) -> None:
        self.opt_tc.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self._ref_loss(self.x)
        loss.backward()
        self.opt_tc.step()


def environment() -> str:
    import platform

    import pyro

    return (f"torch {torch.__version__}, pyro {pyro.__version__}, python "
            f"{platform.python_version()}, {torch.get_num_threads()} threads, "
            f"{platform.processor() or platform.machine()}")


def warm_up() -> None:
    """Pays torch's one-time lazy imports (the first optimiser step loads several modules)
    before anything is timed, so neither side is charged for them."""
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([w])
    w.sum().backward()
    opt.step()
