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
    tested = {"vae_mnist", "disentangle_dsprites", "cvae_mnist", "oivae_groups"}
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
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks: one thread avoids oversubscribing shared cores
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("objective", ["beta", "capacity", "tcvae", "infovae"])
def test_disentangle_dsprites_every_objective(tmp_path, one_thread, objective):
    r = _load("disentangle_dsprites").main([
        "--objective", objective, "--n", "1024", "--eval-n", "256", "--steps", "150",
        "--batch-size", "32", "--hidden", "64", "--lr", "3e-3", "--out", str(tmp_path)])
    # better than the best model of independent pixels (each Bernoulli at its frequency)
    assert r["test_elbo"]["mean"] > -r["independent_pixel_nll"]
    assert 0 <= r["mig"] <= 1 and len(r["kl_per_dimension"]) == 10
    for name in ("traversals.png", "kl_per_dimension.png", "mig_matrix.png", "metrics.json"):
        assert (tmp_path / name).is_file()


def _beats_chance(acc, n, k=10):
    """Above the 1/k of guessing by more than four binomial standard errors of n draws."""
    return acc > 1 / k + 4 * math.sqrt((1 / k) * (1 - 1 / k) / n)


def test_cvae_mnist_on_embedded_digits(tmp_path, one_thread):
    r = _load("cvae_mnist").main([
        "--data", "digits", "--epochs", "10", "--hidden", "64", "--latent-dim", "4",
        "--per-class", "20", "--batch-size", "64", "--lr", "3e-3", "--out", str(tmp_path)])
    assert _beats_chance(r["generated_accuracy"], 200)
    assert r["test_elbo"]["mean"] > -64 * math.log(2)
    assert (tmp_path / "samples_by_class.png").is_file()


def test_cvae_mnist_on_real_mnist_subset(tmp_path, mnist_path, one_thread):
    r = _load("cvae_mnist").main([
        "--data", f"mnist:{mnist_path}", "--epochs", "3", "--train-size", "3000",
        "--hidden", "128", "--latent-dim", "2", "--lr", "3e-3", "--per-class", "20",
        "--out", str(tmp_path)])
    assert _beats_chance(r["generated_accuracy"], 200)
    assert -784 * math.log(2) < r["test_elbo"]["mean"]


def test_oivae_groups_small(tmp_path, one_thread):
    r = _load("oivae_groups").main(["--n", "1000", "--epochs", "15", "--out", str(tmp_path)])
    # the groups share factors, so a joint model beats independent Gaussian coordinates
    assert r["test_elbo"]["mean"] > r["independent_gaussian_log_lik"]
    assert (tmp_path / "latent_to_group.png").is_file()
