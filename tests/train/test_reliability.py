"""Bad input gets one clear error before any work; faults do not lose what was trained.

``BAD_INPUTS`` is the table of bad inputs and the error each gives; ``python
tests/test_reliability.py`` prints it as the markdown table used in the issue notes.
"""

from __future__ import annotations

import errno
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from _models import Forgetful
from pyro.nn import PyroModule, pyro_method
from pyro.poutine.util import site_is_subsample

import pyrovae
from pyrovae import AE, VAE, VAEConfig, checkpoint, cli, fit, metrics, models

SMALL = VAEConfig(input_shape=(1, 8, 8), latent_dim=3, hidden=(16,))
BINARY = torch.bernoulli(torch.full((40, 1, 8, 8), 0.4), generator=torch.Generator().manual_seed(0))


def _fit(data=BINARY, model=None, **kw):
    kw = {"epochs": 1, "batch_size": 8, "progress": False, **kw}
    return fit(model if model is not None else VAE(SMALL), data, **kw)


def _with(value, where):
    x = BINARY.clone()
    x.view(-1)[where] = value
    return x


def _pair(model_sites, guide_sites):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            for s in model_sites:
                pyro.sample(s, dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            for s in guide_sites:
                pyro.sample(s, dist.Normal(loc, 1.0))

    return model, guide


class NeedsSiteW(pyro.infer.Trace_ELBO):
    """A loss that works on a latent site named 'w' and says so up front."""

    def check_traces(self, model_trace, guide_trace):
        if "w" not in guide_trace.nodes:
            latent = sorted(n for n, s in guide_trace.nodes.items() if s["type"] == "sample"
                            and not site_is_subsample(s))
            raise ValueError(f"loss: needs a latent site 'w'; the guide has {latent}")


def _saved_vae(tmp_path, config=SMALL):
    d = tmp_path / "ck"
    _fit(model=VAE(config), checkpoint_dir=d)
    return d / "checkpoint.pt"


def _tampered(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    p = tmp_path / "evil.pt"
    with open(p, "wb") as f:
        pickle.dump({"format": "pyrovae.checkpoint", "version": 1, "x": Evil()}, f)
    return p


def _newer_format(tmp_path):
    p = tmp_path / "new.pt"
    torch.save({"format": "pyrovae.checkpoint", "version": 99}, p)
    return p


@dataclass
class Case:
    name: str
    action: object  # callable(tmp_path)
    error: type
    message: str  # regular expression the message must match


BAD_INPUTS = [
    Case("NaN in the data", lambda t: _fit(_with(float("nan"), 3)), ValueError,
         r"data x: expected finite values, found 1 NaN/Inf"),
    Case("Inf in the data", lambda t: _fit(_with(float("inf"), 5)), ValueError,
         r"expected finite values, found 1 NaN/Inf"),
    Case("empty dataset", lambda t: _fit(torch.zeros(0, 1, 8, 8)), ValueError,
         r"the dataset is empty"),
    Case("wrong shape for the model", lambda t: _fit(BINARY.reshape(40, 64)), ValueError,
         r"expected shape \(N, 1, 8, 8\) .* got \(40, 64\)"),
    Case("wrong dtype (strings)", lambda t: _fit(np.array([["a", "b"]] * 40)), ValueError,
         r"expected a numeric array, got dtype <U1"),
    Case("wrong dtype (complex)", lambda t: _fit(torch.zeros(40, 1, 8, 8, dtype=torch.cfloat)),
         ValueError, r"expected real numbers, got dtype torch.complex64"),
    Case("non-binary data for a Bernoulli likelihood", lambda t: _fit(BINARY * 0.5), ValueError,
         r"Bernoulli likelihood needs values in \{0, 1\} \(binarise the data first\)"),
    Case("negative pixels for an 8-bit likelihood",
         lambda t: _fit(_with(-1 / 255, 0), VAE(VAEConfig(
             input_shape=(1, 8, 8), latent_dim=2, hidden=(8,),
             likelihood="discretized_logistic")), batch_size=8),
         ValueError, r"DiscretizedLogistic likelihood needs values k/255 in \[0, 1\]"),
    Case("labels of the wrong length", lambda t: _fit((BINARY, torch.zeros(39))), ValueError,
         r"y: expected shape \(40,\) to match x, got \(39,\)"),
    Case("batch size larger than the data", lambda t: _fit(batch_size=41), ValueError,
         r"batch_size: 41 is larger than the 40 training data points"),
    Case("unknown device", lambda t: _fit(device="tpu"), ValueError,
         r"device: expected 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    Case("guide site the model lacks", lambda t: _fit(torch.randn(40), _pair([], ["w"])),
         ValueError, r"the guide samples site 'w', which the model does not have"),
    Case("model latent site the guide lacks", lambda t: _fit(torch.randn(40), _pair(["w"], [])),
         ValueError, r"the model's latent site 'w' has no site of that name in the guide"),
    Case("loss needs a site the model lacks",
         lambda t: _fit(torch.randn(40), _pair(["v"], ["v"]), loss=NeedsSiteW()), ValueError,
         r"loss: needs a latent site 'w'; the guide has \['v'\]"),
    Case("model that records no param sites", lambda t: _fit(torch.randn(40), Forgetful()),
         ValueError, r"record no pyro.param sites.*pyro_method"),
    Case("non-positive epochs", lambda t: _fit(epochs=0), ValueError,
         r"epochs: expected a positive int, got 0"),
    Case("NaN learning rate", lambda t: _fit(lr=float("nan")), ValueError,
         r"lr: expected a number in \(0, inf\), got nan"),
    Case("unknown optimizer", lambda t: _fit(optimizer="adamw2"), ValueError,
         r"optimizer: expected one of \['adadelta'"),
    Case("bad model config", lambda t: VAEConfig(hidden=(64, -1)), ValueError,
         r"hidden: expected a sequence of positive ints, got \(64, -1\)"),
    Case("unknown config key", lambda t: models.build("vae", {"latentdim": 3}), ValueError,
         r"unknown config key\(s\) \['latentdim'\]"),
    Case("checkpoint of another model",
         lambda t: checkpoint.restore_model(AE(SMALL), checkpoint.load(_saved_vae(t))),
         ValueError, r"it holds a 'vae' model, not a 'ae' one"),
    Case("checkpoint whose weights do not fit",
         lambda t: checkpoint.restore_model(
             VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=5, hidden=(16,))),
             checkpoint.load(_saved_vae(t))),
         ValueError, r"its weights do not fit this model"),
    Case("checkpoint of a newer format", lambda t: checkpoint.load(_newer_format(t)),
         ValueError, r"format version 99, newer than this pyrovae reads \(1\)"),
    Case("file that is not a checkpoint",
         lambda t: (t / "x.pt").write_bytes(b"\x00garbage" * 100) and checkpoint.load(t / "x.pt"),
         ValueError, r"not a readable pyrovae checkpoint"),
    Case("checkpoint that would run code", lambda t: checkpoint.load(_tampered(t)), ValueError,
         r"not a readable pyrovae checkpoint"),
    Case("log_likelihood with zero samples",
         lambda t: metrics.log_likelihood(VAE(SMALL), BINARY, 0), ValueError,
         r"num_samples: expected a positive int, got 0"),
    Case("truncated IDX file", lambda t: (t / "idx").write_bytes(b"\x00\x00\x08\x02\x00\x00\x00")
         and pyrovae.data.read_idx(t / "idx"), ValueError, r"truncated IDX header"),
]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.name for c in BAD_INPUTS])
def test_bad_input_gives_one_clear_error_and_writes_nothing(case, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(case.error, match=case.message) as info:
        case.action(tmp_path)
    assert not out.exists()
    # raised by pyrovae's own checks (or Pyro/torch at the boundary we call), never deep inside
    assert "\n" not in str(info.value).strip() or "found invalid values" in str(info.value)
    assert not (tmp_path / "pwned").exists()  # no code from a checkpoint ever runs


def test_cuda_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeError, match=r"'cuda' was asked for, but CUDA is not available"):
        _fit(device="cuda")


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "missing.npz", "--out", "{t}/r"], "no such file"),
    (["evaluate", "{t}"], "config.json is missing; is this a pyrovae run folder?"),
    (["train", "--data", "digits", "--binarize", "none", "--epochs", "1", "--out", "{t}/r"],
     "Bernoulli likelihood needs values in {0, 1}"),
])
def test_cli_bad_input_exits_2_with_the_message(tmp_path, capsys, argv, message):
    argv = [a.format(t=tmp_path) for a in argv]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# --- faults --------------------------------------------------------------------------------


SIGMA = 0.5


class Poisoned(PyroModule):
    """z ~ N(0, 1), x | z ~ N(z, SIGMA^2) with a linear guide; data points in ``poison`` give
    a NaN likelihood, as a network overflowing on some inputs would."""

    def __init__(self, poison):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.1))
        self.poison = torch.tensor(sorted(poison), dtype=torch.long)

    @pyro_method
    def model(self, x, index):
        bad = torch.isin(index, self.poison)
        loc_shift = torch.where(bad, torch.tensor(float("nan")), torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z + loc_shift, SIGMA), obs=x)

    @pyro_method
    def guide(self, x, index):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.a * x, 0.5))


class Recorder(pyrovae.Callback):
    def __init__(self):
        self.snaps = []

    def on_step_end(self, state):
        adam_steps = [int(s["step"]) for s in state.optimizer.state.values()]
        self.snaps.append((state.last_loss, state.model.a.item(), adam_steps,
                           state.optimizer.param_groups[0]["lr"]))


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_nan_step_is_skipped_and_leaves_parameters_and_optimizer_untouched():
    x = torch.randn(40)
    rec = Recorder()
    h = fit(Poisoned({3, 17}), x, epochs=3, batch_size=5, lr=0.05, callbacks=[rec],
            progress=False, seed=1)
    skipped = [i for i, s in enumerate(rec.snaps) if math.isnan(s[0])]
    assert len(skipped) == 6  # two poisoned points, each in one batch per epoch
    for i in skipped:
        if i == 0:
            continue
        before, after = rec.snaps[i - 1], rec.snaps[i]
        assert after[1] == before[1]  # parameter untouched
        assert after[2] == before[2]  # Adam's step counts untouched
    good = [s for s in rec.snaps if not math.isnan(s[0])]
    assert good[-1][2] == [len(good)]  # Adam stepped once per good step only
    assert sum(r.get("skipped_steps", 0) for r in h.epochs) == 6
    assert all(math.isfinite(r["loss"]) for r in h.epochs)


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_persistent_nan_lowers_lr_then_stops_with_a_loadable_checkpoint(tmp_path):
    x = torch.randn(40)
    rec = Recorder()
    model = Poisoned(range(40))  # every batch poisoned
    with pytest.raises(FloatingPointError, match=r"6 consecutive steps .* saved in"):
        fit(model, x, epochs=5, batch_size=5, lr=0.05, callbacks=[rec], progress=False,
            checkpoint_dir=tmp_path, max_nonfinite=6, nonfinite_patience=2,
            nonfinite_lr_factor=0.5)
    lrs = [s[3] for s in rec.snaps]
    assert lrs == [0.05, 0.025, 0.025, 0.0125, 0.0125]  # halved every 2 failures
    ckpt = checkpoint.load(tmp_path)
    assert ckpt["model_state"]["a"].item() == pytest.approx(0.1)  # the last good value
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.00625)
    assert ckpt["train_state"]["step"] == 6


def test_disk_full_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    vae = VAE(SMALL)
    _fit(model=vae, checkpoint_dir=tmp_path)
    good = checkpoint.load(tmp_path)
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(OSError, match=r"No space left on device.*previous checkpoint .*intact"):
        _fit(model=vae, checkpoint_dir=tmp_path, epochs=2)
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    after = checkpoint.load(tmp_path)
    assert after["train_state"]["step"] == good["train_state"]["step"]
    for k, v in good["model_state"].items():
        assert torch.equal(v, after["model_state"][k])
    assert not list(tmp_path.glob(".*tmp*"))


def test_corrupted_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    data = pyrovae.data.load("digits", binarize="dynamic")
    fit(VAE(SMALL), data, epochs=3, batch_size=128, checkpoint_dir=tmp_path,
        keep_checkpoints=2, progress=False)
    files = sorted(tmp_path.glob("checkpoint-step*.pt"))
    assert len(files) == 2  # the newest two kept
    newest = checkpoint.load(tmp_path / "checkpoint.pt")
    assert newest["train_state"]["epoch"] == 3
    raw = files[-1].read_bytes()  # checkpoint.pt is a hard link to it: corrupt both
    files[-1].write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="not a readable pyrovae checkpoint"):
        checkpoint.load(tmp_path / "checkpoint.pt")
    h = fit(VAE(SMALL), data, epochs=4, batch_size=128, checkpoint_dir=tmp_path,
            keep_checkpoints=2, resume=True, progress=False)
    assert [r["epoch"] for r in h.epochs] == [1, 2, 3, 4]  # epoch 3 redone from epoch 2's
    assert "skipping unreadable checkpoint" in caplog.text


def test_corrupted_only_checkpoint_is_a_clear_error(tmp_path):
    _saved_vae(tmp_path)
    p = tmp_path / "ck" / "checkpoint.pt"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(ValueError, match="no readable checkpoint in"):
        _fit(checkpoint_dir=tmp_path / "ck", resume=True)


KILL_SCRIPT = """
import sys, torch
from pyrovae import checkpoint
big = torch.randn(6_000_000, generator=torch.Generator().manual_seed(0))  # 24 MB
i = 0
while True:
    i += 1
    checkpoint.save(sys.argv[1], {"i": i, "w": big})
    print(i, flush=True)
"""


def test_sigkill_during_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "checkpoint.pt"
    expected = torch.randn(6_000_000, generator=torch.Generator().manual_seed(0))
    hit_mid_write = 0
    for delay in (0.0, 0.03, 0.07):
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path)],
                                stdout=subprocess.PIPE, text=True)
        try:
            while int(proc.stdout.readline() or 0) < 2:  # two saves completed
                assert proc.poll() is None, "the writer died"
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        hit_mid_write += (tmp_path / ".checkpoint.pt.tmp").exists()
        ckpt = checkpoint.load(path)
        assert ckpt["i"] >= 2 and torch.equal(ckpt["w"], expected)
    assert hit_mid_write >= 1  # at least one kill landed inside a write
    checkpoint.save(path, {"i": 0})  # a leftover temporary file does not block later saves
    assert checkpoint.load(path)["i"] == 0


if __name__ == "__main__":  # the table for the issue note
    import tempfile

    print("| bad input | error |\n| --- | --- |")
    for c in BAD_INPUTS:
        with tempfile.TemporaryDirectory() as d:
            try:
                c.action(Path(d))
                msg = "(no error!)"
            except Exception as e:  # noqa: BLE001 - reporting
                msg = f"{type(e).__name__}: {e}".replace("|", "\\|").replace("\n", " ")
        print(f"| {c.name} | {msg} |")
