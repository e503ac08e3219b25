"""Every example runs here at a small size, with a value check beside it."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_example_has_a_test():
    tested = {"vae_mnist", "discrete_vae", "natural_gradient", "mixture_comparison"}
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
    """The classic-VI examples run tiny tensors: intra-op threads only add contention."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_discrete_vae_on_embedded_digits(tmp_path, one_thread):
    r = _load("discrete_vae").main(["--data", "digits", "--epochs", "2", "--latent-dims", "16",
                                    "8", "--test-size", "100", "--num-samples", "20",
                                    "--out", str(tmp_path)])
    ll, elbo = r["test_log_likelihood"]["mean"], r["test_elbo"]["mean"]
    assert ll >= elbo and ll > -64 * math.log(2)
    assert (tmp_path / "samples.png").is_file()
    with pytest.raises(SystemExit):  # a vector of bits cannot be enumerated
        _load("discrete_vae").main(["--data", "digits", "--estimator", "enum"])


def test_natural_gradient_example_counts_steps(one_thread, capsys):
    r = _load("natural_gradient").main(["--num-data", "40", "--obs-scales", "0.5", "2", "4",
                                        "--max-steps", "150", "--grid-scale", "0.5",
                                        "--batch-size", "10", "--particles", "4"])
    best = r["best"]
    assert best["natural_gradient"] == 1  # exact in one step (lr 1) with exact gradients
    assert best["gradient_ascent"] > 1 and best["adam"] > 1
    assert r["kl_svi_one_epoch"] < 1e-8 and r["kl_full_batch_one_step"] < 1e-8
    out = capsys.readouterr().out
    assert "steps_natural_gradient: 1" in out


def test_mixture_comparison_methods_agree_on_separated_clusters(one_thread):
    r = _load("mixture_comparison").main(["--num-data", "400", "--epochs", "20",
                                          "--batch-size", "50", "--components", "3"])
    # EM maximises this likelihood; on separated clusters every method finds the same optimum
    for name in ("em", "kmeans", "cavi", "svi", "vae"):
        assert r[name]["ari"] >= 0.95, name
        assert r[name]["test_loglik"] == pytest.approx(r["em"]["test_loglik"], abs=0.05), name
    assert r["cavi"]["min_elbo_change"] >= -1e-9 and r["cavi"]["ari_vs_sklearn"] >= 0.95
    # the VAE's importance-weighted L_K estimates the log-likelihood of its own mixture
    assert r["vae"]["importance_loglik"] == pytest.approx(r["vae"]["test_loglik"], abs=1e-3)
