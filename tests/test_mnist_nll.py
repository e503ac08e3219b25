"""benchmarks/mnist_nll.py at tiny size: its printed figures are what it measured (paired
differences, ratios), every side is scored on the same test bits and trained on the same
images from the same weights; and the options it compares (encoder scale, analytic KL) are the
same computation in pyrovae and in the plain-PyTorch twin."""

import contextlib
import io
import math
import re
import sys
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import mnist_nll  # noqa: E402
from _models import assert_twin_matches  # noqa: E402
from torch_vae import TorchVAE  # noqa: E402

import pyrovae  # noqa: E402

TINY = ["--data", "digits", "--epochs", "2", "--num-samples", "10", "--batch-size", "32",
        "--threads", "1"]


def _values(text):
    return {k: float(v) for k, v in re.findall(r"^(\w+): ([-\d.e+]+|nan)$", text, re.M)}


def _run(argv):
    threads = torch.get_num_threads()
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            r = mnist_nll.main(argv)
    finally:
        torch.set_num_threads(threads)
    return r, _values(out.getvalue()), out.getvalue()


@pytest.fixture(scope="module")
def three_sides():
    return _run(TINY + ["--sides", "torch", "fit", "cli", "torch_valid"])


def test_paired_differences_are_the_means_of_the_per_image_differences(three_sides):
    r, v, _ = three_sides
    n = len(r["x_test"])
    for side in ("fit", "cli"):
        d = (r["nll"][side] - r["nll"]["torch"]).double()
        assert len(d) == n
        assert v[f"nll_diff_{side}"] == pytest.approx(d.mean().item(), abs=1e-4)
        assert v[f"nll_diff_se_{side}"] == pytest.approx((d.std() / math.sqrt(n)).item(),
                                                         abs=1e-4)
    assert v["nll_diff"] == v["nll_diff_fit"] and v["nll_diff_se"] == v["nll_diff_se_fit"]
    assert v["nll_pyrovae"] == pytest.approx(r["nll"]["fit"].mean().item(), abs=1e-4)
    assert v["nll_cli"] == pytest.approx(r["nll"]["cli"].mean().item(), abs=1e-4)
    d = (r["nll"]["cli"] - r["nll"]["torch_valid"]).double()
    assert v["nll_diff_cli_valid"] == pytest.approx(d.mean().item(), abs=1e-4)


def test_every_side_is_scored_on_the_same_test_bits_whatever_the_seed(three_sides):
    r, _, _ = three_sides
    x = r["x_test"]
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert r["test_hash"] == mnist_nll.tensor_hash(x)
    assert set(r["scored_on"]) == {"fit", "cli", "torch", "torch_valid"}
    assert set(r["scored_on"].values()) == {r["test_hash"]}
    # the CLI's run folder holds the same test bits and training images, and it validated
    assert r["cli"] == {"same_train": True, "same_test_bits": True, "validated": True}
    # another training seed: other initial weights, the same test bits
    other, _, _ = _run(TINY + ["--sides", "torch", "--seed", "3"])
    assert other["init_hash"] != r["init_hash"]
    assert other["test_hash"] == r["test_hash"]
    torch.testing.assert_close(other["x_test"], x, rtol=0, atol=0)


def test_epoch_ratios_are_the_ratios_of_the_printed_seconds(three_sides):
    r, v, out = three_sides
    for side in ("fit", "cli", "torch", "torch_valid"):
        seconds = r["epoch_seconds"][side]
        assert len(seconds) == 2
        assert v[f"sec_per_epoch_{side}"] == pytest.approx(sum(seconds) / 2, abs=1e-4)
        assert v[f"wall_per_epoch_{side}"] >= v[f"sec_per_epoch_{side}"] - 1e-4
    for side in ("fit", "cli"):
        assert v[f"epoch_ratio_{side}"] == pytest.approx(
            v[f"sec_per_epoch_{side}"] / v["sec_per_epoch_torch"], rel=2e-3)
        assert v[f"wall_ratio_{side}"] == pytest.approx(
            v[f"wall_per_epoch_{side}"] / v["wall_per_epoch_torch"], rel=2e-3)
        per_epoch = [a / b for a, b in zip(r["epoch_seconds"][side], r["epoch_seconds"]["torch"])]
        assert v[f"epoch_ratio_median_{side}"] == pytest.approx(sum(per_epoch) / 2, rel=2e-3)
    assert v["epoch_time_ratio"] == v["epoch_ratio_fit"]
    assert v["wall_ratio_cli_valid"] == pytest.approx(
        v["wall_per_epoch_cli"] / v["wall_per_epoch_torch_valid"], rel=2e-3)
    assert "Burda" not in out  # the paper's MNIST figure is not printed beside other data


def test_pyrovae_and_the_plain_loop_follow_the_same_random_streams(three_sides):
    """Same seed: the same data order, binarisation and z draws in pyrovae.fit, the CLI and the
    plain loop, validating or not (validation draws from a random state of its own), so every
    pair takes the same steps up to floating-point summation order."""
    r, v, _ = three_sides
    for a, b in (("fit", "torch"), ("cli", "torch_valid"), ("cli", "fit"),
                 ("torch_valid", "torch")):
        assert (r["nll"][a] - r["nll"][b]).abs().max() < 1e-2
        assert r["train_loss"][a] == pytest.approx(r["train_loss"][b], rel=1e-4)


def test_sides_take_turns_by_epoch_each_with_its_own_random_stream():
    """Three sides in threads: one runs at a time, epoch by epoch, in the order given and
    then reversed; each draws from the global generator exactly what it draws alone."""
    turns, log, draws = mnist_nll.Turns(["a", "b", "c"]), [], {}

    def side(name, seed):
        def job():
            torch.manual_seed(seed)
            out = []
            for epoch in range(3):
                log.append((name, epoch))
                out.append(torch.rand(4))
                turns.handover()
            draws[name] = torch.stack(out)
            return name
        return job

    jobs = {n: side(n, s) for n, s in (("a", 1), ("b", 2), ("c", 3))}
    assert mnist_nll.run_interleaved(jobs, turns, None) == {"a": "a", "b": "b", "c": "c"}
    assert [n for n, _ in log] == list("abccbaabc")
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        torch.manual_seed(seed)
        alone = torch.stack([torch.rand(4) for _ in range(3)])
        torch.testing.assert_close(draws[name], alone, rtol=0, atol=0)
    assert all(t > 0 for t in turns.active.values())


def test_a_training_subset_reaches_the_cli_as_the_same_images():
    r, v, _ = _run(TINY + ["--sides", "cli", "torch", "--train-size", "500",
                           "--test-size", "50"])
    assert r["cli"]["same_train"] and r["cli"]["same_test_bits"]
    assert len(r["x_test"]) == 50 and len(r["nll"]["cli"]) == 50
    assert v["nll_diff_cli"] == pytest.approx(
        (r["nll"]["cli"] - r["nll"]["torch"]).mean().item(), abs=1e-4)


def test_the_cli_builds_the_initial_weights_the_other_sides_start_from(tmp_path):
    """``pyrovae train --seed S`` seeds and then builds the model: one Adam step of lr 1e-30
    leaves its weights as built, equal to the benchmark's initial VAE for seed S."""
    pyrovae.run.train_run(tmp_path / "run", data="digits", model_config=mnist_nll.model_config(
        "softplus"), seed=5, steps=1, lr=1e-30, num_samples=1, figures=False,
        inference_data=False, batch_size=32)
    model = pyrovae.run_folder.load_run(tmp_path / "run")[0]
    init = mnist_nll.initial_vae((1, 8, 8), 5, "softplus")
    assert mnist_nll.state_hash(model) == mnist_nll.state_hash(init)


@pytest.mark.parametrize("scale", ["softplus", "exp"])
@pytest.mark.parametrize("analytic", [False, True])
def test_twin_loss_and_gradients_equal_pyro_for_each_option(scale, analytic):
    torch.manual_seed(0)
    vae = pyrovae.VAE(pyrovae.VAEConfig(input_shape=(1, 28, 28), scale=scale))
    ref = TorchVAE.like(vae, analytic_kl=analytic)
    x = torch.bernoulli(torch.full((8, 1, 28, 28), 0.3))
    elbo = pyro.infer.TraceMeanField_ELBO() if analytic else pyro.infer.Trace_ELBO()
    assert_twin_matches(vae, ref, x, elbo)


def test_exp_scale_reads_the_raw_output_as_a_log_standard_deviation():
    torch.manual_seed(0)
    h = torch.randn(4, 6)
    loc, scale = pyrovae.nn.NormalHead(1e-4, "exp")(h)
    torch.testing.assert_close(loc, h[:, :3])
    torch.testing.assert_close(scale, h[:, 3:].exp() + 1e-4)
    _, soft = pyrovae.nn.NormalHead(1e-4)(h)  # the default is unchanged
    torch.testing.assert_close(soft, torch.nn.functional.softplus(h[:, 3:]) + 1e-4)
    assert pyrovae.VAEConfig().scale == "softplus"
    with pytest.raises(ValueError, match="scale"):
        pyrovae.VAEConfig(scale="sigmoid")


def test_causes_script_reports_paired_differences_to_each_reference(tmp_path):
    import mnist_nll_causes

    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            r = mnist_nll_causes.main(["--data", "digits", "--epochs", "1", "--seeds", "0", "1",
                                       "--test-size", "60", "--num-samples", "5", "--variants",
                                       "base", "fit", "batch_128", "cli_defaults", "cli",
                                       "--save", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    for name in ("fit", "batch_128", "cli"):
        ref = r[name]["against"]
        d = [np.load(tmp_path / f"{name}__seed{s}.npy") - np.load(tmp_path / f"{ref}__seed{s}.npy")
             for s in (0, 1)]
        assert r[name]["diff"] == pytest.approx(float(np.mean(d)))
        assert r[name]["per_seed"] == pytest.approx([x.mean() for x in d])
    assert r["cli"]["against"] == "cli_defaults"
    assert r["fit"]["diff"] == pytest.approx(0.0, abs=1e-2)  # the same streams as the twin


def test_epoch_profile_script_splits_the_epoch(capsys):
    import epoch_profile

    threads = torch.get_num_threads()
    try:
        v = epoch_profile.main(["--data", "digits", "--batch-size", "32", "--steps", "3",
                                "--repeats", "2", "--threads", "1", "--epoch-steps", "40"])
    finally:
        torch.set_num_threads(threads)
    printed = _values(capsys.readouterr().out)
    for k in ("trainer_step_ms", "core_step_ms", "plain_step_ms", "validate_s", "checkpoint_s"):
        assert printed[k] == pytest.approx(v[k], abs=1e-4) and v[k] > 0
    assert v["step_ratio_trainer"] == pytest.approx(v["trainer_step_ms"] / v["plain_step_ms"])
    assert v["epoch_extra_validate"] == pytest.approx(
        v["validate_s"] / (v["plain_step_ms"] * 40 / 1e3))
