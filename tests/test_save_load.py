"""pyrovae.save / pyrovae.load: our models and a user's round-trip bitwise, through save, through
fit's checkpoint folder and through a CLI run folder; constructor arguments are recovered or
refused with the argument's name and the fix; a class from __main__ gets an error with the fix."""

import json
import subprocess
import sys
import textwrap

import pyro
import pytest
import torch
from pyro.distributions import constraints

import pyrovae
from pyrovae import (
    CVAE,
    VAE,
    VQVAE,
    CVAEConfig,
    VAEConfig,
    VQVAEConfig,
    checkpoint,
    cli,
    run,
    saving,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

# README.md's "Your own model", plus variants: an argument that changes no shape (dropout's p),
# a required argument the model does not keep, and a pyro.param outside the module.
USER_MODULE = '''
import pyro, pyro.distributions as dist, torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, pyro_method


class LinearGaussian(PyroModule):
    def __init__(self, d=5, q=2):
        super().__init__()
        self.decoder = torch.nn.Linear(q, d)
        self.encoder = torch.nn.Linear(d, 2 * q)
        self.q = q

    @pyro_method
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0., 1.).expand([self.q]).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 0.5).to_event(1), obs=x)

    @pyro_method
    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            loc, raw = self.encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, torch.nn.functional.softplus(raw)).to_event(1))


class WithDropout(LinearGaussian):
    def __init__(self, d=5, q=2, p=0.1):
        super().__init__(d, q)
        self.drop = torch.nn.Dropout(p)


class NeedsD(LinearGaussian):
    def __init__(self, d, q=2):
        super().__init__(d, q)


class LearnedNoise(LinearGaussian):
    @pyro_method
    def model(self, x):
        noise = pyro.param("noise", torch.tensor(0.5), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0., 1.).expand([self.q]).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), noise).to_event(1), obs=x)
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """The module ``user_models`` (above), importable for the whole module's tests."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "user_models.py").write_text(USER_MODULE)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(folder))
        import user_models

        yield user_models
    sys.modules.pop("user_models", None)


def _x(n=64, d=5, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _perturb(model, seed=1):
    """Weights no fresh build of the class has (so a load that dropped them would show)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g))
    return model


def _ll(model, x):
    return pyrovae.metrics.log_likelihood(model, x, num_samples=16, seed=3)


# --- our models -------------------------------------------------------------------------------
def _vae():
    return VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=3, hidden=(16,)))


def _cvae():
    return CVAE(CVAEConfig(input_shape=(1, 8, 8), num_classes=10, latent_dim=3, hidden=(16,)))


def _vqvae():
    return VQVAE(VQVAEConfig(input_shape=(1, 8, 8), num_codes=8, code_dim=4, downsample=1,
                             hidden=8, res_hidden=4, prior_channels=4, prior_layers=1,
                             prior_kernel=3, kmeans_init=0))


def _outputs(model, x, y):
    """Values that depend on every weight used: log-likelihood, encoder outputs, codes."""
    with torch.no_grad():
        if isinstance(model, CVAE):
            return model.encode(x, y)
        if isinstance(model, VQVAE):
            return model.reconstruct(x), model.quantizer.codebook
        return (_ll(model, x), *model.encode(x))


@pytest.mark.parametrize("make", [_vae, _cvae, _vqvae], ids=["vae", "cvae", "vqvae"])
def test_our_models_round_trip_bitwise(tmp_path, make):
    torch.manual_seed(0)
    model = _perturb(make()).eval()
    x = torch.bernoulli(torch.full((12, 1, 8, 8), 0.3))
    y = torch.arange(12) % 10
    before = _outputs(model, x, y)
    path = pyrovae.save(model, tmp_path / "m.pt")
    torch.manual_seed(123)  # a fresh build gets other weights: only the file can restore them
    fresh = _outputs(make().eval(), x, y)
    loaded = pyrovae.load(path)
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.config == model.config
    after = _outputs(loaded, x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert not all(torch.equal(a, b) for a, b in zip(before, fresh))
    raw = torch.load(path, weights_only=True)  # no pickled objects
    assert raw["model_spec"] == model.registered_name and raw["model_init"]["problem"] is None


def test_load_model_is_kept_and_loads_into_eval_mode(tmp_path):
    model = _perturb(_vae())
    pyrovae.save(model, tmp_path / "m.pt")
    again = pyrovae.load_model(tmp_path / "m.pt")
    assert not again.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  again.state_dict().values()))


# --- a user's model ---------------------------------------------------------------------------
def test_user_model_with_keyword_args_round_trips(tmp_path, user):
    model = _perturb(user.LinearGaussian(q=3))
    x = _x()
    before = _ll(model, x)
    path = pyrovae.save(model, tmp_path / "lg.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["model_spec"] == "user_models:LinearGaussian"
    assert raw["model_config"] == {"d": 5, "q": 3}
    assert raw["model_init"]["sources"] == {"d": "default", "q": "attribute"}
    loaded = pyrovae.load(path)
    assert type(loaded) is user.LinearGaussian and loaded.q == 3 and not loaded.training
    assert torch.equal(_ll(loaded, x), before)


def test_user_model_from_fit_checkpoint_dir_reloads(tmp_path, user):
    model = user.LinearGaussian(q=3)
    x = _x(200)
    pyrovae.fit(model, x, epochs=2, batch_size=50, checkpoint_dir=tmp_path, progress=False)
    before = _ll(model, x)
    loaded = pyrovae.load(tmp_path)
    assert loaded.q == 3 and torch.equal(_ll(loaded, x), before)


def test_external_pyro_param_comes_back_with_its_constraint(tmp_path, user, caplog):
    model = user.LearnedNoise(q=3)
    x = _x(200)
    pyrovae.fit(model, x, epochs=3, batch_size=50, lr=0.05, checkpoint_dir=tmp_path / "fit",
                progress=False)
    noise = pyro.param("noise").detach().clone()
    assert abs(noise.item() - 0.5) > 1e-3  # it trained
    before = _ll(model, x)
    pyrovae.save(model, tmp_path / "with.pt", data=x[:2])
    pyrovae.save(model, tmp_path / "without.pt")
    assert "holds ['noise'], which are not saved" in caplog.text
    assert set(torch.load(tmp_path / "with.pt", weights_only=True)["pyro_params"]) == {"noise"}
    assert torch.load(tmp_path / "without.pt", weights_only=True)["pyro_params"] == {}
    for source in (tmp_path / "fit", tmp_path / "with.pt"):
        pyro.clear_param_store()
        loaded = pyrovae.load(source)
        assert torch.equal(pyro.param("noise"), noise)
        assert pyro.get_param_store().get_state()["constraints"]["noise"] is constraints.positive
        assert torch.equal(_ll(loaded, x), before)


def test_user_model_from_cli_run_folder_reloads(tmp_path, user):
    import numpy as np

    np.savez(tmp_path / "X.npz", x=_x(300).numpy())
    out = tmp_path / "runs" / "r"
    assert cli.main(["train", "--model", "user_models:LinearGaussian", "--set", "q=3",
                     "--data", str(tmp_path / "X.npz"), "--out", str(out), "--epochs", "1",
                     "--num-samples", "5", "--no-figures", "--no-inference-data"]) == 0
    loaded = pyrovae.load(out)
    via_run, _, _ = run.load_run(out)
    assert loaded.q == 3 and tuple(loaded.decoder.weight.shape) == (5, 3)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                  via_run.state_dict().values()))
    # A checkpoint written before constructor arguments were recorded: the run folder's
    # config.json supplies them; the bare file cannot, and the error says what to pass.
    old = checkpoint.load(out)
    old.pop("format"), old.pop("version")
    checkpoint.save(out / "checkpoint.pt", {**old, "model_config": None, "model_init": None})
    assert pyrovae.load(out).q == 3
    with pytest.raises(ValueError, match=r"argument 'q' probably differs \(it is 2; the "
                                         r"weights suggest 3\).*init_args=\{'q': 3\}"):
        pyrovae.load(out / "checkpoint.pt")
    assert pyrovae.load(out / "checkpoint.pt", init_args={"q": 3}).q == 3


def test_run_folder_config_name_is_the_runs():
    assert saving.RUN_CONFIG == run.CONFIG


# --- constructor arguments that cannot be recovered -------------------------------------------
def test_default_that_does_not_fit_the_weights_is_refused_naming_it(tmp_path, user):
    model = user.LinearGaussian(d=7)  # keeps no self.d: d would come back as 5
    with pytest.raises(ValueError, match=r"argument 'd' probably differs \(it is 5; the weights "
                                         r"suggest 7\).*init_args=\{'d': 7\}.*self\.d = d"):
        pyrovae.save(model, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
    pyrovae.save(model, tmp_path / "m.pt", init_args={"d": 7})
    assert tuple(pyrovae.load(tmp_path / "m.pt").decoder.weight.shape) == (7, 2)


def test_default_that_changes_no_shape_is_caught_by_attributes(tmp_path, user):
    model = user.WithDropout(p=0.3)  # p lives only as drop.p
    with pytest.raises(ValueError, match=r"drop\.p = 0\.1 where the model has 0\.3.*default "
                                         r"\(p\) probably differs.*init_args=\{'p': 0\.3\}"):
        pyrovae.save(model, tmp_path / "m.pt")
    pyrovae.save(model, tmp_path / "m.pt", init_args={"p": 0.3})
    assert pyrovae.load(tmp_path / "m.pt").drop.p == 0.3
    pyrovae.save(user.WithDropout(), tmp_path / "default.pt")  # defaults that do fit: saved
    assert pyrovae.load(tmp_path / "default.pt").drop.p == 0.1


def test_required_argument_not_kept_is_refused_before_writing(tmp_path, user):
    with pytest.raises(ValueError, match=r"required argument\(s\) \['d'\].*init_args=\{'d': "
                                         r"\.\.\.\}"):
        pyrovae.save(user.NeedsD(4), tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
    pyrovae.save(user.NeedsD(4), tmp_path / "m.pt", init_args={"d": 4})
    assert pyrovae.load(tmp_path / "m.pt").decoder.out_features == 4


def test_trainer_checkpoint_of_such_a_model_trains_and_says_what_load_needs(tmp_path, user,
                                                                             caplog):
    model = user.NeedsD(4)
    h = pyrovae.fit(model, _x(100, d=4), epochs=1, batch_size=50, checkpoint_dir=tmp_path,
                    progress=False)
    assert len(h.epochs) == 1 and "required argument(s) ['d']" in caplog.text
    with pytest.raises(ValueError, match=r"when it was saved: cannot record the constructor "
                                         r"arguments of NeedsD"):
        pyrovae.load(tmp_path)
    loaded = pyrovae.load(tmp_path, init_args={"d": 4})
    assert torch.equal(loaded.decoder.weight, model.decoder.weight)


def test_wrong_arguments_at_load_name_the_one_that_differs(tmp_path, user):
    pyrovae.save(user.LinearGaussian(q=3), tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"argument 'q' probably differs \(it is 4; the weights "
                                         r"suggest 3\)"):
        pyrovae.load(tmp_path / "m.pt", init_args={"q": 4})


def test_save_leaves_the_random_streams_alone(tmp_path, user):
    model = user.LinearGaussian(d=6, q=3)
    state = torch.get_rng_state()
    pyrovae.save(model, tmp_path / "m.pt", init_args={"d": 6})  # builds the class once
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("call, error, message", [
    (lambda m, t: pyrovae.save((m.model, m.guide), t / "m.pt"), TypeError,
     r"model: a \(model_fn, guide_fn\) pair has no class"),
    (lambda m, t: pyrovae.save(m, 3), TypeError, r"path: expected a file path"),
    (lambda m, t: pyrovae.save(m, t / "m.pt", init_args=[("q", 3)]), TypeError,
     r"init_args: expected a dict"),
    (lambda m, t: pyrovae.save(m, t / "m.pt", init_args={"k": 3}), ValueError,
     r"init_args: LinearGaussian.__init__ has no parameter\(s\) \['k'\]"),
    (lambda m, t: pyrovae.save(_vae(), t / "m.pt", init_args={"latent_dim": 3}), ValueError,
     r"init_args: a VAE is rebuilt from its config"),
    (lambda m, t: pyrovae.save(m, t / "m.pt", init_args={"q": torch.tensor(3)}), TypeError,
     r"init_args: 'q' is a Tensor, not a plain value"),
    (lambda m, t: pyrovae.save(m, t / "m.pt", params=["nope"]), ValueError,
     r"params: \['nope'\] are not in Pyro's param store"),
    (lambda m, t: pyrovae.load(t / "ok.pt", cls="LinearGaussian"), TypeError,
     r"cls: expected the model's class"),
    (lambda m, t: pyrovae.load(t / "ok.pt", device="tpu"), ValueError, r"device: expected"),
    (lambda m, t: pyrovae.load(t / "ok.pt", init_args=3), TypeError, r"init_args: expected"),
])
def test_bad_arguments_are_one_clear_error(tmp_path, user, call, error, message):
    m = user.LinearGaussian()
    pyrovae.save(m, tmp_path / "ok.pt")
    with pytest.raises(error, match=message):
        call(m, tmp_path)
    assert not (tmp_path / "m.pt").exists()


def test_saving_into_a_run_folder_is_refused(tmp_path, user):
    (tmp_path / "config.json").write_text(json.dumps({"model": "vae"}))
    with pytest.raises(FileExistsError, match=r"is a run folder.*--resume"):
        pyrovae.save(user.LinearGaussian(), tmp_path)
    assert not (tmp_path / "checkpoint.pt").exists()


# --- a class defined in __main__ --------------------------------------------------------------
def _python(code: str, cwd) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_class_from_main_loads_here_and_elsewhere_says_how(tmp_path):
    cls_source = USER_MODULE.split("class WithDropout")[0]
    saver = cls_source + textwrap.dedent("""
        import pyrovae
        m = LinearGaussian(q=3)
        pyrovae.save(m, "main.pt")
        again = pyrovae.load("main.pt")   # same process: __main__ still defines the class
        print("same-process", type(again).__name__, again.q)
    """)
    r = _python(saver, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "same-process LinearGaussian 3" in r.stdout
    loader = textwrap.dedent("""
        import pyrovae
        pyrovae.load("main.pt")
    """)
    r = _python(loader, tmp_path)
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()[-1]
    assert "'LinearGaussian'" in err and "defined in __main__" in err
    assert "importable module" in err and "cls=LinearGaussian" in err
    with_cls = cls_source.replace("class LinearGaussian", "class Renamed") + textwrap.dedent("""
        import pyrovae
        m = pyrovae.load("main.pt", cls=Renamed)
        print("with-cls", type(m).__name__, m.q)
    """)
    r = _python(with_cls, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "with-cls Renamed 3" in r.stdout
