"""pyrovae.checks, the one module of argument checks: what each helper accepts and refuses, the
form of its message, and that the public functions built on it speak with its wording."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import numpy as np
import pyro.distributions as dist
import pytest
import torch

import pyrovae
from pyrovae import checks

NAN, INF = math.nan, math.inf
BIG = 10**400  # an int, but too large to be a float


def refused(fn, *args, **kwargs) -> str:
    """The ValueError message of ``fn(*args, **kwargs)``; fails if it returns."""
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# --- the predicates ---------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    (0, True), (-3, True), (BIG, True), (np.int64(3), False), (True, False), (False, False),
    (1.0, False), ("1", False), (None, False),
])
def test_is_int_refuses_bools_and_floats(value, expected):
    assert checks.is_int(value) is expected


@pytest.mark.parametrize("value, expected", [
    (0, True), (0.5, True), (NAN, True), (INF, True), (np.float64(0.5), True),  # a float
    (True, False), (False, False), ("0.5", False), (None, False), (1j, False),
    (torch.tensor(1.0), False),
])
def test_is_number_refuses_bools_strings_and_tensors(value, expected):
    assert checks.is_number(value) is expected


# --- ints -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 2, 10**6, BIG])
def test_positive_int_accepts_ints_from_one(value):
    checks.positive_int(value, "n")


@pytest.mark.parametrize("value", [0, -1, True, False, 1.0, 1.5, "1", None, np.int64(1), NAN])
def test_positive_int_refuses_the_rest_bools_first(value):
    assert refused(checks.positive_int, value, "n") == \
        f"n: expected a positive int, got {value!r}"


def test_positive_int_allows_none_only_when_asked():
    checks.positive_int(None, "n", allow_none=True)
    refused(checks.positive_int, None, "n")
    refused(checks.positive_int, True, "n", allow_none=True)


def test_int_at_least_includes_its_minimum():
    checks.int_at_least(0, "warmup", 0)
    checks.int_at_least(2, "num_draws", 2)
    assert refused(checks.int_at_least, 1, "num_draws", 2) == \
        "num_draws: expected an int >= 2, got 1"
    assert refused(checks.int_at_least, False, "warmup", 0) == \
        "warmup: expected an int >= 0, got False"
    assert refused(checks.int_at_least, -1, "warmup", 0) == "warmup: expected an int >= 0, got -1"


def test_int_in_includes_both_ends():
    for v in (1, 3, 5):
        checks.int_in(v, "k", 1, 5)
    for v in (0, 6, True, 3.0, None):
        assert refused(checks.int_in, v, "k", 1, 5) == f"k: expected an int in [1, 5], got {v!r}"


# --- numbers ----------------------------------------------------------------------------------


def test_number_in_is_open_by_default_and_refuses_nan():
    checks.number_in(1e-300, "lr")
    checks.number_in(1e300, "lr")
    for v in (0, 0.0, -1.0, INF, NAN, True, "1", None):
        assert refused(checks.number_in, v, "lr") == f"lr: expected a number in (0, inf), got {v!r}"
    assert refused(checks.number_in, -1.0, "lr") == "lr: expected a number in (0, inf), got -1.0"


@pytest.mark.parametrize("bounds, accepted, refused_values", [
    ("()", [0.5], [0, 1, 0.0, 1.0]),
    ("[]", [0, 0.0, 0.5, 1, 1.0], [-1e-12, 1 + 1e-12]),
    ("[)", [0, 0.5], [1, 1.0, -1e-12]),
    ("(]", [0.5, 1], [0, 0.0, 1 + 1e-12]),
])
def test_number_in_closes_the_ends_bounds_names(bounds, accepted, refused_values):
    for v in accepted:
        checks.number_in(v, "x", 0, 1, bounds=bounds)
    for v in [*refused_values, NAN, True, False, None]:
        message = refused(checks.number_in, v, "x", 0, 1, bounds=bounds)
        assert message == f"x: expected a number in {bounds[0]}0, 1{bounds[1]}, got {v!r}"


def test_number_in_refuses_an_unknown_bounds_spelling():
    assert refused(checks.number_in, 0.5, "x", bounds="[[").startswith("bounds: expected one of")


def test_number_in_allows_none_only_when_asked():
    checks.number_in(None, "clip", allow_none=True)
    refused(checks.number_in, None, "clip")


def test_positive_number_includes_infinity_but_not_nan_or_zero():
    for v in (1e-300, 1, 2.5, INF):
        checks.positive_number(v, "temperature")
    for v in (0, 0.0, -0.0, -1, NAN, -INF, True, "1", None):
        assert refused(checks.positive_number, v, "temperature") == \
            f"temperature: expected a positive number, got {v!r}"


def test_number_at_least_includes_its_minimum_and_infinity_but_not_nan():
    for v in (0, 0.0, -0.0, 3, INF):
        checks.number_at_least(v, "reg_coeff", 0)
    for v in (-1e-12, -INF, NAN, True, False, "0", None):
        assert refused(checks.number_at_least, v, "reg_coeff", 0) == \
            f"reg_coeff: expected a number >= 0, got {v!r}"
    assert refused(checks.number_at_least, 0.5, "x", 1.5) == "x: expected a number >= 1.5, got 0.5"


def test_finite_number_and_its_options():
    for v in (0, -1.5, 1e308):
        checks.finite_number(v, "alpha")
    for v in (NAN, INF, -INF, BIG, -BIG, True, "1", None):
        assert refused(checks.finite_number, v, "alpha") == \
            f"alpha: expected a finite number, got {v!r}"
    checks.finite_number(0, "lam", minimum=0)
    assert refused(checks.finite_number, -1e-12, "lam", minimum=0) == \
        "lam: expected a finite number >= 0, got -1e-12"
    assert refused(checks.finite_number, INF, "lam", minimum=0) == \
        "lam: expected a finite number >= 0, got inf"
    checks.finite_number(1e-300, "lr", positive=True)
    for v in (0, 0.0, INF, NAN, True):
        assert refused(checks.finite_number, v, "lr", positive=True) == \
            f"lr: expected a finite number > 0, got {v!r}"


# --- choices and flags ------------------------------------------------------------------------


def test_one_of_and_boolean():
    checks.one_of("mss", ("mws", "mss"), "estimator")
    assert refused(checks.one_of, "x", ("b", "a"), "estimator") == \
        "estimator: expected one of ['b', 'a'], got 'x'"
    assert refused(checks.one_of, "x", {"b", "a"}, "estimator") == \
        "estimator: expected one of ['a', 'b'], got 'x'"
    checks.boolean(False, "balance")
    for v in (1, 0, None, "True", np.bool_(True)):
        assert refused(checks.boolean, v, "balance") == \
            f"balance: expected True or False, got {v!r}"


def test_checks_is_a_leaf_module():
    tree = ast.parse(Path(checks.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "." for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"math", "__future__"}, imported


# --- the public functions speak the checks' wording -------------------------------------------


def _pair():
    def model(x):
        import pyro

        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        import pyro

        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    return model, guide


PUBLIC = [
    (lambda: pyrovae.quantize.lloyd_max(dist.Normal(0.0, 1.0), num_levels=True),
     "num_levels: expected a positive int, got True"),
    (lambda: pyrovae.quantize.kmeans(torch.randn(5, 2), 2, max_iter=0),
     "max_iter: expected a positive int, got 0"),
    (lambda: pyrovae.quantize.kmeans_plus_plus(torch.randn(5, 2), 6),
     r"k: expected an int in \[1, 5\], got 6"),
    (lambda: pyrovae.quantize.VectorQuantizer(8, 4, kmeans_init=-1),
     "kmeans_init: expected an int >= 0, got -1"),
    (lambda: pyrovae.VAEConfig(latent_dim=0), "latent_dim: expected a positive int, got 0"),
    (lambda: pyrovae.VAEConfig(latent_dim=True), "latent_dim: expected a positive int, got True"),
    (lambda: pyrovae.VAEConfig(min_scale=1.5),
     r"min_scale: expected a number in \[0, 1\], got 1.5"),
    (lambda: pyrovae.models.NVAEConfig(min_scale=math.nan),
     r"min_scale: expected a number in \(0, 1\), got nan"),
    (lambda: pyrovae.models.CategoricalVAE(num_categories=1),
     "num_categories: expected an int >= 2, got 1"),
    (lambda: pyrovae.metrics.log_likelihood(_pair(), torch.zeros(4), num_samples=1.5),
     "num_samples: expected a positive int, got 1.5"),
    (lambda: pyrovae.metrics.log_likelihood(_pair(), torch.zeros(4), 2, batch_size=False),
     "batch_size: expected a positive int, got False"),
    (lambda: pyrovae.vi.em_gaussian_mixture(torch.randn(5, 2), 6),
     r"num_components: expected an int in \[1, 5\], got 6"),
    (lambda: pyrovae.infer.Schedule(steps=True), "steps: expected a positive int, got True"),
    (lambda: pyrovae.infer.Schedule(end=math.inf), "end: expected a finite number >= 0, got inf"),
    (lambda: pyrovae.infer.scale_latents(lambda: None, -1.0),
     "scale: expected a finite number >= 0, got -1.0"),
    (lambda: pyrovae.infer.TraceCapacity_ELBO(gamma=0),
     "gamma: expected a finite number > 0, got 0"),
    (lambda: pyrovae.infer.TraceNVAE_ELBO(reg_coeff=math.nan),
     "reg_coeff: expected a number >= 0, got nan"),
    (lambda: pyrovae.infer.TraceNVAE_ELBO(beta_start=-0.5),
     r"beta_start: expected a number in \[0, 1\], got -0.5"),
    (lambda: pyrovae.infer.TraceConcrete_ELBO(temperature=-0.0),
     "temperature: expected a positive number, got -0.0"),
    (lambda: pyrovae.data.grouped_factors(0), "n: expected a positive int, got 0"),
]


@pytest.mark.parametrize("call, message", PUBLIC, ids=range(len(PUBLIC)))
def test_public_functions_refuse_with_the_checks_wording(call, message):
    with pytest.raises(ValueError, match=f"^{message}") as info:
        call()
    assert re.match(r"^\w+: expected .*, got .+$", str(info.value))
