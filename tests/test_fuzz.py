"""Property-based tests of the entry points: whatever comes in, the outcome is a result or one
clear error raised by pyrovae's own checks — never an exception from deep inside torch, Pyro or
NumPy."""

from __future__ import annotations

import io
import math
import os
import tempfile
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pyro
import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import pyrovae
from pyrovae import VAE, VAEConfig, cli, data

# PYROVAE_FUZZ_SCALE=5 HYPOTHESIS_PROFILE=explore searches five times as long, randomised.
SCALE = float(os.environ.get("PYROVAE_FUZZ_SCALE", "1"))


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


CLEAR = (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError)


def raised_by_pyrovae(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return "/pyrovae/" in tb.tb_frame.f_code.co_filename.replace("\\", "/")


def expect_clear(fn, *args, **kwargs):
    """Runs ``fn``; a failure must be a CLEAR error raised in pyrovae with a one-line message."""
    try:
        out = fn(*args, **kwargs)
    except CLEAR as e:
        assert raised_by_pyrovae(e), f"{type(e).__name__} from outside pyrovae: {e}"
        assert str(e) and "\n" not in str(e).strip(), repr(e)
        _event(f"{getattr(fn, '__name__', fn)}: refused")
        return None, e
    _event(f"{getattr(fn, '__name__', fn)}: accepted")
    return out, None


def _event(text):
    try:
        event(text)
    except Exception:  # noqa: BLE001 - outside a hypothesis test there is nothing to record
        pass


def mostly(valid, invalid):
    """Valid values seven times out of eight, so that examples with several arguments are
    often valid throughout and both outcomes are exercised."""
    return st.integers(0, 7).flatmap(lambda i: valid if i else invalid)


dtypes = st.sampled_from(["float16", "float32", "float64", "int8", "uint8", "int64", "bool",
                          "complex64"])
arrays = dtypes.flatmap(lambda d: hnp.arrays(d, hnp.array_shapes(min_dims=0, max_dims=3,
                                                                 min_side=0, max_side=4)))


@given(x=arrays, y=st.none() | arrays, binarize=st.sampled_from([*data.BINARIZE, "always"]))
@settings(max_examples=examples(150), suppress_health_check=[HealthCheck.too_slow])
def test_dataset_accepts_or_refuses_clearly(x, y, binarize):
    ds, err = expect_clear(data.Dataset, x, y, binarize=binarize)
    if err is None:
        assert len(ds) == len(x) > 0 and torch.isfinite(ds.x).all()
        assert ds.x.dtype == torch.float32
        if binarize in ("fixed", "threshold"):
            assert set(ds.x.unique().tolist()) <= {0.0, 1.0}
        b = ds.batch(torch.arange(len(ds)), torch.Generator().manual_seed(0))
        assert b["x"].shape == ds.x.shape


@st.composite
def idx_bytes(draw):
    """Byte strings near the IDX layout: a header, then a body of right or wrong length."""
    code = draw(st.sampled_from([8, 9, 11, 12, 13, 14, 7]))
    sizes = draw(st.lists(st.integers(0, 4), max_size=3))
    itemsize = {8: 1, 9: 1, 11: 2, 12: 4, 13: 4, 14: 8}.get(code, 1)
    n = itemsize * int(np.prod(sizes)) if sizes else 0
    body = draw(st.binary(min_size=n, max_size=n) | st.binary(max_size=40))
    dims = draw(st.just(len(sizes)) | st.integers(0, 4))
    return bytes([0, 0, code, dims]) + b"".join(v.to_bytes(4, "big") for v in sizes) + body


@given(raw=st.binary(max_size=64) | idx_bytes())
@settings(max_examples=examples(150))
def test_read_idx_accepts_or_refuses_clearly(raw, tmp_path_factory):
    p = tmp_path_factory.mktemp("idx") / "f"
    p.write_bytes(raw)
    arr, err = expect_clear(data.read_idx, p)
    if err is None:
        header = 4 + 4 * raw[3]
        assert arr.size * arr.itemsize == len(raw) - header


good_x = hnp.arrays("float32", st.tuples(st.integers(3, 12), st.integers(1, 3)),
                    elements=st.floats(-2, 2, width=32))


@given(keys=st.dictionaries(st.sampled_from(["x", "y", "x_train", "y_train", "x_test",
                                            "y_test", "other"]), arrays, max_size=4)
       | st.fixed_dictionaries({"x": good_x}, optional={"y": arrays}))
@settings(max_examples=examples(80), suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_array_files_load_or_refuse_clearly(keys, tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, **keys)
    splits, err = expect_clear(data.load, str(p), valid_size=1)
    if err is None:
        assert len(splits.train) >= 1 and len(splits.test) >= 1


shapes = st.sampled_from([(1, 8, 8), (6,), (2, 4, 4), (1, 4, 4)])
weird = st.one_of(st.integers(-3, 40), st.floats(allow_nan=True), st.text(max_size=3),
                  st.none(), st.booleans(), st.lists(st.integers(-2, 20), max_size=3))
config_kwargs = st.fixed_dictionaries({}, optional={
    "input_shape": mostly(shapes, weird),
    "latent_dim": mostly(st.integers(1, 4), weird),
    "network": mostly(st.sampled_from(["mlp", "conv"]), st.just("rnn")),
    "hidden": mostly(st.lists(st.integers(1, 16), max_size=2), weird),
    "channels": mostly(st.none() | st.lists(st.integers(1, 8), min_size=1, max_size=2),
                       st.lists(st.integers(-1, 8), max_size=2)),
    "activation": mostly(st.sampled_from(["tanh", "relu", "swish"]), st.just("nope")),
    "batch_norm": mostly(st.booleans(), weird),
    "likelihood": mostly(st.sampled_from(["bernoulli", "gaussian", "discretized_logistic"]),
                         st.just("x")),
    "likelihood_args": st.sampled_from([{}, {}, {}, {"scale": "learned"}, {"scale": -1.0},
                                        {"scale": "predicted"}, {"num_bins": 16}, {"nope": 1},
                                        "scale"]),
    "min_scale": mostly(st.floats(0, 1), st.floats(allow_nan=True) | weird),
})


def _data_for(cfg: VAEConfig, n=4):
    g = torch.Generator().manual_seed(0)
    shape = (n, *cfg.input_shape)
    if cfg.likelihood == "bernoulli":
        return torch.bernoulli(torch.full(shape, 0.5), generator=g)
    if cfg.likelihood == "discretized_logistic":
        bins = getattr(cfg, "likelihood_args", {}).get("num_bins", 256)
        return torch.randint(0, bins, shape, generator=g).float() / (bins - 1)
    return torch.randn(shape, generator=g)


@given(kw=config_kwargs)
@settings(max_examples=examples(120))
def test_any_accepted_config_builds_and_trains(kw):
    cfg, err = expect_clear(VAEConfig, **kw)
    if err is not None:
        return
    vae, err = expect_clear(VAE, cfg)
    if err is not None:
        return
    x = _data_for(cfg)
    vae.check_data(x)
    loss = pyro.infer.Trace_ELBO().loss(vae.model, vae.guide, x)
    assert math.isfinite(loss)


@given(kw=st.fixed_dictionaries({}, optional={
    "batch_size": mostly(st.integers(1, 16), weird), "epochs": mostly(st.integers(1, 2), weird),
    "steps": mostly(st.none() | st.integers(1, 3), weird),
    "lr": mostly(st.floats(1e-4, 0.1), st.floats(allow_nan=True) | weird),
    "clip_grad_norm": mostly(st.none() | st.floats(0.1, 10), st.floats(allow_nan=True)),
    "log_every": mostly(st.none() | st.integers(1, 5), weird),
    "optimizer": mostly(st.sampled_from(["adam", "sgd", "rmsprop"]), st.sampled_from(["x", 3])),
    "lr_schedule": mostly(st.sampled_from([None, "cosine", "burda"]), st.sampled_from(["e", 1])),
    "device": mostly(st.just("cpu"), st.sampled_from(["CPU", "gpu", "cuda:x", 0])),
    "max_nonfinite": mostly(st.integers(1, 5), weird),
    "validation": mostly(st.sampled_from(["first", "all", "none"]), st.just("some")),
    "checkpoint_every": mostly(st.integers(1, 3), weird),
    "keep_checkpoints": mostly(st.integers(1, 3), weird),
}))
@settings(max_examples=examples(80))
def test_fit_arguments_accept_or_refuse_clearly(kw):
    kw.setdefault("epochs", 1)
    if kw.get("epochs") is None and kw.get("steps") is None:
        kw["steps"] = 1
    if isinstance(kw.get("epochs"), int) and kw["epochs"] > 2:
        kw["epochs"] = 2
    x = torch.bernoulli(torch.full((16, 1, 4, 4), 0.5), generator=torch.Generator().manual_seed(0))
    vae = VAE(VAEConfig(input_shape=(1, 4, 4), latent_dim=2, hidden=(4,)))
    with tempfile.TemporaryDirectory() as d:
        if "checkpoint_every" in kw or "keep_checkpoints" in kw:
            kw["checkpoint_dir"] = d
        assume(not (isinstance(kw.get("device"), str) and kw["device"].startswith("cuda")
                    and torch.cuda.is_available()))
        hist, err = expect_clear(pyrovae.fit, vae, x, progress=False, **kw)
        if err is None:
            assert all(math.isfinite(r["loss"]) for r in hist.epochs)


options = st.lists(st.one_of(
    st.tuples(st.just("--model"), st.sampled_from(["vae", "ae", "nope", "os:path", "x:y"])),
    st.tuples(st.just("--set"), st.sampled_from(["latent_dim=2", "latent_dim=0", "hidden=[8]",
                                                 "hidden=x", "foo=1", "latent_dim"])),
    st.tuples(st.just("--data"), st.sampled_from(["digits", "digits:3", "missing.npz", "zz",
                                                  "mnist", "torchvision:MNIST"])),
    st.tuples(st.just("--binarize"), st.sampled_from(["auto", "none", "fixed", "bad"])),
    st.tuples(st.just("--loss"), st.sampled_from(["trace_elbo", "iwae", "renyi_elbo", "x"])),
    st.tuples(st.just("--loss-arg"), st.sampled_from(["num_particles=2", "alpha=0.5", "q=1",
                                                      "num_particles"])),
    st.tuples(st.just("--device"), st.sampled_from(["cpu", "tpu", "cuda:9"])),
    st.tuples(st.just("--lr"), st.sampled_from(["0.01", "-1", "nan", "x"])),
    st.tuples(st.just("--optimizer"), st.sampled_from(["adam", "sgd", "zz"])),
    st.tuples(st.just("--lr-schedule"), st.sampled_from(["cosine", "burda", "bad"])),
    st.tuples(st.just("--seed"), st.sampled_from(["0", "7", "x"])),
), max_size=4)


@given(opts=options, command=st.sampled_from(["train", "evaluate", "sample"]))
@settings(max_examples=examples(25), suppress_health_check=[HealthCheck.too_slow,
                                               HealthCheck.function_scoped_fixture])
def test_cli_exits_0_or_2_and_never_crashes(opts, command, capsys):
    with tempfile.TemporaryDirectory() as d:
        if command == "train":
            argv = ["train", "--out", f"{d}/run", "--steps", "2", "--batch-size", "32",
                    "--num-samples", "2", "--no-figures", "--no-inference-data"]
            argv += [a for pair in opts for a in pair]
        else:
            argv = [command, d]
        try:
            code = cli.main(argv)
        except SystemExit as e:  # argparse's own usage errors
            code = e.code
        assert code in (0, 2)
        event(f"cli {command}: exit {code}")
        err = capsys.readouterr().err
        if code == 2:
            assert "error" in err and "Traceback" not in err
        elif command == "train":
            assert (Path(d) / "run" / "metrics.json").is_file()


@given(items=st.lists(st.text(max_size=12) | st.builds(
    lambda k, v: f"{k}={v}", st.text(max_size=5), st.text(max_size=8)), max_size=4))
@settings(max_examples=examples(150))
def test_cli_settings_parse_or_refuse_clearly(items):
    out, err = expect_clear(cli.parse_settings, items, "--set")
    if err is None:
        assert len(out) <= len(items)


def test_raised_by_pyrovae_tells_the_two_apart():
    _, err = expect_clear(data.Dataset, np.zeros(0))
    assert raised_by_pyrovae(err)
    with pytest.raises(ValueError) as info:
        np.zeros(2).reshape(3)
    assert not raised_by_pyrovae(info.value)
    assert io  # keep the import used by the strategies' readers
