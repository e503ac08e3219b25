import os
import sys
from pathlib import Path

import pyro
import pytest
import torch
from hypothesis import settings

# CI explores the same examples every run (a failure is reproducible); set
# HYPOTHESIS_PROFILE=explore locally to search new ones.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parents[1]
# The tests mirror the package (tests/train/, tests/infer/, ...); the helpers they share
# (_models.py) live here.
sys.path.insert(0, str(Path(__file__).resolve().parent))
MNIST = Path(os.environ.get("PYROVAE_MNIST", ROOT.parent / "shared" / "data" / "mnist.npz"))


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    """Each test starts with an empty param store and a fixed seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks: intra-op threads only add OpenMP hand-offs that cost more than the
    arithmetic (up to 30x on a busy two-core machine). Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``; their module fixtures run under it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits():
    """The embedded digits, binarised afresh each batch (modules may override it)."""
    import pyrovae

    return pyrovae.data.load("digits", binarize="dynamic", seed=0)


@pytest.fixture
def mnist_path():
    if not MNIST.is_file():
        pytest.skip(f"real MNIST not found at {MNIST} (set PYROVAE_MNIST to its npz)")
    return MNIST


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is available here")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
