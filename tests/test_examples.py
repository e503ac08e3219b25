"""Every example runs here at a small size, with a value check beside it."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_example_has_a_test():
    tested = {"vae_mnist", "psis_ood", "discrete_vae", "natural_gradient", "mixture_comparison",
              "vqvae_mnist", "vqvae2", "lloyd_max",
              "disentangle_dsprites", "cvae_mnist", "oivae_groups"}
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
    # every scored image is in scores.csv; sklearn's AUROC of its columns is what was printed
    from sklearn.metrics import roc_auc_score

    table = np.genfromtxt(tmp_path / "scores.csv", delimiter=",", names=True)
    held = table["held_out"]
    assert held.sum() == 40 and len(held) == 80
    assert set(table["label"][held == 1]) <= {5, 6, 7, 8, 9}
    assert set(table["label"][held == 0]) <= {0, 1, 2, 3, 4}
    k = table["khat"]
    k = np.where(np.isneginf(k), np.min(k[np.isfinite(k)]) - 1, k)
    for key, score in (("auroc_khat", k), ("auroc_nll", -table["log_px_psis"]),
                       ("auroc_recon", table["recon"]), ("auroc_gap", table["gap"])):
        assert float(printed[key]) == pytest.approx(roc_auc_score(held, score), abs=1e-4), key
    np.testing.assert_allclose(table["gap"], table["log_px_psis"] - table["elbo"], atol=1e-6)


def test_psis_ood_defaults_depend_on_the_data():
    parse = _load("psis_ood").parse_args
    digits, mnist = parse(["--data", "digits"]), parse(["--data", "mnist:x.npz"])
    assert (digits.epochs, digits.latent_dim) == (300, 2)
    assert (mnist.epochs, mnist.latent_dim) == (10, 50)
    assert parse(["--data", "digits", "--latent-dim", "50"]).latent_dim == 50
    with pytest.raises(SystemExit):
        parse(["--data", "digits", "--epochs", "0"])


def test_auroc_standard_error_at_chance_is_mann_whitney_null_variance():
    se = _load("psis_ood").auroc_se
    for n_pos, n_neg in ((40, 40), (25, 90)):  # var of U/(n1 n2) under H0: (n1+n2+1)/(12 n1 n2)
        assert se(0.5, n_pos, n_neg) == pytest.approx(
            math.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg)))


def test_discrete_vae_on_embedded_digits(tmp_path, one_thread):
    r = _load("discrete_vae").main(["--data", "digits", "--epochs", "2", "--latent-dims", "16",
                                    "8", "--test-size", "100", "--num-samples", "20",
                                    "--out", str(tmp_path)])
    ll, elbo = r["test_log_likelihood"]["mean"], r["test_elbo"]["mean"]
    assert ll >= elbo and ll > -64 * math.log(2)
    assert (tmp_path / "samples.png").is_file()
    with pytest.raises(SystemExit):  # a vector of bits cannot be enumerated
        _load("discrete_vae").main(["--data", "digits", "--estimator", "enum"])


def test_natural_gradient_example_counts_steps(one_thread, capsys, caplog):
    import logging

    mod = _load("natural_gradient")
    before = logging.getLogger("pyrovae").level
    with caplog.at_level(logging.DEBUG):  # any record the trainer emits would be kept
        r = mod.main(["--num-data", "100", "--obs-scales", "0.5", "2", "4", "--max-steps", "150",
                      "--grid-scale", "0.5", "--batch-size", "10", "--particles", "4"])
    best = r["best"]
    assert best["natural_gradient"] == 1  # exact in one step (lr 1) with exact gradients
    assert best["gradient_ascent"] > 1 and best["adam"] > 1
    assert r["kl_svi_one_epoch"] < 1e-8 and r["kl_full_batch_one_step"] < 1e-8
    captured = capsys.readouterr()
    out = captured.out
    assert "steps_natural_gradient: 1" in out
    # gradient ascent at lr 1e-2 > 2 / (1 + 100 / 0.5^2) diverges: fit skips 10 non-finite steps
    # in a row and stops; the example says so once, and the per-step warnings stay out
    assert {"method": "gradient_ascent", "lr": 1e-2, "skipped": 10} in r["diverged"]
    assert ("gradient_ascent lr=0.01: diverged (10 non-finite steps skipped, as expected at "
            "this step size)") in out.splitlines()
    assert out.index("expected to diverge") < out.index("gradient_ascent   lr")
    assert "non-finite gradient" not in out + captured.err
    assert not [rec for rec in caplog.records if "non-finite" in rec.getMessage()]
    assert logging.getLogger("pyrovae").level == before  # restored after the sweep


def test_natural_gradient_quiet_trainer_restores_the_level():
    import logging

    quiet = _load("natural_gradient").quiet_trainer
    logger = logging.getLogger("pyrovae")
    before = logger.level
    with pytest.raises(RuntimeError), quiet():
        assert logger.level == logging.ERROR
        raise RuntimeError
    assert logger.level == before


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


def test_oivae_groups_small(tmp_path, one_thread, capsys):
    r = _load("oivae_groups").main(["--n", "1000", "--epochs", "15", "--out", str(tmp_path)])
    # the groups share factors, so a joint model beats independent Gaussian coordinates
    assert r["test_elbo"]["mean"] > r["independent_gaussian_log_lik"]
    for name in ("latent_to_group.png", "true_pattern.png", "pattern_agreement.png"):
        assert (tmp_path / name).is_file()
    # the printed agreement is the share of cells where the matched latents' norms, over the
    # threshold, say what the true pattern says
    import pyrovae

    pattern = pyrovae.data.grouped_factors(10, seed=0)["pattern"]
    norms = np.asarray(r["norms"])[:, r["latent_of_factor"]]
    assert r["agreement"] == pytest.approx(((norms > 0.3) == pattern).mean())
    assert len(set(r["latent_of_factor"])) == pattern.shape[1]
    out = capsys.readouterr().out
    assert f"agreement: {r['agreement']:.4f}" in out


def test_oivae_match_latents_undoes_a_permutation():
    match = _load("oivae_groups").match_latents
    pattern = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]], bool)
    norms = np.zeros((4, 5))
    norms[:, [4, 0, 2]] = pattern * 1.5  # factor k drives latent (4, 0, 2)[k]
    norms[0, 3] = 0.1  # an unmatched latent, weakly on
    m = match(norms, pattern, 0.3)
    assert m["latent_of_factor"] == [4, 0, 2] and m["agreement"] == 1.0
    assert m["unmatched_max"] == pytest.approx(0.1)
    norms[3, 2] = 0.2  # factor 2's only group now falls under the threshold: 1 cell of 12
    assert match(norms, pattern, 0.3)["agreement"] == pytest.approx(11 / 12)
    with pytest.raises(ValueError, match="norms: expected"):
        match(norms[:, :2], pattern, 0.3)
