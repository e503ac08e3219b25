"""Every example runs here at a small size, with a value check beside it."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_example_has_a_test():
    tested = {"vae_mnist", "vqvae_mnist", "vqvae2", "lloyd_max"}
    assert {p.stem for p in EXAMPLES.glob("*.py")} <= tested


def test_vae_mnist_help_explains_the_protocol(capsys):
    with pytest.raises(SystemExit) as e:
        _load("vae_mnist").main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--full" in out and "Burda" in out


def test_vae_mnist_on_embedded_digits(tmp_path):
    r = _load("vae_mnist").main(["--data", "digits", "--epochs", "4", "--num-samples", "20",
                                 "--out", str(tmp_path)])
    ll, elbo = r["test_log_likelihood"]["mean"], r["test_elbo"]["mean"]
    assert ll >= elbo  # L_K >= the mean log weight of the same draws (Jensen)
    assert ll > -64 * math.log(2)  # better than independent fair coins per pixel
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_log_likelihood"]["mean"] == pytest.approx(ll)
    for name in ("reconstructions.png", "samples.png", "loss.png"):
        assert (tmp_path / name).is_file()


def test_vae_mnist_on_real_mnist_subset(tmp_path, mnist_path):
    r = _load("vae_mnist").main(["--data", f"mnist:{mnist_path}", "--epochs", "2",
                                 "--train-size", "3000", "--test-size", "300",
                                 "--num-samples", "20", "--out", str(tmp_path)])
    ll = r["test_log_likelihood"]["mean"]
    assert -784 * math.log(2) < ll < -100  # learning, far from converged on 3,000 images


@pytest.fixture
def restore_threads():
    """The VQ examples take --threads 1 (tiny networks on a busy machine); put it back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


TINY_VQ = ["--threads", "1", "--set", "num_codes=16", "--set", "code_dim=4", "--set", "hidden=16",
           "--set", "res_hidden=8", "--set", "prior_channels=8", "--set", "prior_layers=2"]


def test_lloyd_max_reproduces_max_and_kmeans_agrees(tmp_path):
    r = _load("lloyd_max").main(["--levels", "2", "4", "--samples", "3000", "--out",
                                 str(tmp_path)])
    for n in (2, 4):
        assert abs(r["levels"][n]["mse"] - r["levels"][n]["max_1960"]) < 1e-4
    assert r["samples"]["kmeans_mse"] == pytest.approx(r["samples"]["mse"], rel=1e-9)
    assert (tmp_path / "lloyd_max.png").is_file()


def test_vqvae_mnist_two_stages_on_embedded_digits(tmp_path, restore_threads):
    r = _load("vqvae_mnist").main(["--data", "digits", "--epochs", "1", "--prior-epochs", "1",
                                   "--batch-size", "64", "--set", "downsample=1", *TINY_VQ,
                                   "--samples", "16", "--out", str(tmp_path)])
    hw = 16  # 4x4 codes
    assert r["kl_uniform_prior"] == pytest.approx(hw * math.log(16))
    # swapping the uniform prior for the learned one changes log p(x, k*) by exactly
    # log p_prior(k*) - log(1/K) per position: -bpd * hw * ln 2 + hw log K
    delta = r["log_likelihood_learned_prior"] - r["log_likelihood_uniform_prior"]
    assert delta == pytest.approx(hw * math.log(16) - r["prior_bpd"] * hw * math.log(2),
                                  abs=1e-3)
    assert 0 < r["usage"] <= 1 and r["dead_codes"] == round((1 - r["usage"]) * 16)
    for name in ("samples.png", "samples_uniform_prior.png", "code_usage.png",
                 "checkpoint.pt", "config.json"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["vq"]["prior_bpd"] == pytest.approx(r["prior_bpd"])


def test_vqvae2_two_priors_on_embedded_digits(tmp_path, restore_threads):
    r = _load("vqvae2").main(["--threads", "1", "--data", "digits", "--epochs", "1",
                              "--prior-epochs", "1", "--batch-size", "64", "--train-size",
                              "256", "--test-size", "60",
                              "--set", "num_codes_top=8", "--set", "num_codes_bottom=16",
                              "--set", "code_dim=4", "--set", "hidden=16", "--set",
                              "res_hidden=8", "--set", "prior_channels=8", "--set",
                              "prior_layers=2", "--set", "prior_attention_heads=2",
                              "--samples", "8", "--out", str(tmp_path)])
    bpd = r["prior_bpd"]  # the total is the position-weighted mean of the levels (2x2, 4x4)
    assert bpd["total"] == pytest.approx((4 * bpd["codes_top"] + 16 * bpd["codes_bottom"]) / 20)
    assert set(r["usage"]) == {"codes_top", "codes_bottom"}
    assert (tmp_path / "samples.png").is_file()
