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
    tested = {"vae_mnist", "psis_ood"}
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


def test_psis_ood_on_embedded_digits(tmp_path, capsys):
    mod = _load("psis_ood")
    r = mod.main(["--data", "digits", "--epochs", "3", "--hidden", "32", "--latent-dim", "3",
                  "--test-size", "40", "--num-samples", "100", "--out", str(tmp_path)])
    k_in, k_out = r["khat_in"], r["khat_out"]
    assert len(k_in) == r["n_in"] == 40 and len(k_out) == r["n_out"] == 40
    # AUROC is the Mann-Whitney probability that a held-out point outranks a trained one
    pairs = (k_out[:, None] > k_in[None, :]) + 0.5 * (k_out[:, None] == k_in[None, :])
    assert r["auroc_khat"] == pytest.approx(pairs.mean())
    assert r["frac_khat_gt_0.7_out"] == pytest.approx((k_out > 0.7).mean())
    printed = dict(line.split(": ") for line in capsys.readouterr().out.splitlines()
                   if ": " in line and not line.startswith("figures"))
    assert float(printed["auroc_khat"]) == pytest.approx(r["auroc_khat"], abs=1e-4)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["auroc_khat"] == pytest.approx(r["auroc_khat"])
    for name in ("khat_by_group.png", "worst_khat.png", "khat_recon.png"):
        assert (tmp_path / name).is_file()


def test_auroc_standard_error_at_chance_is_mann_whitney_null_variance():
    se = _load("psis_ood").auroc_se
    for n_pos, n_neg in ((40, 40), (25, 90)):  # var of U/(n1 n2) under H0: (n1+n2+1)/(12 n1 n2)
        assert se(0.5, n_pos, n_neg) == pytest.approx(
            math.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg)))
