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
    """One Adam step (lr 1e-3) on the batch ``x``: ``pyro`` for pyrovae's VAE under
    ``Trace_ELBO``, ``torch`` for its plain-PyTorch twin; each side has its own optimiser."""

    def __init__(self, vae, ref, x: torch.Tensor):
        import pyro

        self.vae, self.ref, self.x = vae, ref, x
        self.elbo = pyro.infer.Trace_ELBO()
        self.opt_p = torch.optim.Adam(vae.parameters(), lr=1e-3)
        self.opt_t = torch.optim.Adam(ref.parameters(), lr=1e-3)

    def pyro(self) -> None:
        self.opt_p.zero_grad(set_to_none=True)
        self.elbo.loss_and_grads(self.vae.model, self.vae.guide, self.x)
        self.opt_p.step()

    def torch(self) -> None:
        self.opt_t.zero_grad(set_to_none=True)
        self.ref.loss(self.x).backward()
        self.opt_t.step()


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
