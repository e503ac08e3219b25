"""VQ-VAE and VQ-VAE-2 as Pyro programs: the loss any Pyro ELBO computes is eq. 3 of van den
Oord et al. (2017) plus the constant KL, the gradients are the straight-through ones, the
point-mass guide's importance weights are what metrics report, and the run folder works."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

import pyrovae
from pyrovae import VQVAE, VQVAE2, VQVAE2Config, VQVAEConfig, cli, metrics
from pyrovae.infer import ParticleTracer, TraceVQ_ELBO, elbo_terms

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(input_shape=(1, 8, 8), num_codes=16, code_dim=4, downsample=1, hidden=16,
             res_hidden=8, prior_channels=8, prior_layers=2, prior_kernel=3)
SMALL2 = dict(input_shape=(1, 8, 8), num_codes_top=8, num_codes_bottom=16, code_dim=4,
              hidden=16, res_hidden=8, prior_channels=8, prior_layers=2, prior_kernel=3,
              prior_attention_heads=2, prior_attention_every=1)


@pytest.fixture(scope="module")
def digits():
    """A small slice of the embedded digits: 256 training and 90 test images."""
    s = pyrovae.data.load("digits", binarize="dynamic")
    return s.train.subset(torch.arange(256)), s.test.subset(torch.arange(90))


def _x(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, 8, 8), 0.3), generator=g)


def _model(**kw):
    torch.manual_seed(0)
    return VQVAE(VQVAEConfig(**{**SMALL, "kmeans_init": 0, **kw}))


def _by_hand(m, x):
    """(recon, codebook, commitment) of eq. 3 computed directly from the networks."""
    z_e = m.encode(x)  # (B, 4, 4, D)
    idx = torch.cdist(z_e.reshape(-1, z_e.shape[-1]), m.quantizer.codebook).argmin(1)
    e = m.quantizer.codebook[idx].reshape(z_e.shape)
    logits = m.decode(e)
    recon = -dist.Bernoulli(logits=logits).log_prob(x).sum()
    sq = ((z_e - e) ** 2).sum()
    return recon, sq, m.config.beta * sq


def test_any_pyro_elbo_computes_eq3_plus_the_constant_kl():
    m, x = _model(ema=False), _x()
    loss = pyro.infer.Trace_ELBO().loss(m.model, m.guide, x)
    with torch.no_grad():
        recon, codebook, commitment = _by_hand(m, x)
    kl = x.shape[0] * 16 * math.log(16)  # h w log K per data point
    assert loss == pytest.approx(float(recon + kl + codebook + commitment), rel=1e-5)
    terms = elbo_terms(m.model, m.guide, {"x": x})  # the ELBO's own terms, without factors
    assert terms["kl"] == pytest.approx(kl, rel=1e-6)
    assert terms["kl/z"] == 0.0
    assert terms["recon"] == pytest.approx(float(recon), rel=1e-5)
    # with the EMA codebook the codebook term is gone
    m2 = _model(ema=True)
    with torch.no_grad():
        recon2, _, commitment2 = _by_hand(m2, x)
    assert pyro.infer.Trace_ELBO().loss(m2.model, m2.guide, x) == \
        pytest.approx(float(recon2 + kl + commitment2), rel=1e-5)


def _grads_at_encoder_and_decoder(m, x):
    saved = {}

    def keep(name):
        def hook(module, args, out=None):
            t = out if out is not None else args[0]
            t.retain_grad()
            saved[name] = t
        return hook

    h1 = m.encoder.register_forward_hook(keep("enc"))
    h2 = m.decoder.register_forward_pre_hook(keep("dec"))
    try:
        pyro.infer.Trace_ELBO().loss_and_grads(m.model, m.guide, x)
    finally:
        h1.remove()
        h2.remove()
    return saved["enc"], saved["dec"]


def test_encoder_receives_exactly_the_decoder_input_gradient():
    m, x = _model(beta=0.0), _x()
    enc, dec = _grads_at_encoder_and_decoder(m, x)
    assert torch.equal(enc.grad, dec.grad)  # straight through, bit for bit
    # with the commitment term the encoder also gets 2 beta (z_e - sg[e])
    m, x = _model(beta=0.25), _x()
    enc, dec = _grads_at_encoder_and_decoder(m, x)
    torch.testing.assert_close(enc.grad, dec.grad + 2 * 0.25 * (enc - dec).detach())


def test_codebook_learns_only_from_the_codebook_loss():
    m, x = _model(ema=False, restart_threshold=0.0), _x()
    z_e = m.encode(x).detach().reshape(-1, 4)
    idx = torch.cdist(z_e, m.quantizer.codebook.detach()).argmin(1)
    e = m.quantizer.codebook.detach()[idx]
    pyro.infer.Trace_ELBO().loss_and_grads(m.model, m.guide, x)
    expected = torch.zeros(16, 4).index_add_(0, idx, 2 * (e - z_e))
    torch.testing.assert_close(m.quantizer.codebook.grad, expected)


def test_trace_vq_elbo_equals_trace_elbo_and_reports_the_terms():
    x = _x(8)
    a, b = _model(ema=False), _model(ema=False)
    torch.manual_seed(1)
    la = pyro.infer.Trace_ELBO().loss_and_grads(a.model, a.guide, x)
    vq = TraceVQ_ELBO()
    torch.manual_seed(1)
    lb = vq.loss_and_grads(b.model, b.guide, x)
    assert la == lb
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert (pa.grad is None) == (pb.grad is None), name
        if pa.grad is not None:
            assert torch.equal(pa.grad, pb.grad), name
    with torch.no_grad():
        _, codebook, commitment = _by_hand(_model(ema=False), x)
    t = vq.last_terms
    assert t["commitment"] == pytest.approx(float(commitment) / 8, rel=1e-5)
    assert t["codebook"] == pytest.approx(float(codebook) / 8, rel=1e-5)
    assert 1.0 <= t["perplexity/codes"] <= 16 and 0 < t["usage/codes"] <= 1


def test_log_likelihood_of_the_point_mass_guide_is_its_single_weight():
    m, x = _model(), _x(5)
    m.eval()
    r1 = metrics.importance_sampling(m, x, 1)
    r37 = metrics.importance_sampling(m, x, 37)
    with torch.no_grad():
        per_point = torch.stack([-_by_hand(m, x[i:i + 1])[0] for i in range(5)])
    expected = per_point - 16 * math.log(16)  # log p(x | e_k*) + log p(k*)
    torch.testing.assert_close(r1["log_likelihood"], expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(r37["log_likelihood"], r1["log_likelihood"])
    torch.testing.assert_close(r37["elbo"], r1["elbo"])
    torch.testing.assert_close(r37["elbo_se"], torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(r37["ess"], torch.full((5,), 37.0), rtol=1e-4, atol=0)
    # what justifies the shortcut: 37 vectorised guide draws give 37 identical weights
    tracer = ParticleTracer(m.model, m.guide, {"x": x}, 5)
    with torch.no_grad():
        mt, gt = tracer.traces({"x": x}, 37)
        lw = tracer.log_weights(mt, gt, 37, 5)
    assert bool((lw == lw[:1]).all())
    torch.testing.assert_close(lw[0], r1["log_likelihood"])


def test_learned_prior_replaces_the_uniform_one_in_the_model():
    m, x = _model(), _x(4)
    m.eval()
    with torch.no_grad():
        codes = m.encode_codes(x)["codes"]
        lp_uniform = metrics.log_likelihood(m, x, 1)
        m.prior_fitted.fill_(True)  # an untrained PixelCNN is still a normalised prior
        lp_learned = metrics.log_likelihood(m, x, 1)
        lp_codes = m.code_prior.distribution("codes").log_prob(codes)
    torch.testing.assert_close(lp_learned - lp_uniform, lp_codes + 16 * math.log(16),
                               rtol=1e-5, atol=1e-4)
    tr = poutine.trace(poutine.uncondition(m.model)).get_trace(x)
    assert tr.nodes["codes"]["value"].shape == (4, 4, 4)
    assert torch.equal(tr.nodes["z"]["value"], m.quantizer.embed(tr.nodes["codes"]["value"]))
    assert m.sample(3).shape == (3, 1, 8, 8)


def test_fit_prior_learns_the_codes_and_bits_per_dim_two_ways(digits):
    train, test = digits
    torch.manual_seed(0)
    m = VQVAE(VQVAEConfig(**SMALL))
    pyrovae.fit(m, train, TraceVQ_ELBO(), epochs=2, batch_size=32, progress=False)
    h = m.fit_prior(train, epochs=3, batch_size=32, progress=False)
    assert bool(m.prior_fitted)
    assert h.epochs[-1]["loss"] < h.epochs[0]["loss"]
    bpd = m.prior_bits_per_dim(test)["total"]
    packed = m.code_prior.pack(m.encode_dataset(test))
    torch.testing.assert_close(bpd, metrics.bits_per_dim(m.code_prior, packed).double(),
                               rtol=1e-5, atol=1e-5)
    assert float(bpd.mean()) < math.log2(16)  # better than the uniform prior's 4 bits


def test_vqvae2_two_levels_constant_kl_and_conditional_bottom_prior():
    torch.manual_seed(0)
    m, x = VQVAE2(VQVAE2Config(**SMALL2, kmeans_init=0)), _x(3)
    assert m.top_shape == (2, 2) and m.bottom_shape == (4, 4)
    terms = elbo_terms(m.model, m.guide, {"x": x})
    assert terms["kl"] == pytest.approx(3 * (4 * math.log(8) + 16 * math.log(16)), rel=1e-6)
    assert terms["kl/codes_top"] == pytest.approx(3 * 4 * math.log(8), rel=1e-6)
    gt = poutine.trace(m.guide).get_trace(x)
    names = [n for n, s in gt.nodes.items() if s["type"] == "sample" and n != "data"]
    assert names[:4] == ["z_top", "codes_top", "z_bottom", "codes_bottom"]
    assert {"vq_commitment_top", "vq_commitment_bottom"} <= set(names)
    # the bottom prior is conditioned on the top codes
    m.eval()
    m.prior_fitted.fill_(True)
    codes = m.encode_codes(x)
    with torch.no_grad():
        d1 = m.code_prior.distribution("codes_bottom", codes["codes_top"])
        d2 = m.code_prior.distribution("codes_bottom", (codes["codes_top"] + 1) % 8)
        assert (d1.log_prob(codes["codes_bottom"]) - d2.log_prob(codes["codes_bottom"])
                ).abs().max() > 0
    assert m.sample(2).shape == (2, 1, 8, 8)


def test_vqvae2_trains_end_to_end_and_samples_from_both_priors(digits):
    train, test = digits
    torch.manual_seed(0)
    m = VQVAE2(VQVAE2Config(**SMALL2))
    h = pyrovae.fit(m, train, TraceVQ_ELBO(), epochs=3, batch_size=32, progress=False)
    assert h.epochs[-1]["loss"] < h.epochs[0]["loss"]
    assert "perplexity/codes_bottom" in h.steps[-1]
    m.fit_prior(train, epochs=1, batch_size=32, progress=False)
    usage = metrics.codebook_usage(m, test)
    assert set(usage) == {"codes_top", "codes_bottom"}
    assert m.sample(4).shape == (4, 1, 8, 8)
    bpd = m.prior_bits_per_dim(test)
    assert set(bpd) == {"codes_top", "codes_bottom", "total"}


@pytest.mark.parametrize("overrides, message", [
    ({"input_shape": (1, 9, 9)}, "divisible"), ({"prior": "gpt"}, "prior"),
    ({"num_codes": 0}, "num_codes"), ({"input_shape": (64,)}, "image shape"),
])
def test_vqvae_config_rejects_bad_settings(overrides, message):
    with pytest.raises(ValueError, match=message):
        VQVAEConfig(**{**SMALL, **overrides})


def test_fit_prior_needs_a_prior():
    with pytest.raises(ValueError, match="prior='none'"):
        _model(prior="none").fit_prior(_x(4), epochs=1)


# --- the run folder ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vqrun") / "r"
    args = ["train", "--model", "vqvae", "--data", "digits", "--epochs", "2", "--batch-size",
            "64", "--loss", "vq_elbo", "--num-samples", "20", "--out", str(out)]
    for k, v in SMALL.items():
        if k != "input_shape":
            args += ["--set", f"{k}={v}"]
    pyro.clear_param_store()
    assert cli.main(args) == 0
    return out


def test_cli_run_folder_for_the_vqvae(vq_run):
    for name in ("config.json", "checkpoint.pt", "metrics.json", "reconstructions.png",
                 "samples.png", "loss.png", "latent.png", "inference_data.nc"):
        assert (vq_run / name).is_file(), name
    m = json.loads((vq_run / "metrics.json").read_text())
    t = m["test"]
    # point-mass guide: L_K equals the ELBO, every weight equal (ESS = K)
    assert t["log_likelihood"]["mean"] == pytest.approx(t["elbo"]["mean"], rel=1e-6)
    assert t["ess_mean"] == pytest.approx(20.0, rel=1e-4)  # float32 log-sum-exps
    last = m["history"]["epochs"][-1]
    assert last["kl"] == pytest.approx(16 * math.log(16), rel=1e-6)  # reported, not hidden
    assert "commitment" in m["history"]["steps"][-1]


def test_arviz_export_of_the_codes(vq_run):
    from pyrovae import analysis, run

    model, splits, _ = run.load_run(vq_run)
    idata = analysis.to_inference_data(model, splits.test.subset(torch.arange(5)), 3)
    codes = idata.posterior["codes"].values  # (chain, draw, obs, 4, 4)
    assert codes.shape == (1, 3, 5, 4, 4) and codes.dtype.kind == "i"
    assert (codes == codes[:, :1]).all()  # a point mass: every draw the same code map
    z = idata.posterior["z"].values
    torch.testing.assert_close(torch.from_numpy(z[0, 0]),
                               model.quantizer.embed(torch.from_numpy(codes[0, 0])))


def test_checkpoint_round_trip_and_sampling(vq_run):
    from pyrovae import run

    model, splits, _ = run.load_run(vq_run)
    again = pyrovae.load_model(vq_run / "checkpoint.pt")
    x = splits.test.x[:4]
    assert torch.equal(model.reconstruct(x), again.reconstruct(x))
    assert torch.equal(model.quantizer.codebook, again.quantizer.codebook)
    assert bool(again.quantizer.initialized)
    assert cli.main(["sample", str(vq_run), "--n", "8", "--out", str(vq_run / "s.png")]) == 0
