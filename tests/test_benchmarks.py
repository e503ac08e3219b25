"""The benchmarks compare like with like: the plain-PyTorch reference computes the same loss
and gradients as Pyro's Trace_ELBO on pyrovae's VAE. The scripts themselves run at tiny size."""

import re
import sys
from pathlib import Path

import pyro
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from _common import make_pair  # noqa: E402


@pytest.mark.parametrize("network", ["burda", "conv"])
def test_reference_loss_and_gradients_equal_pyro_trace_elbo(network):
    vae, ref = make_pair(network, (1, 28, 28))
    x = torch.bernoulli(torch.full((8, 1, 28, 28), 0.3))
    torch.manual_seed(1)
    loss_p = pyro.infer.Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    loss_p.backward()
    torch.manual_seed(1)  # the same noise eps for the reparametrised z
    loss_t = ref.loss(x)
    loss_t.backward()
    torch.testing.assert_close(loss_p, loss_t)
    for part in ("encoder", "decoder"):
        for (name, a), b in zip(getattr(vae, part).named_parameters(),
                                getattr(ref, part).parameters()):
            torch.testing.assert_close(a.grad, b.grad, msg=f"{part}.{name}")


def _values(text):
    return {k: float(v) for k, v in re.findall(r"^(\w+): ([-\d.e+]+)$", text, re.M)}


def test_step_overhead_script_reports_consistent_figures(capsys):
    import step_overhead

    step_overhead.main(["--data", "digits", "--steps", "4", "--repeats", "2",
                        "--batch-size", "16"])
    v = _values(capsys.readouterr().out)
    assert v["pyrovae_step_ms"] > 0 and v["torch_step_ms"] > 0
    assert v["ratio"] == pytest.approx(v["pyrovae_step_ms"] / v["torch_step_ms"], rel=2e-3)
    assert v["fit_ratio"] > 0


def test_mnist_nll_script_reports_both_models(capsys):
    import mnist_nll

    r = mnist_nll.main(["--data", "digits", "--epochs", "2", "--num-samples", "10",
                        "--batch-size", "32"])
    v = _values(capsys.readouterr().out)
    assert v["nll_pyrovae"] == pytest.approx(r["nll_pyrovae"], abs=1e-3)
    assert v["nll_diff"] == pytest.approx(v["nll_pyrovae"] - v["nll_torch"], abs=2e-3)
    for k in ("nll_pyrovae", "nll_torch"):  # both learn: better than fair coins on 64 pixels
        assert 0 < v[k] < 64 * 0.6932


def test_disentanglement_script_reports_every_model(capsys):
    import disentanglement

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script's workers run; the data preparation too
    try:
        r = disentanglement.main(["--n", "256", "--eval-n", "128", "--steps", "4",
                                  "--batch-size", "32", "--hidden", "32", "--seeds", "0",
                                  "--jobs", "1", "--factor-vae-votes", "10",
                                  "--factor-vae-variance", "200"])
    finally:
        torch.set_num_threads(n)
    v = _values(capsys.readouterr().out)
    for m in ("vae", "beta", "tcvae", "capacity"):
        assert v[f"mig_{m}"] == pytest.approx(r["medians"][m]["mig"], abs=1e-4)
        assert 0 <= v[f"mig_{m}"] <= 1
