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
from _models import assert_twin_matches  # noqa: E402


@pytest.mark.parametrize("network", ["burda", "conv"])
def test_reference_loss_and_gradients_equal_pyro_trace_elbo(network):
    vae, ref = make_pair(network, (1, 28, 28))
    x = torch.bernoulli(torch.full((8, 1, 28, 28), 0.3))
    assert_twin_matches(vae, ref, x, pyro.infer.Trace_ELBO())


def _values(text):
    return {k: float(v) for k, v in re.findall(r"^(\w+): ([-\d.e+]+)$", text, re.M)}


def test_step_overhead_script_reports_consistent_figures(capsys):
    import step_overhead

    r = step_overhead.main(["--data", "digits", "--steps", "4", "--repeats", "2",
                            "--batch-size", "16"])
    out = capsys.readouterr().out
    v = _values(out)
    run = ["mlp_cpu", "conv_cpu"] + (["mlp_cuda", "conv_cuda"] if torch.cuda.is_available()
                                     else [])
    assert sorted(r) == sorted(run)
    for case in run:
        assert v[f"pyrovae_step_ms_{case}"] > 0 and v[f"torch_step_ms_{case}"] > 0
        # the printed ratio is the measured one, and the ratio of the printed times
        assert v[f"ratio_{case}"] == pytest.approx(r[case]["ratio"], abs=1e-4)
        assert v[f"ratio_{case}"] == pytest.approx(
            v[f"pyrovae_step_ms_{case}"] / v[f"torch_step_ms_{case}"], rel=1e-3)
        assert v[f"fit_ratio_{case}"] == pytest.approx(r[case]["fit_ratio"], abs=1e-4)
        assert re.search(rf"^{case} +16 ", out, re.M)  # its table row
    if not torch.cuda.is_available():
        assert "mlp_cuda: skipped, no CUDA device" in out
    assert out.rstrip().splitlines()[-1].startswith(f"ratio_{run[-1]}: ")  # figures last


def test_mnist_nll_script_reports_both_models(capsys):
    import mnist_nll

    r = mnist_nll.main(["--data", "digits", "--epochs", "2", "--num-samples", "10",
                        "--batch-size", "32"])
    v = _values(capsys.readouterr().out)
    assert v["nll_pyrovae"] == pytest.approx(r["nll_pyrovae"], abs=1e-3)
    assert v["nll_diff"] == pytest.approx(v["nll_pyrovae"] - v["nll_torch"], abs=2e-3)
    for k in ("nll_pyrovae", "nll_torch"):  # both learn: better than fair coins on 64 pixels
        assert 0 < v[k] < 64 * 0.6932


def test_psis_linear_gaussian_script_recovers_the_known_tail_shapes(capsys):
    import psis_linear_gaussian

    r = psis_linear_gaussian.main(["--n", "60", "--num-samples", "400"])
    v = _values(capsys.readouterr().out)
    assert v["khat_median_c0_4"] == pytest.approx(r["khat_median_c0_4"], abs=1e-4)
    assert v["max_abs_z_mean"] < 4.5  # 180 standard-normal z-scores
    assert v["frac_khat_lt_0_5_c1_5"] == 1.0  # bounded weights
    assert v["khat_median_c0_4"] > 0.7  # k = 1 - 0.4^2 = 0.84
    assert abs(v["log_px_error_c1"]) < 1e-3  # exact guide: every weight is p(x)

def test_gradient_variance_script_reports_ratios(capsys):
    import gradient_variance

    threads = torch.get_num_threads()
    try:
        r = gradient_variance.main(["--data", "digits", "--steps", "40", "--lr", "0.01",
                                    "--draws", "10", "--baseline-steps", "5", "--test-size",
                                    "50", "--num-samples", "5", "--latent-dims", "6", "3",
                                    "--estimators", "score", "tracegraph_avg_nn", "--threads",
                                    "1"])
    finally:
        torch.set_num_threads(threads)
    v = _values(capsys.readouterr().out)
    best = r["best"]
    assert v[f"var_ratio_{best}"] == pytest.approx(1.0)
    assert v["rb_baseline_factor"] == pytest.approx(r["variance"]["score"] /
                                                    r["variance"][best], rel=1e-5)
    assert v["rb_baseline_factor"] > 1  # the plain score function is the noisiest
    for k in ("nll_score", "nll_tracegraph_avg_nn"):
        assert 0 < v[k] < 64 * 0.6932



def test_vq_reference_loss_and_gradients_equal_pyro_trace_elbo():
    import copy

    from vq import torch_loss

    from pyrovae import VQVAE, VQVAEConfig

    torch.manual_seed(0)
    m = VQVAE(VQVAEConfig(input_shape=(1, 8, 8), num_codes=16, code_dim=4, downsample=1,
                          hidden=16, res_hidden=8, kmeans_init=0))
    ref = copy.deepcopy(m)
    x = torch.bernoulli(torch.full((8, 1, 8, 8), 0.3))
    loss_p = pyro.infer.Trace_ELBO().differentiable_loss(m.model, m.guide, x)
    loss_p.backward()
    loss_t = torch_loss(ref, x)
    loss_t.backward()
    torch.testing.assert_close(loss_p, loss_t)
    for (name, a), b in zip(m.named_parameters(), ref.parameters()):
        if a.grad is not None or b.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_vq_script_reports_usage_perplexity_mse_and_bpd(capsys, tmp_path):
    import vq

    threads = torch.get_num_threads()
    try:
        r = vq.main(["--threads", "1", "--data", "digits", "--downsample", "1", "--num-codes",
                     "16", "--code-dim", "4", "--hidden", "16", "--prior-channels", "8",
                     "--prior-layers", "2", "--epochs", "1", "--prior-epochs", "1",
                     "--train-size", "256", "--test-size", "60", "--timing-steps", "1",
                     "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    v = _values(capsys.readouterr().out)
    for k in ("usage", "perplexity", "recon_mse", "prior_bpd"):
        assert v[k] == pytest.approx(r[k], rel=1e-4)
    assert 0 < v["usage"] <= 1 and 1 <= v["perplexity"] <= 16
    assert v["dead_codes"] == round((1 - v["usage"]) * 16)
    assert v["step_ratio"] == pytest.approx(v["pyrovae_step_ms"] / v["torch_step_ms"],
                                            rel=1e-3)
    assert (tmp_path / "prior_samples.png").is_file()


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


def test_step_profile_script_splits_the_whole_step(capsys):
    pytest.importorskip("pyinstrument")
    import step_profile

    r = step_profile.main(["--data", "digits", "--cases", "mlp", "--steps", "100",
                           "--batch-size", "16", "--interval", "0.0005"])
    v = _values(capsys.readouterr().out)
    fracs = [v[f"frac_{k}_mlp"] for k in step_profile.KINDS]
    assert min(fracs) >= 0 and sum(fracs) == pytest.approx(1.0, abs=1e-3)  # every sample once
    assert v["pyro_overhead_mlp"] == pytest.approx(
        sum(v[f"frac_{k}_mlp"] for k in step_profile.PYRO_OWN), abs=2e-4)
    assert v["frac_network_mlp"] > 0 and v["frac_backward_mlp"] > 0  # anchors were found
    assert r["mlp"]["pyro_ms"] > 0 and r["mlp"]["torch_ms"] > 0

def test_mnist_likelihood_script_reports_every_model(capsys, tmp_path):
    import mnist_likelihood

    threads = torch.get_num_threads()
    try:
        r = mnist_likelihood.main(["--data", "digits", "--budget-seconds", "120",
                                   "--max-steps", "15", "--batch-size", "32", "--lr", "5e-3",
                                   "--num-samples", "10", "--test-size", "40", "--threads", "1",
                                   "--warmup-steps", "5", "--nvae-warmup-steps", "2",
                                   "--save-nll", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    v = _values(out)
    # paired differences on the same images: their mean is the difference of the means
    assert v["diff_ladder_vae"] == pytest.approx(v["nll_ladder"] - v["nll_vae"], abs=2e-3)
    assert 0 < v["diff_se_nvae_vae_bn"] < 64 * 0.6932
    for m in ("vae", "vae_bn", "iwae", "two_layer", "ladder", "nvae"):
        assert v[f"nll_{m}"] == pytest.approx(r[m]["nll"], abs=1e-3)
        assert 0 < v[f"nll_{m}"] < 64 * 0.6932  # better than fair coins on 64 pixels
        assert v[f"steps_{m}"] == 15 and v[f"train_s_{m}"] > 0
    assert "86.76" in out and "78.01" in out  # the papers' figures beside ours
