"""What a training run shows and keeps (issue 16): the epoch line's terms add up to its loss,
a JSON-lines log of every record, TensorBoard scalars and images, a script outside a terminal
is not silent and writes no carriage returns, early stopping keeps the best epoch."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import pyrovae
from pyrovae import VAE, Callback, VAEConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = VAEConfig(input_shape=(1, 8, 8), latent_dim=3, hidden=(16,))


def test_epoch_terms_add_up_to_the_epoch_loss(digits):
    h = pyrovae.fit(VAE(SMALL), digits, epochs=3, batch_size=64, progress=False)
    for rec in h.epochs:  # the same steps for all three: every step's own terms
        assert rec["recon"] + rec["kl"] == pytest.approx(rec["loss"], rel=1e-6)
    for rec in h.steps:
        assert rec["recon"] + rec["kl"] == pytest.approx(rec["loss"], rel=1e-5)


def test_the_json_lines_log_holds_every_record(digits, tmp_path):
    h = pyrovae.fit(VAE(SMALL), digits, epochs=2, batch_size=64, log_every=5, progress=False,
                    checkpoint_dir=tmp_path)
    lines = [json.loads(s) for s in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [ln for ln in lines if ln.pop("kind") == "step"]
    epochs = [ln for ln in lines if "seconds" in ln]
    assert steps == h.steps and len(steps) == 44 // 5
    assert epochs == h.epochs


def test_tensorboard_gets_scalars_per_logged_step_and_images_per_epoch(digits, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    h = pyrovae.fit(VAE(SMALL), digits, epochs=2, batch_size=64, log_every=11, progress=False,
                    checkpoint_dir=tmp_path, log=["tensorboard"])
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in h.steps]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in h.steps], rel=1e-6)
    kl = acc.Scalars("epoch/kl")
    assert [e.value for e in kl] == pytest.approx([r["kl"] for r in h.epochs], rel=1e-6)
    assert len(acc.Images("reconstructions")) == 2 and len(acc.Images("samples")) == 2


def test_tensorboard_without_a_run_folder_is_refused_before_any_work(digits):
    with pytest.raises(ValueError, match="log: .*checkpoint_dir"):
        pyrovae.fit(VAE(SMALL), digits, epochs=1, log=["tensorboard"], progress=False)


def test_a_script_outside_a_terminal_prints_epoch_lines_without_carriage_returns(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import pyrovae
        d = pyrovae.data.load("digits", binarize="dynamic")
        m = pyrovae.VAE(input_shape=(1, 8, 8), latent_dim=2, hidden=(8,))
        pyrovae.fit(m, d, epochs=2, batch_size=128)
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr + r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["1/2", "2/2"]
    assert all("loss" in ln and "recon" in ln and "kl" in ln for ln in lines)


class Snapshots(Callback):
    def __init__(self):
        self.by_epoch = {}

    def on_epoch_end(self, state):
        self.by_epoch[state.epoch] = {k: v.clone() for k, v in state.model.state_dict().items()}


def test_early_stopping_keeps_the_best_epochs_weights(digits):
    """Overfit 128 digits: the validation loss turns up, training stops `patience` epochs after
    its best and leaves the model with that epoch's weights."""
    torch.manual_seed(0)
    m = VAE(input_shape=(1, 8, 8), latent_dim=8, hidden=(256,))
    snaps = Snapshots()
    train = digits.train.subset(torch.arange(128))
    h = pyrovae.fit(m, train, validation_data=digits.valid, epochs=400, batch_size=32, lr=3e-3,
                    early_stopping=3, callbacks=[snaps], progress=False)
    valid = [r["valid_loss"] for r in h.epochs]
    best = min(range(len(valid)), key=valid.__getitem__) + 1
    assert len(h.epochs) == best + 3 < 400  # stopped, three epochs without improvement
    assert h.epochs[-1]["best_epoch"] == best
    for k, v in m.state_dict().items():
        assert torch.equal(v, snaps.by_epoch[best][k]), k
    with pytest.raises(ValueError, match="early_stopping: needs validation data"):
        pyrovae.fit(m, train, epochs=1, early_stopping=2, progress=False)
