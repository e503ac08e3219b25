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
    tested = {"vae_mnist"}
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
