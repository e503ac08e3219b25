"""fit(compile=...): the traced ELBO trains exactly as the eager one (same draws, same values and
gradients), and a program the trace cannot represent falls back to eager, saying why."""

import logging

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, pyro_method

import pyrovae
from pyrovae import VAE, VAEConfig
from pyrovae.train import compiled

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = VAEConfig(input_shape=(1, 8, 8), latent_dim=3, hidden=(16,))


def _fit(mode, digits, **kw):
    torch.manual_seed(0)
    m = VAE(SMALL)
    h = pyrovae.fit(m, digits, epochs=2, batch_size=64, progress=False, compile=mode, **kw)
    return m, h


def test_traced_training_is_bitwise_the_eager_one(digits, tmp_path):
    eager, h_e = _fit(False, digits)
    traced, h_t = _fit("trace", digits, checkpoint_dir=tmp_path)
    assert [r["loss"] for r in h_t.epochs] == [r["loss"] for r in h_e.epochs]
    for (name, a), b in zip(eager.state_dict().items(), traced.state_dict().values()):
        assert torch.equal(a, b), name
    # the checkpoint is the one an eager run writes: it loads as the same model
    again = pyrovae.load(tmp_path)
    x = digits.test.frozen(0).x[:8]
    assert all(torch.equal(a, b) for a, b in zip(again.encode(x), eager.encode(x)))


def test_compiled_step_has_trace_elbos_value_and_gradient(digits):
    torch.manual_seed(0)
    vae = VAE(SMALL)
    x = digits.train.frozen(0).x[:32]
    step, why = compiled.build(vae, vae.model, vae.guide, {"x": x}, analytic=False,
                               mode="inductor", bf16=False)
    assert why is None
    with pyro.validation_enabled(False):
        pyro.set_rng_seed(5)
        ref = pyro.infer.Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
        ref.backward()
        g_ref = [p.grad.clone() for p in vae.parameters()]
        vae.zero_grad(set_to_none=True)
        pyro.set_rng_seed(5)  # the compiled graph draws from the same generator, in order
        value, terms = step({"x": x})
    torch.testing.assert_close(value, ref.detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(terms["recon"] + terms["kl"], value, rtol=1e-5, atol=1e-4)
    for a, p in zip(g_ref, vae.parameters()):
        torch.testing.assert_close(p.grad, a, rtol=1e-4, atol=1e-5)


class _Branching(PyroModule):
    """Data-dependent control flow: the guide's family depends on the batch's values."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.5))

    @pyro_method
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    @pyro_method
    def guide(self, x):
        scale = 0.5 if bool(x.mean() > 0) else 2.0
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.a * x, scale))


class _ChangingSites(_Branching):
    """A site that only some batches have (its presence depends on the batch's size)."""

    @pyro_method
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        if int(x.abs().argmax()) % 2:
            pyro.factor("extra", torch.zeros(()))


@pytest.mark.parametrize("cls, why", [(_Branching, "tracing failed"),
                                      (_ChangingSites, "change from batch to batch")])
def test_dynamic_programs_run_eager_with_a_one_line_reason(cls, why, caplog):
    torch.manual_seed(0)
    x = torch.randn(64)
    with caplog.at_level(logging.WARNING, logger="pyrovae"):
        h = pyrovae.fit(cls(), x, epochs=3, batch_size=16, lr=0.05, progress=False,
                        compile="trace")
    msgs = [r.getMessage() for r in caplog.records if "compile:" in r.getMessage()]
    assert len(msgs) == 1 and why in msgs[0] and "\n" not in msgs[0]
    assert h.epochs[-1]["loss"] < h.epochs[0]["loss"]  # and it trained, eagerly


def test_a_schedule_that_wraps_the_programs_is_not_frozen_into_a_trace(digits, caplog):
    with caplog.at_level(logging.WARNING, logger="pyrovae"):
        pyrovae.fit(VAE(SMALL), digits, steps=3, batch_size=64, progress=False,
                    compile="trace", callbacks=[pyrovae.infer.KLWarmup(10)])
    assert any("callback transforms the programs" in r.getMessage() for r in caplog.records)
