"""Pyro's autoguides trained by ``pyrovae.fit``, against plain ``pyro.infer.SVI`` on the same
pair and against the exact posterior.

The model is conjugate: ``mu ~ N(0, S0^2)`` global, ``z_i ~ N(mu, TAU^2)`` local (inside the
data plate), ``x_i ~ N(z_i, SIG^2)``. Its posterior over ``theta = (mu, z_1..z_N)`` is Gaussian
with precision ``Lambda`` (``Lambda_mm = 1/S0^2 + N/TAU^2``, ``Lambda_zz = 1/TAU^2 + 1/SIG^2``,
``Lambda_mz = -1/TAU^2``), so the optimum of every guide here is known in closed form
(float64): the mean is ``Lambda^-1 b``; a full-covariance Gaussian (AutoMultivariateNormal)
recovers ``Lambda^-1``; a mean-field Gaussian (AutoNormal, AutoDiagonalNormal) the exact means
with standard deviations ``Lambda_ii^-1/2``, which for ``mu`` is ``TAU / sqrt(TAU^2 + SIG^2)``
(0.45) of its exact marginal one; AutoDelta (MAP) the mean, the mode of a Gaussian; and
AutoDelta on ``mu`` with AutoNormal on ``z`` (an AutoGuideList) the mean again, with ``z``'s
mean-field standard deviations (the expectation of a quadratic log-density under a diagonal
Gaussian is maximal at the joint mode).

fit and SVI get the same seed and the same batches, and the guide is set up outside the
training stream (fit's probe runs in a forked RNG stream; the SVI runs here set the guide up in
one too, since an AutoGuideList's or init_to_median's set-up draws), so the two draw the same
noise: their results agree to float rounding (``AGREE``), far inside the Monte-Carlo error
(fit's log q is computed from the noise, Pyro's from the draw; see the 1000-point test).
Guides start at zero (``init_to_feasible``): with ``init_to_mean`` or ``init_to_median`` a
part of an AutoGuideList over ``poutine.block(model, expose=["z"])`` starts ``z`` at a draw of
``mu``'s prior (``mu`` is hidden from the part's initialiser, so it is sampled), and needs many
more steps.

Against the closed forms the tolerances come from the Monte-Carlo error, measured (running
this file prints it): over seeds 0..7 the largest error of any coordinate is given beside each
bound below. The bounds are about 2.5-3x that, and far from what the failures they guard
against give (a shuffled full batch, the bug fixed with these tests, put local means 6.7
posterior sd off; a part of an AutoGuideList started at a prior draw, 7-25 sd after the same
steps).
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer.autoguide import (
    AutoDelta,
    AutoDiagonalNormal,
    AutoGuideList,
    AutoMultivariateNormal,
    AutoNormal,
    init_to_feasible,
)
from pyro.nn import PyroModule, pyro_method

import pyrovae
from pyrovae.callbacks import Callback
from pyrovae.train import TrainConfig, Trainer

S0, TAU, SIG = 10.0, 0.5, 1.0
N = 20  # data points of the full-batch problems
SUB_N, SUB_B = 12, 4  # data points and batch size of the subsampled ones
STEPS, LR, DECAY = 600, 0.1, 0.01  # ClippedAdam, lr decaying geometrically to LR * DECAY
SUB_STEPS = 800
AGREE = 1e-3  # fit vs SVI, in posterior sd: the same draws, so float rounding only
AGREE_STEPS = 100  # the 1000-point problem's agreement: rounding grows after (see its test)
# Monte-Carlo bounds; in comments the largest error over seeds 0..7 (full batch / subsampled /
# global latent only), measured by running this file:
MEAN_TOL = 0.6  # |mean - exact| / exact posterior sd, any coordinate (0.14 / 0.21 / 0.16)
SD_TOL = 0.5  # |sd / optimum - 1|, any coordinate (0.11 / 0.20 / 0.16)
MU_SD_TOL = 0.3  # the same for mu (0.058 / 0.125); mean-field is 0.55 below the exact one
COV_TOL = 0.6  # |cov - exact| / sqrt(var_i var_j), full covariance (0.21)
MAP_TOL = 0.01  # AutoDelta on all sites: no noise but the batches' (0.0000 / 0.0032)
KINDS = ("normal", "diagonal", "multivariate", "delta", "list")


@pytest.fixture(autouse=True)
def _fresh_param_store():
    """Autoguides of one class share parameter names in Pyro's global store."""
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def data(n: int = N, d: int | None = None, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (n,) if d is None else (n, d)
    return 1.0 + (TAU**2 + SIG**2) ** 0.5 * torch.randn(shape, generator=g)


def model(x):
    """The data plate is the batch (``x.shape[0]``)."""
    event = x.shape[1:]
    mu = pyro.sample("mu", dist.Normal(torch.zeros(event), S0).to_event(len(event)))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(mu, TAU).to_event(len(event)))
        pyro.sample("x", dist.Normal(z, SIG).to_event(len(event)), obs=x)


def subsampled_model(n: int):
    """The data plate is all ``n`` points, subsampled by the batch's data positions."""

    def model_(x, index):
        mu = pyro.sample("mu", dist.Normal(0.0, S0))
        with pyro.plate("data", n, subsample=index):
            z = pyro.sample("z", dist.Normal(mu, TAU))
            pyro.sample("x", dist.Normal(z, SIG), obs=x)

    return model_


def exact(x: torch.Tensor):
    """``(mean, cov, mean-field sd)`` over ``(mu, z_1..z_N)`` for scalar data, float64."""
    x = x.double().numpy()
    n = len(x)
    lam = np.zeros((n + 1, n + 1))
    lam[0, 0] = 1 / S0**2 + n / TAU**2
    lam[1:, 1:] = np.eye(n) * (1 / TAU**2 + 1 / SIG**2)
    lam[0, 1:] = lam[1:, 0] = -1 / TAU**2
    cov = np.linalg.inv(lam)
    return cov @ np.r_[0.0, x / SIG**2], cov, 1 / np.sqrt(np.diag(lam))


def make_guide(kind: str, model_fn, create_plates=None):
    init = {"init_loc_fn": init_to_feasible}
    plates = {} if create_plates is None else {"create_plates": create_plates}
    if kind == "normal":
        return AutoNormal(model_fn, **init, **plates)
    if kind == "diagonal":
        return AutoDiagonalNormal(model_fn, **init)
    if kind == "multivariate":
        return AutoMultivariateNormal(model_fn, **init)
    if kind == "delta":
        return AutoDelta(model_fn, **init, **plates)
    guide = AutoGuideList(model_fn, **plates)
    guide.append(AutoDelta(poutine.block(model_fn, expose=["mu"]), **init))
    guide.append(AutoNormal(poutine.block(model_fn, expose=["z"]), **init))
    return guide


def read(guide, kind: str):
    """``(means, sds or None, cov or None)`` over ``(mu, z)``, from the guide's own tensors."""
    with torch.no_grad():
        if kind == "normal":
            return (np.r_[float(guide.locs.mu), guide.locs.z.numpy()],
                    np.r_[float(guide.scales.mu), guide.scales.z.numpy()], None)
        if kind == "delta":
            return np.r_[float(guide.mu), guide.z.numpy()], None, None
        if kind == "list":
            return (np.r_[float(guide[0].mu), guide[1].locs.z.numpy()],
                    np.r_[np.nan, guide[1].scales.z.numpy()], None)
        loc, scale = guide.loc.numpy().copy(), guide.scale.numpy().copy()
        if kind == "diagonal":
            return loc, scale, None
        tril = scale[:, None] * guide.scale_tril.numpy()
        return loc, np.sqrt(np.diag(tril @ tril.T)), tril @ tril.T


def optimizer(steps: int):
    return pyro.optim.ClippedAdam({"lr": LR, "lrd": DECAY ** (1 / steps)})


class Batches(Callback):
    """Records the batches fit trains on, for SVI to take the same ones."""

    def __init__(self):
        self.seen = []

    def on_step_end(self, state):
        self.seen.append({k: v.clone() for k, v in state.batch.items()})


def train_fit(kind, model_fn, x, *, batch_size, steps, seed=0, create_plates=None,
              loss=None):
    pyro.clear_param_store()
    guide = make_guide(kind, model_fn, create_plates)
    batches = Batches()
    pyrovae.fit((model_fn, guide), x, loss or pyro.infer.Trace_ELBO(), batch_size=batch_size,
                steps=steps, optimizer=optimizer(steps), seed=seed, progress=False,
                callbacks=[batches])
    return guide, batches.seen


def train_svi(kind, model_fn, batches, *, steps, seed=0, create_plates=None, loss=None):
    pyro.clear_param_store()
    guide = make_guide(kind, model_fn, create_plates)
    pyro.set_rng_seed(seed)
    with torch.random.fork_rng():  # set up as fit's probe does, outside the training stream
        guide(**batches[0])  # (an AutoGuideList's set-up samples the model)
    svi = pyro.infer.SVI(model_fn, guide, optimizer(steps), loss or pyro.infer.Trace_ELBO())
    for batch in batches:
        svi.step(**batch)
    return guide


def errors(kind, got, truth):
    """Largest errors against the closed forms, in the units of the tolerances."""
    mean, cov, mf_sd = truth
    sd = np.sqrt(np.diag(cov))
    means, sds, full = got
    out = {"mean": np.max(np.abs(means - mean) / sd)}
    if kind in ("normal", "diagonal", "list"):
        out["sd"] = np.nanmax(np.abs(sds / mf_sd - 1))
        if kind != "list":
            out["mu_sd"] = abs(sds[0] / mf_sd[0] - 1)
    if kind == "multivariate":
        out["cov"] = np.max(np.abs(full - cov) / np.sqrt(np.outer(np.diag(cov), np.diag(cov))))
        out["sd"] = np.max(np.abs(sds / sd - 1))
        out["mu_sd"] = abs(sds[0] / sd[0] - 1)
    return out


def check(kind, fit_got, svi_got, truth):
    sd = np.sqrt(np.diag(truth[1]))
    np.testing.assert_allclose(fit_got[0] / sd, svi_got[0] / sd, atol=AGREE, rtol=0)
    if fit_got[1] is not None:
        np.testing.assert_allclose(fit_got[1] / sd, svi_got[1] / sd, atol=AGREE, rtol=0)
    for who, got in (("fit", fit_got), ("svi", svi_got)):
        err = errors(kind, got, truth)
        tol = {"mean": MAP_TOL if kind == "delta" else MEAN_TOL, "sd": SD_TOL,
               "mu_sd": MU_SD_TOL, "cov": COV_TOL}
        bad = {k: round(float(v), 4) for k, v in err.items() if not v <= tol[k]}
        assert not bad, f"{who}, {kind}: errors {bad} beyond {tol}"


# --- the issue --------------------------------------------------------------------------------
def test_issue_full_batch_of_1000_sizes_the_plate_and_trains_as_svi_does():
    """The issue's call, ``fit((model, AutoNormal(model)), x, batch_size=1000)`` with the
    data plate the batch, 1000 points of 5 dimensions and default initialisation: the
    autoguide's local parameters are sized by the whole batch (``(1000, 5)``, not the 2 rows of
    the old probe), fit keeps the batch in data order (a shuffled batch would pair them with
    other points), fit's means and scales equal plain SVI's on the same data and seed after
    ``AGREE_STEPS``, and both reach the exact posterior's after ``STEPS`` (each dimension is
    the scalar problem; mean-field sds; over seeds 0..3 the largest errors were 0.23 sd for a
    mean, 0.16 for a sd, 0.08 for mu's).

    The agreement is checked early because fit's log q is computed from the draw's noise
    (:mod:`pyrovae.infer.lean`), equal to Pyro's up to rounding, and on this problem ClippedAdam
    amplifies a rounding difference in mu about 100-fold per 200 steps (measured: 0 after one
    step, 3e-8 after 50, 1e-5 after 200, 3e-3 after 600; a shuffled batch is wrong from the
    first step)."""
    n = 1000
    x = data(n, d=5)

    def train(steps, with_fit):
        pyro.clear_param_store()
        guide = AutoNormal(model)
        if with_fit:
            pyrovae.fit((model, guide), x, pyro.infer.Trace_ELBO(), batch_size=1000,
                        steps=steps, optimizer=optimizer(steps), seed=0, progress=False)
        else:
            pyro.set_rng_seed(0)
            with torch.random.fork_rng():  # init_to_median draws: fit sets up in a forked one
                guide(x)
            svi = pyro.infer.SVI(model, guide, optimizer(steps), pyro.infer.Trace_ELBO())
            for _ in range(steps):
                svi.step(x)
        assert tuple(guide.locs.z.shape) == (1000, 5) and tuple(guide.locs.mu.shape) == (5,)
        with torch.no_grad():
            return [torch.cat([guide.locs.mu[None], guide.locs.z]).numpy().copy(),
                    torch.cat([guide.scales.mu[None], guide.scales.z]).numpy().copy()]

    early = [train(AGREE_STEPS, f) for f in (True, False)]
    final = [train(STEPS, f) for f in (True, False)]
    for d in range(5):
        mean, cov, mf_sd = exact(x[:, d])
        sd = np.sqrt(np.diag(cov))
        for i in (0, 1):  # means, scales
            np.testing.assert_allclose(early[0][i][:, d] / sd, early[1][i][:, d] / sd,
                                       atol=AGREE, rtol=0)
        for got in final:  # fit's, SVI's
            assert np.max(np.abs(got[0][:, d] - mean) / sd) < MEAN_TOL
            assert np.max(np.abs(got[1][:, d] / mf_sd - 1)) < SD_TOL
            assert abs(got[1][0, d] / mf_sd[0] - 1) < MU_SD_TOL


# --- every autoguide, full batch ------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_autoguide_full_batch_matches_svi_and_the_exact_optimum(kind):
    """AutoNormal, AutoDiagonalNormal, AutoMultivariateNormal, AutoDelta and an AutoGuideList
    (AutoDelta on mu, AutoNormal on z) trained by fit on all 20 points equal plain SVI's on
    the same seed, and both reach the guide's closed-form optimum (module docstring): the
    exact means (MAP for AutoDelta), mean-field sds for the diagonal guides, the exact
    covariance for the multivariate one."""
    x = data()
    fit_guide, batches = train_fit(kind, model, x, batch_size=N, steps=STEPS)
    fit_got = read(fit_guide, kind)
    assert all(torch.equal(b["x"], x) for b in batches)  # all the data, in order
    svi_got = read(train_svi(kind, model, [{"x": x}] * STEPS, steps=STEPS), kind)
    check(kind, fit_got, svi_got, exact(x))


def test_mean_field_and_full_covariance_optima_differ_by_more_than_the_tolerance():
    """The closed forms tell the guides apart: mu's mean-field sd is TAU / sqrt(TAU^2 + SIG^2)
    = 0.45 of its exact marginal sd, so a mean-field result would miss the multivariate
    test's bound on mu's sd (and a full-covariance one the mean-field tests') by more than the
    noise measured beside MU_SD_TOL."""
    _, cov, mf_sd = exact(data())
    ratio = mf_sd[0] / np.sqrt(cov[0, 0])
    assert ratio == pytest.approx(TAU / (TAU**2 + SIG**2) ** 0.5, rel=0.02)
    assert 1 - ratio > MU_SD_TOL + 0.2 and 1 / ratio - 1 > MU_SD_TOL + 0.2


# --- subsampled plates ------------------------------------------------------------------------
def index_plates(n: int):
    """The autoguide's ``create_plates``: the model's plate, subsampled by the batch's data
    positions as the model's is."""
    def plates(x, index):
        return pyro.plate("data", n, subsample=index)

    return plates


@pytest.mark.parametrize("kind", ("normal", "delta", "list"))
def test_subsampled_plate_by_index_matches_svi_and_the_exact_optimum(kind):
    """The model's plate is all N points, subsampled by the batch's data positions
    (``model(x, index)``, ``pyro.plate("data", N, subsample=index)``), and the autoguide's plate
    the same (``create_plates``): its local parameters are of full size N, each step trains
    the entries of the batch's points with the likelihood scaled by N/B, so fit in batches of
    4 of 12 reaches the full-data optimum, and equals SVI stepping through the same batches."""
    n, b, steps = SUB_N, SUB_B, SUB_STEPS
    x = data(n)
    m = subsampled_model(n)
    fit_guide, batches = train_fit(kind, m, x, batch_size=b, steps=steps,
                                   create_plates=index_plates(n))
    fit_got = read(fit_guide, kind)
    assert len(batches) == steps and all(len(bt["index"]) == b for bt in batches)
    epoch = torch.cat([bt["index"] for bt in batches[:n // b]])
    assert torch.equal(torch.sort(epoch).values, torch.arange(n))  # each point once an epoch
    assert all(torch.equal(bt["x"], x[bt["index"]]) for bt in batches[:n // b])
    assert fit_got[0].shape == (n + 1,)
    svi_got = read(train_svi(kind, m, batches, steps=steps, create_plates=index_plates(n)),
                   kind)
    check(kind, fit_got, svi_got, exact(x))


def global_model(n: int):
    def model_(x, index):
        mu = pyro.sample("mu", dist.Normal(0.0, S0))
        with pyro.plate("data", n, subsample=index):
            pyro.sample("x", dist.Normal(mu, SIG), obs=x)

    return model_


def read_global(guide, kind: str) -> tuple[float, float]:
    """``(mean, sd)`` of mu (sd NaN for AutoDelta)."""
    with torch.no_grad():
        if kind == "normal":
            return float(guide.locs.mu), float(guide.scales.mu)
        if kind == "delta":
            return float(guide.mu), float("nan")
        return float(guide.loc[0]), float(guide.scale[0] * (
            guide.scale_tril[0, 0] if kind == "multivariate" else 1.0))


@pytest.mark.parametrize("kind", ("normal", "diagonal", "multivariate", "delta"))
def test_global_latent_with_a_subsampled_plate_matches_svi_and_the_exact_posterior(kind):
    """With only a global latent the guide has no plate (no create_plates needed, and the
    AutoContinuous guides can be used); the model's subsampled plate scales each batch's
    likelihood by N/B, so in batches of 10 of 40 every autoguide reaches the exact posterior
    of mu, N(m, v) with v = 1/(1/S0^2 + N/SIG^2) (AutoDelta: its mode m), as SVI on the same
    batches does."""
    n, b, steps = 40, 10, STEPS // 2
    x = data(n)
    m = global_model(n)
    fit_guide, batches = train_fit(kind, m, x, batch_size=b, steps=steps)
    got = read_global(fit_guide, kind)
    want = read_global(train_svi(kind, m, batches, steps=steps), kind)
    var = 1 / (1 / S0**2 + n / SIG**2)
    mean, sd = var * float(x.double().sum()) / SIG**2, var**0.5
    np.testing.assert_allclose(np.array(got) / sd, np.array(want) / sd, atol=AGREE, rtol=0)
    assert abs(got[0] - mean) / sd < MEAN_TOL
    if kind != "delta":
        assert abs(got[1] / sd - 1) < MU_SD_TOL


# --- what fit optimises -----------------------------------------------------------------------
@pytest.mark.parametrize("kind, subsampled", [(k, False) for k in KINDS]
                         + [(k, True) for k in ("normal", "delta", "list")])
def test_fit_optimises_the_autoguides_own_tensors_on_the_lean_path(kind, subsampled):
    """The pair is a tuple (no nn.Module), so fit finds the parameters through the probe's
    pyro.param sites: they are exactly the autoguide's own tensors (``locs.z_unconstrained``,
    ``loc``, ``scale_tril_unconstrained``, ...; of full size N under subsampling), the same
    objects Pyro's param store holds, the steps after the first run the lean ELBO, and every
    one of them moves in training."""
    n = SUB_N if subsampled else N
    m = subsampled_model(n) if subsampled else model
    guide = make_guide(kind, m, index_plates(n) if subsampled else None)
    t = Trainer((m, guide), data(n), pyro.infer.Trace_ELBO(),
                TrainConfig(batch_size=SUB_B if subsampled else n, steps=20, lr=0.05,
                            progress=False))
    t.setup()
    own = dict(guide.named_parameters())
    assert own and {id(p) for p in t.params} == {id(p) for p in own.values()}
    assert {id(p) for p in pyro.get_param_store()._params.values()} == \
        {id(p) for p in own.values()}
    assert sum(p.numel() for p in own.values()) >= n  # per-point parameters, all N of them
    assert t.lean_reason is None and type(t.fast_step).__name__ == "LeanStep"
    before = {k: v.detach().clone() for k, v in own.items()}
    t.run()
    assert all(not torch.equal(v.detach(), before[k]) for k, v in guide.named_parameters())


class Wrapped(PyroModule):
    """A PyroModule whose guide is an autoguide submodule: its parameters are the module's
    (found by ``parameters()``), and on the lean path plain ones are read pinned."""

    def __init__(self, kind):
        super().__init__()
        self.guide = make_guide(kind, self.model)

    @pyro_method
    def model(self, x):
        return model(x)


@pytest.mark.parametrize("kind", ("normal", "diagonal"))
def test_autoguide_inside_a_pyromodule_trains_as_svi_does(kind):
    """AutoNormal (PyroParams only) and AutoDiagonalNormal (a plain ``loc`` parameter, which
    fit's lean steps read pinned) as a PyroModule's guide: fit's result equals plain SVI's on
    the same seed, with the autoguide alone as the guide."""
    x, steps = data(), 100
    wrapped = Wrapped(kind)
    pyrovae.fit(wrapped, x, pyro.infer.Trace_ELBO(), batch_size=N, steps=steps,
                optimizer=optimizer(steps), seed=0, progress=False)
    got = read(wrapped.guide, kind)
    own = "guide.loc" if kind == "diagonal" else "guide.locs.z_unconstrained"
    assert own in dict(wrapped.named_parameters())
    want = read(train_svi(kind, model, [{"x": x}] * steps, steps=steps), kind)
    sd = np.sqrt(np.diag(exact(x)[1]))
    for a, b in zip(got[:2], want[:2]):
        np.testing.assert_allclose(a / sd, b / sd, atol=AGREE, rtol=0)


# --- uses that cannot work, refused before training ------------------------------------------
def _fit(m, guide, x, **kw):
    kw = {"batch_size": 5, "steps": 1, "progress": False, **kw}
    pyrovae.fit((m, guide), x, pyro.infer.Trace_ELBO(), **kw)


def test_model_indices_overridden_by_a_guide_plate_of_its_own_are_refused():
    """Without create_plates AutoNormal's plate draws its own subsample, which Pyro replays
    into the model over the ``subsample=index`` it was given: the model would observe each
    point with another point's latent. fit refuses, naming the plate and the fix."""
    m = subsampled_model(N)
    with pytest.raises(ValueError, match=r"plate 'data' is given its indices.*create_plates="):
        _fit(m, AutoNormal(m), data())


def test_autocontinuous_guide_with_a_subsampled_local_latent_is_refused():
    """AutoDiagonalNormal cannot take the indices (no create_plates) and keeps one entry of its
    latent vector per batch position: refused, pointing to AutoNormal/AutoDelta."""
    m = subsampled_model(N)
    with pytest.raises(ValueError, match=r"AutoDiagonalNormal cannot take the indices.*"
                                         r"AutoNormal or AutoDelta"):
        _fit(m, AutoDiagonalNormal(m), data())

    def random_plate(x):  # the plate draws its own subsample; the batch is fit's
        mu = pyro.sample("mu", dist.Normal(0.0, S0))
        with pyro.plate("data", N, subsample_size=x.shape[0]):
            z = pyro.sample("z", dist.Normal(mu, TAU))
            pyro.sample("x", dist.Normal(z, SIG), obs=x)

    pyro.clear_param_store()
    with pytest.raises(ValueError, match=r"AutoMultivariateNormal keeps its latent vector's "
                                         r"entries for site 'z' per position"):
        _fit(random_plate, AutoMultivariateNormal(random_plate), data())


def test_local_latents_in_a_plate_of_the_batch_smaller_than_the_data_are_refused():
    """The plate is the batch (5 of 20 points): AutoNormal's local parameters belong to batch
    positions, each trained on a different point every step. Refused with the subsample
    pattern as the fix."""
    with pytest.raises(ValueError, match=r"latent site 'z' per position of the model's plate "
                                         r"'data'.*batch's \(5\).*20 points.*"
                                         r"subsample=index.*batch_size=20"):
        _fit(model, AutoNormal(model), data())


def test_random_guide_subsample_against_fits_batch_is_refused():
    """The model's plate subsamples at random and observes fit's batch, a different draw: the
    local latent's parameters of one point would meet another's data. Refused."""
    def m(x):
        mu = pyro.sample("mu", dist.Normal(0.0, S0))
        with pyro.plate("data", N, subsample_size=x.shape[0]):
            z = pyro.sample("z", dist.Normal(mu, TAU))
            pyro.sample("x", dist.Normal(z, SIG), obs=x)

    with pytest.raises(ValueError, match=r"draws plate 'data''s subsample at random.*"
                                         r"observes site 'x'"):
        _fit(m, AutoNormal(m), data())


def test_global_latent_with_an_unscaled_batch_likelihood_is_refused():
    """A global latent and a plate of the batch's size, unscaled, in batches of 5 of 20: the
    posterior would be that of 5 points. Refused; with all 20 points in one batch the same
    pair trains."""
    def m(x):
        mu = pyro.sample("mu", dist.Normal(0.0, S0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, SIG), obs=x)

    with pytest.raises(ValueError, match=r"global latent 'mu' \(AutoNormal\) would get the "
                                         r"posterior of 5 points"):
        _fit(m, AutoNormal(m), data())
    pyro.clear_param_store()
    _fit(m, AutoNormal(m), data(), batch_size=N)


def test_validation_data_for_local_autoguide_parameters_is_refused():
    """An autoguide's local parameters exist for training points only: validation_data is
    refused by name."""
    x = data()
    with pytest.raises(ValueError, match=r"validation_data: AutoNormal has parameters for "
                                         r"the latent site 'z'"):
        _fit(model, AutoNormal(model), x, batch_size=N, validation_data=x[:5])


if __name__ == "__main__":  # the Monte-Carlo spread behind the tolerances, seeds 0..7
    torch.set_num_threads(1)
    for kind in KINDS + tuple("sub-" + k for k in ("normal", "delta", "list")):
        worst: dict = {}
        for seed in range(8):
            if kind.startswith("sub-"):
                x = data(SUB_N)
                g, _ = train_fit(kind[4:], subsampled_model(SUB_N), x, batch_size=SUB_B,
                                 steps=SUB_STEPS, seed=seed, create_plates=index_plates(SUB_N))
            else:
                x = data()
                g, _ = train_fit(kind, model, x, batch_size=N, steps=STEPS, seed=seed)
            for k, v in errors(kind.removeprefix("sub-"), read(g, kind.removeprefix("sub-")),
                               exact(x)).items():
                worst[k] = max(worst.get(k, 0.0), float(v))
        print(kind, {k: round(v, 4) for k, v in worst.items()})
    for kind in ("normal", "diagonal", "multivariate", "delta"):
        worst = {}
        for seed in range(8):
            x = data(40)
            g, _ = train_fit(kind, global_model(40), x, batch_size=10, steps=STEPS // 2,
                             seed=seed)
            var = 1 / (1 / S0**2 + 40 / SIG**2)
            got = read_global(g, kind)
            worst["mean"] = max(worst.get("mean", 0.0),
                                abs(got[0] - var * float(x.double().sum())) / var**0.5)
            worst["sd"] = max(worst.get("sd", 0.0), abs(got[1] / var**0.5 - 1))
        print("global", kind, {k: round(v, 4) for k, v in worst.items()})
