import json
import math

import numpy as np
import pytest

from pyrovae import cli, run


def _train(tmp_path, *extra, name="r"):
    out = tmp_path / name
    code = cli.main(["train", "--data", "digits", "--epochs", "3", "--batch-size", "64",
                     "--num-samples", "50", "--set", "latent_dim=4", "--set", "hidden=[64]",
                     "--out", str(out), *extra])
    return code, out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    code, out = _train(tmp_path_factory.mktemp("cli"))
    assert code == 0
    return out


def test_train_writes_a_complete_run_folder(run_dir):
    for name in ("config.json", "checkpoint.pt", "metrics.json", "reconstructions.png",
                 "samples.png", "loss.png", "latent.png", "inference_data.nc"):
        assert (run_dir / name).is_file(), name
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["model"] == "vae" and cfg["model_config"]["latent_dim"] == 4
    assert cfg["data"]["binarize"] == "dynamic"  # auto: Bernoulli likelihood
    m = json.loads((run_dir / "metrics.json").read_text())
    t = m["test"]
    # L_K >= the K-sample ELBO for the same draws (Jensen), and both beat coin flips
    assert t["log_likelihood"]["mean"] >= t["elbo"]["mean"]
    assert -64 * math.log(2) < t["elbo"]["mean"] < 0
    assert t["nll"] == -t["log_likelihood"]["mean"] and t["n"] == 180
    assert len(m["history"]["epochs"]) == 3


def test_evaluate_and_sample(run_dir, capsys):
    assert cli.main(["evaluate", str(run_dir), "--num-samples", "1"]) == 0
    m = json.loads((run_dir / "metrics.json").read_text())
    k1 = m["evaluations"]["test_K1"]
    # with one sample the importance-weighted bound is the ELBO itself
    assert k1["log_likelihood"]["mean"] == pytest.approx(k1["elbo"]["mean"], abs=1e-9)
    assert "L_1" in capsys.readouterr().out
    assert cli.main(["sample", str(run_dir), "--n", "16", "--out", str(run_dir / "x.png")]) == 0
    assert (run_dir / "x.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_extends_a_run(tmp_path):
    code, out = _train(tmp_path, name="res")
    assert code == 0
    assert cli.main(["train", "--out", str(out), "--resume", "--epochs", "5"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in m["history"]["epochs"]] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("args, message", [
    (["--model", "vea"], "unknown name 'vea'"),
    (["--set", "latent_size=3"], "unknown config key"),
    (["--data", "nope"], "unknown spec 'nope'"),
    (["--device", "tpu"], "device: expected 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    (["--batch-size", "5000"], "batch_size: 5000 is larger than the 1437"),
    (["--loss", "elbo"], "loss: expected one of"),
    (["--loss-arg", "num_particle=2"], "loss 'trace_elbo': bad arguments"),
    (["--set", "latent_dim"], "--set: expected KEY=VALUE"),
])
def test_errors_exit_2_with_a_message_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "bad"
    code = cli.main(["train", "--data", "digits", "--epochs", "1", "--out", str(out), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_existing_run_is_not_overwritten(run_dir, capsys):
    code = cli.main(["train", "--data", "digits", "--epochs", "1", "--out", str(run_dir)])
    assert code == 2 and "already holds a run" in capsys.readouterr().err


def test_argument_types_are_checked():
    with pytest.raises(SystemExit):
        cli.main(["train", "--epochs", "0", "--out", "x"])


USER_MODULE = '''
import pyro, pyro.distributions as dist, torch
from pyro.nn import PyroModule, pyro_method


class Conjugate(PyroModule):
    """z ~ N(0, 1), x | z ~ N(z, sigma^2); amortised linear Gaussian guide."""

    def __init__(self, sigma=1.0):
        super().__init__()
        self.sigma = sigma
        self.a = torch.nn.Parameter(torch.tensor(0.0))
        self.raw_s = torch.nn.Parameter(torch.tensor(0.0))

    @pyro_method
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, self.sigma), obs=x)

    @pyro_method
    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            s = torch.nn.functional.softplus(self.raw_s)
            pyro.sample("z", dist.Normal(self.a * x, s))
'''


def test_user_model_through_an_import_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "usermodels.py").write_text(USER_MODULE)
    sigma = 0.5
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.normal(size=3000) * math.sqrt(1 + sigma**2))
    code = cli.main(["train", "--model", "usermodels:Conjugate", "--set", f"sigma={sigma}",
                     "--data", "data.npz", "--epochs", "20", "--batch-size", "100",
                     "--lr", "0.02", "--num-samples", "200", "--out", "run"])
    assert code == 0
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    model, splits, _ = run.load_run(tmp_path / "run")
    assert model.sigma == sigma  # rebuilt with the run's settings
    x = splits.test.x
    exact = (-0.5 * np.log(2 * np.pi * (1 + sigma**2)) - x.numpy() ** 2 / (2 * (1 + sigma**2)))
    assert m["test"]["log_likelihood"]["mean"] == pytest.approx(exact.mean(), abs=0.01)
    assert (tmp_path / "run" / "latent.png").is_file()


def test_tc_loss_gets_the_training_set_size_and_logs_its_three_terms(tmp_path):
    code, out = _train(tmp_path, "--loss", "tc_elbo", "--loss-arg", "beta=6", "--no-figures",
                       "--no-inference-data", name="tc")
    assert code == 0
    cfg = json.loads((out / "config.json").read_text())
    m = json.loads((out / "metrics.json").read_text())
    n_train = 1797 - 2 * 180  # embedded digits less the valid and test splits
    assert cfg["loss"]["args"] == {"beta": 6, "dataset_size": n_train}
    # Chen et al. (2018, eq. 2): index-code MI + TC + dimension-wise KL = the KL estimate
    for rec in m["history"]["steps"]:
        assert rec["mi"] + rec["tc"] + rec["dw_kl"] == pytest.approx(rec["kl"], abs=1e-3)
