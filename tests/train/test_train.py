import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from _models import Forgetful
from pyro import poutine
from pyro.distributions import constraints
from pyro.nn import PyroModule, pyro_method

import pyrovae
from pyrovae import VAE, Callback, VAEConfig, burda_lr_lambda, checkpoint, fit, metrics

SIGMA = 0.5
A_STAR = 1 / (1 + SIGMA**2)  # exact posterior: z | x ~ N(A_STAR x, S_STAR^2)
S_STAR = math.sqrt(SIGMA**2 / (1 + SIGMA**2))


class Conjugate(PyroModule):
    """A model/guide pair written here, not in pyrovae.models: z ~ N(0,1), x|z ~ N(z, SIGMA^2),
    with an amortised linear Gaussian guide."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.0))
        self.b = torch.nn.Parameter(torch.tensor(0.5))
        self.raw_s = torch.nn.Parameter(torch.tensor(1.0))

    @pyro_method
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, SIGMA), obs=x)

    @pyro_method
    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            s = torch.nn.functional.softplus(self.raw_s)
            pyro.sample("z", dist.Normal(self.a * x + self.b, s))


def conjugate_data(n=2000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g) * math.sqrt(1 + SIGMA**2)


def test_user_pyromodule_trains_to_the_exact_posterior():
    pair = Conjugate()
    fit(pair, conjugate_data(), epochs=40, batch_size=100, lr=0.02,
        lr_schedule="cosine", progress=False)
    assert pair.a.item() == pytest.approx(A_STAR, abs=0.03)
    assert pair.b.item() == pytest.approx(0.0, abs=0.03)
    s = torch.nn.functional.softplus(pair.raw_s).item()
    assert s == pytest.approx(S_STAR, abs=0.03)
    # with q near the posterior even one importance sample is near the exact marginal
    x = torch.linspace(-2, 2, 9)
    exact = dist.Normal(0.0, math.sqrt(1 + SIGMA**2)).log_prob(x)
    torch.testing.assert_close(metrics.log_likelihood(pair, x, 200), exact, atol=0.01, rtol=0)


def _plain_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, SIGMA), obs=x)


def _plain_guide(x):
    a = pyro.param("a", torch.tensor(0.0))
    s = pyro.param("s", torch.tensor(1.0), constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(a * x, s))


@pytest.mark.parametrize("loss", ["tracegraph", "callable"])
def test_function_pair_with_pyro_params_and_any_loss(loss):
    loss_obj = (pyro.infer.TraceGraph_ELBO() if loss == "tracegraph"
                else pyro.infer.Trace_ELBO().differentiable_loss)
    fit((_plain_model, _plain_guide), conjugate_data(), loss_obj, epochs=30, batch_size=100,
        lr=0.02, lr_schedule="cosine", progress=False)
    assert pyro.param("a").item() == pytest.approx(A_STAR, abs=0.03)
    assert pyro.param("s").item() == pytest.approx(S_STAR, abs=0.03)


SMALL = VAEConfig(input_shape=(1, 8, 8), latent_dim=3, hidden=(32,))


def _digits():
    return pyrovae.data.load("digits", binarize="dynamic")


def test_checkpoint_round_trip_reproduces_outputs_exactly(tmp_path):
    vae = VAE(SMALL)
    fit(vae, _digits(), epochs=1, batch_size=64, checkpoint_dir=tmp_path, progress=False)
    loaded = pyrovae.load_model(tmp_path)
    x = _digits().test.x[:10]
    z = torch.randn(5, 3)
    with torch.no_grad():
        for a, b in zip(vae.encode(x), loaded.encode(x)):
            assert torch.equal(a, b)
        assert torch.equal(vae.decode(z), loaded.decode(z))
    ckpt = checkpoint.load(tmp_path / "checkpoint.pt")
    assert ckpt["model_spec"] == "vae" and ckpt["model_config"]["latent_dim"] == 3


@pytest.mark.parametrize("first", [{"epochs": 2}, {"steps": 15}])  # epoch end; mid-epoch
def test_resumed_run_matches_uninterrupted_run_bitwise(tmp_path, first):
    data = _digits()
    torch.manual_seed(1)
    straight = VAE(SMALL)
    h1 = fit(straight, data, epochs=4, batch_size=128, seed=3, progress=False)
    torch.manual_seed(1)
    part = VAE(SMALL)
    fit(part, data, **first, batch_size=128, seed=3, checkpoint_dir=tmp_path, progress=False)
    resumed = VAE(SMALL)  # fresh weights: everything must come from the checkpoint
    h2 = fit(resumed, data, epochs=4, batch_size=128, seed=3, checkpoint_dir=tmp_path,
             resume=True, progress=False)
    for (name, p1), p2 in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p1, p2), name
    assert [r["loss"] for r in h1.epochs] == [r["loss"] for r in h2.epochs]


def test_steps_cap_and_optimizer_state(tmp_path):
    fit(VAE(SMALL), _digits(), steps=5, batch_size=64, checkpoint_dir=tmp_path, progress=False)
    ckpt = checkpoint.load(tmp_path)
    assert ckpt["train_state"]["step"] == 5 and ckpt["train_state"]["batch_in_epoch"] == 5
    assert all(s["step"] == 5 for s in ckpt["optimizer"]["state"].values())


def test_burda_schedule_follows_the_paper():
    # stage i lasts 3**i epochs at lr factor 10**(-i/7), i = 0..7 (Burda et al. 2016, sec. 5)
    expected, epoch = [], 0
    for i in range(8):
        expected += [10 ** (-i / 7)] * 3**i
        epoch += 3**i
    assert epoch == 3280
    got = [burda_lr_lambda(e) for e in range(3280)]
    assert got == pytest.approx(expected)
    assert burda_lr_lambda(5000) == pytest.approx(10 ** (-1))


@pytest.mark.parametrize("optimizer, kind, lr", [
    ("sgd", torch.optim.SGD, 0.01),
    (torch.optim.RMSprop, torch.optim.RMSprop, 0.01),
    (lambda params: torch.optim.Adagrad(params, lr=0.05), torch.optim.Adagrad, 0.05),
    (pyro.optim.Adam({"lr": 0.02}), torch.optim.Adam, 0.02),
])
def test_optimizer_specs(optimizer, kind, lr):
    seen = []
    pair = Conjugate()
    before = pair.a.item()
    fit(pair, conjugate_data(200), epochs=2, batch_size=50, optimizer=optimizer, lr=0.01,
        callbacks=[lambda s: seen.append((type(s.optimizer), s.optimizer.param_groups[0]["lr"]))],
        progress=False)
    assert seen[0] == (kind, pytest.approx(lr))
    assert pair.a.item() != before


def test_callbacks_stop_and_wrap():
    class StopAfterTwo(Callback):
        def on_epoch_end(self, state):
            state.stop = state.epoch >= 2

    h = fit(VAE(SMALL), _digits(), epochs=10, batch_size=128, callbacks=[StopAfterTwo()],
            progress=False)
    assert len(h.epochs) == 2

    class TripleAndRecord(Callback):  # the loss sees scaled programs; metrics do not
        losses = []

        def wrap(self, model, guide):
            return poutine.scale(model, scale=3.0), poutine.scale(guide, scale=3.0)

        def on_step_end(self, state):
            self.losses.append(state.last_loss)

    ae = pyrovae.AE(SMALL)  # deterministic: the loss has no Monte-Carlo noise
    x = _digits().test.x[:64]
    unscaled = pyro.infer.Trace_ELBO().loss(ae.model, ae.guide, x) / 64
    cb = TripleAndRecord()
    h = fit(ae, x, epochs=1, batch_size=64, optimizer="sgd", lr=1e-12, callbacks=[cb],
            validation_data=x, progress=False)
    assert cb.losses == [pytest.approx(3 * unscaled, rel=1e-6)]
    assert h.epochs[0]["valid_loss"] == pytest.approx(unscaled, rel=1e-5)


def test_two_models_with_the_same_parameter_names_do_not_interfere():
    data = _digits()
    a, b = VAE(SMALL), VAE(SMALL)
    fit(a, data, epochs=1, batch_size=128, progress=False)
    a_state = {k: v.clone() for k, v in a.state_dict().items()}
    b_init = {k: v.clone() for k, v in b.state_dict().items()}
    h = fit(b, data, epochs=3, batch_size=128, progress=False)
    assert all(torch.equal(a_state[k], v) for k, v in a.state_dict().items())
    assert not all(torch.equal(b_init[k], v) for k, v in b.state_dict().items())
    assert h.epochs[-1]["loss"] < h.epochs[0]["loss"]


def test_progress_bar_shows_the_loss_terms(capsys):
    fit(VAE(SMALL), _digits(), epochs=1, batch_size=64, progress=True)
    err = capsys.readouterr().err
    assert "loss=" in err and "recon=" in err and "kl=" in err


@pytest.mark.parametrize("kwargs, data, error, message", [
    ({"batch_size": 5000}, None, ValueError, "batch_size: 5000 is larger than the 1437"),
    ({"device": "gpu"}, None, ValueError, "device: expected 'cpu', 'cuda'"),
    ({"epochs": None}, None, ValueError, "give epochs, steps, or both"),
    ({"lr": -1.0}, None, ValueError, r"lr: expected a number in \(0, inf\), got -1.0"),
    ({"optimizer": "adamm"}, None, ValueError, "optimizer: expected one of"),
    ({"lr_schedule": "step"}, None, ValueError, "lr_schedule: expected"),
    ({}, torch.rand(100, 1, 8, 8), ValueError, r"Bernoulli likelihood needs values in \{0, 1\}"),
    ({}, torch.zeros(100, 64), ValueError, r"expected shape \(N, 1, 8, 8\)"),
    ({"resume": True}, None, ValueError, "resume=True needs checkpoint_dir"),
])
def test_bad_input_is_refused_before_any_work(tmp_path, kwargs, data, error, message):
    args = {"epochs": 1, "batch_size": 64, "progress": False, **kwargs}
    if "resume" not in kwargs:
        args["checkpoint_dir"] = tmp_path / "ck"
    with pytest.raises(error, match=message):
        fit(VAE(SMALL), _digits() if data is None else data, **args)
    assert not (tmp_path / "ck").exists()


def test_cuda_requested_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        fit(VAE(SMALL), _digits(), epochs=1, device="cuda")


def test_model_without_param_sites_is_a_clear_error():
    with pytest.raises(ValueError, match="pyro_method"):
        fit(Forgetful(), torch.randn(20), epochs=1, batch_size=10, progress=False)


@pytest.mark.cuda
def test_fit_and_evaluate_on_cuda(tmp_path):
    vae = VAE(SMALL)
    h = fit(vae, _digits(), epochs=3, batch_size=64, device="cuda", progress=False,
            checkpoint_dir=tmp_path)
    assert next(vae.parameters()).is_cuda and h.epochs[-1]["loss"] < h.epochs[0]["loss"]
    ll = metrics.log_likelihood(vae, _digits().test, 50)
    assert ll.shape == (180,) and torch.isfinite(ll).all()
    assert pyrovae.load_model(tmp_path, device="cuda").prior_loc.is_cuda


def test_bf16_autocast_runs_networks_in_bf16_and_densities_in_fp32():
    vae = VAE(SMALL)
    z = torch.randn(4, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert vae.decoder(z).dtype == torch.bfloat16  # the network itself runs in bf16
        params = vae.decode(z)  # what the likelihood sees
        assert params.dtype == torch.float32
        x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.5))
        assert vae.likelihood(params).log_prob(x).dtype == torch.float32
    data = _digits()
    torch.manual_seed(0)
    a = VAE(SMALL)
    b = VAE(SMALL)
    b.load_state_dict(a.state_dict())
    h32 = fit(a, data, epochs=4, batch_size=64, progress=False)
    h16 = fit(b, data, epochs=4, batch_size=64, progress=False, precision="bf16")
    assert h16.epochs[-1]["loss"] < h16.epochs[0]["loss"]
    # bf16 rounding changes the trajectory a little, not the outcome
    assert abs(h16.epochs[-1]["loss"] - h32.epochs[-1]["loss"]) < 1.5


def test_validating_leaves_the_training_steps_as_they_were():
    """Validation draws its latents from a random state of its own: the same seed trains the
    same weights with validation data, with other validation data and without any."""
    x = torch.bernoulli(torch.rand(96, 12, generator=torch.Generator().manual_seed(3)))
    runs = []
    for valid in (None, x[:40], x[40:]):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        vae = pyrovae.VAE(pyrovae.VAEConfig(input_shape=(12,), latent_dim=2, hidden=(8,)))
        h = pyrovae.fit(vae, x, pyro.infer.Trace_ELBO(), epochs=3, batch_size=16, seed=1,
                        validation_data=valid, progress=False)
        runs.append((torch.cat([p.detach().reshape(-1) for p in vae.parameters()]), h))
    for w, h in runs[1:]:
        assert torch.equal(w, runs[0][0])
        assert [r["loss"] for r in h.epochs] == [r["loss"] for r in runs[0][1].epochs]
    # and validation itself is reproducible and differs between its data sets
    assert runs[1][1].epochs[-1]["valid_loss"] != runs[2][1].epochs[-1]["valid_loss"]
