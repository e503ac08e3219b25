"""benchmarks/main_job.py at tiny size: its printed baselines equal the same quantities
recomputed here with scikit-learn, SciPy and the run folders' own metrics.json, and its
main-job settings are what the printed command line gives the CLI."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import entr
from scipy.stats import bernoulli

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import main_job  # noqa: E402


def _values(text):
    return {k: float(v) for k, v in re.findall(r"^(\w+): ([-\d.e+]+)$", text, re.M)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from contextlib import redirect_stdout
    from io import StringIO

    root = tmp_path_factory.mktemp("main_job")
    buf = StringIO()
    with redirect_stdout(buf):
        r = main_job.main(["--epochs", "3", "--former-epochs", "2", "--num-samples", "20",
                           "--out", str(root / "runs"), "--figures", str(root / "fig")])
    return r, buf.getvalue(), root


def test_pca_line_equals_scikit_learn_recomputed(tiny):
    from sklearn.decomposition import PCA

    r, out, _ = tiny
    v = _values(out)
    raw = main_job.pyrovae.data.load("digits", seed=0)
    bits = raw.binarized("dynamic", 0)
    xtr = raw.train.x.reshape(len(raw.train), -1).numpy().astype(np.float64)
    xte = bits.test.x.reshape(len(bits.test), -1).numpy().astype(np.float64)
    pca = PCA(n_components=8, random_state=0).fit(xtr)
    eps = v["pca_eps"]
    p = np.clip(pca.inverse_transform(pca.transform(xte)), eps, 1 - eps)
    expected = bernoulli.logpmf(xte, p).sum(1).mean()  # SciPy's pmf, not our xlogy sum
    assert v["pca_recon"] == pytest.approx(expected, abs=1e-3)
    # eps was chosen on the validation bits: no other grid value does better there
    xva = bits.valid.x.reshape(len(bits.valid), -1).numpy().astype(np.float64)
    pv = pca.inverse_transform(pca.transform(xva))
    scores = {e: bernoulli.logpmf(xva, np.clip(pv, e, 1 - e)).sum(1).mean()
              for e in main_job.EPS_GRID}
    assert max(scores, key=scores.get) == pytest.approx(eps)
    xte_u = raw.test.x.reshape(len(raw.test), -1).numpy().astype(np.float64)
    assert v["ppca_log_density"] == pytest.approx(pca.score(xte_u), abs=1e-3)


def test_reference_densities_equal_scipy(tiny):
    _, out, _ = tiny
    v = _values(out)
    raw = main_job.pyrovae.data.load("digits", seed=0)
    bits = raw.binarized("dynamic", 0)
    xte = bits.test.x.reshape(len(bits.test), -1).numpy()
    u = raw.test.x.reshape(len(raw.test), -1).numpy().astype(np.float64)
    mean = raw.train.x.reshape(len(raw.train), -1).numpy().astype(np.float64).mean(0)
    assert v["pixels_L"] == pytest.approx(bernoulli.logpmf(xte, mean).sum(1).mean(), abs=1e-3)
    oracle = bernoulli.logpmf(xte, u).sum(1)
    assert v["oracle_recon"] == pytest.approx(oracle.mean(), abs=1e-3)
    # the test bits were drawn from the intensities: the oracle's expectation is minus the
    # bits' entropy given them, sum_i H(u_i), to within its Monte-Carlo error
    h = (entr(u) + entr(1 - u)).sum(1)
    d = oracle + h
    assert abs(d.mean()) < 4 * d.std(ddof=1) / np.sqrt(len(d))


def test_network_scores_equal_the_run_folders_metrics(tiny):
    r, out, root = tiny
    v = _values(out)
    ae = json.loads((root / "runs" / "ae" / "metrics.json").read_text())
    vae = json.loads((root / "runs" / "vae" / "metrics.json").read_text())
    former = json.loads((root / "runs" / "former" / "metrics.json").read_text())
    # AE: our log p(x | f(x)) is pyrovae's recon_log_prob; VAE: the same L_K, image by image
    assert v["ae_recon"] == pytest.approx(ae["test"]["recon_log_prob"]["mean"], abs=1e-3)
    assert v["vae_L"] == pytest.approx(vae["test"]["log_likelihood"]["mean"], abs=1e-3)
    assert v["vae_L_se"] == pytest.approx(vae["test"]["log_likelihood"]["se"], abs=1e-3)
    assert v["former_L"] == pytest.approx(former["test"]["log_likelihood"]["mean"], abs=1e-3)
    assert v["vae_minus_former_L"] == pytest.approx(v["vae_L"] - v["former_L"], abs=2e-3)
    assert (vae["epochs"], former["epochs"]) == (3, 2)
    assert json.loads((root / "runs" / "vae" / "config.json").read_text())["model_config"][
        "latent_dim"] == 8
    assert v["vae_kl"] > 0  # KL(q || p) in closed form
    assert v["test_image_conf"] > v["noise_conf"]  # the judge knows digits from noise
    for key in ("vae_agree", "ae_agree", "pca_agree", "vae_recon_acc", "pca_recon_acc"):
        assert 0 <= v[key] <= 1
    assert out.rstrip().splitlines()[-1].startswith("vae_L_metrics: ")  # figures last


def test_figures_are_copied_small_pngs(tiny):
    _, _, root = tiny
    for name in ("reconstructions", "samples", "latent"):
        f = root / "fig" / f"vae-digits-{name}.png"
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f.stat().st_size < 100_000
        assert f.read_bytes() == (root / "runs" / "vae" / f"{name}.png").read_bytes()


def test_printed_command_gives_the_cli_the_main_job_settings():
    from pyrovae.cli import build_parser, parse_settings

    line = main_job.command(main_job.MAIN_JOB)
    args = build_parser().parse_args(line.split()[1:])
    assert parse_settings(args.set, "--set") == main_job.MAIN_JOB["model_config"]
    assert (args.model, args.data, args.epochs, args.batch_size, args.lr) == (
        "vae", "digits", main_job.MAIN_JOB["epochs"], main_job.MAIN_JOB["batch_size"],
        main_job.MAIN_JOB["lr"])
    # VAEConfig itself keeps Burda et al.'s MNIST defaults; the main job only overrides
    cfg = main_job.pyrovae.VAEConfig(input_shape=(1, 8, 8), **main_job.MAIN_JOB["model_config"])
    assert (cfg.hidden, cfg.activation, cfg.likelihood) == ((200, 200), "tanh", "bernoulli")
    assert main_job.pyrovae.VAEConfig().latent_dim == 50


def test_bernoulli_log_prob_and_agreement_on_known_values():
    p = torch.tensor([[0.9, 0.2, 0.5, 0.0]])
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    expected = np.log(0.9) + np.log(0.8) + np.log(0.5) + 0.0
    assert main_job.bernoulli_log_prob(p, x)[0] == pytest.approx(expected)
    # clipped: p = 0 becomes eps, and the bit 0 then costs log(1 - eps)
    assert main_job.bernoulli_log_prob(p, x, 0.1)[0] == pytest.approx(
        np.log(0.9) + np.log(0.8) + np.log(0.5) + np.log(0.9))
    assert main_job.agreement(p, x)[0] == pytest.approx(0.75)  # 0.5 is not above 1/2


def test_closed_form_kl_equals_torch_kl_divergence(tiny):
    _, _, root = tiny
    model, splits, _ = main_job.load_run(root / "runs" / "vae")
    x = splits.test.x
    s = main_job.autoencoder_scores(model, x)
    with torch.no_grad():
        loc, scale = model.encode(x)
        expected = torch.distributions.kl_divergence(
            torch.distributions.Normal(loc, scale), torch.distributions.Normal(0.0, 1.0)).sum(-1)
        recon = model.likelihood(model.decode(loc)).log_prob(x)
    torch.testing.assert_close(s["kl"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s["recon"], recon)
    assert bool((s["kl"] > 0).all())
