"""benchmarks/step_levers.py at toy size: every lever runs, its printed ratio is the measured
one, and the variants' steps compute gradients (each variant's model moves)."""

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_step_levers_script_reports_every_variant(capsys):
    import step_levers

    r = step_levers.main(["--data", "digits", "--cases", "mlp", "--steps", "3",
                          "--repeats", "2", "--threads", "1"])
    out = capsys.readouterr().out
    v = {k: float(x) for k, x in re.findall(r"^(\w+): ([-\d.e+]+)$", out, re.M)}
    for variant in step_levers.VARIANTS:
        assert v[f"lever_{variant}_mlp"] == pytest.approx(r["mlp"][variant]["median"], abs=1e-4)
        assert r["mlp"][variant]["q1"] <= r["mlp"][variant]["median"] <= r["mlp"][variant]["q3"]


@pytest.mark.parametrize("variant", ["trace_elbo", "local_params", "pinned", "lean_pinned_fused"])
def test_every_variant_computes_gradients_and_steps(variant):
    import step_levers
    import torch
    from _common import make_pair

    vae, ref = make_pair("burda", (1, 8, 8))
    x = torch.bernoulli(torch.full((16, 1, 8, 8), 0.4))
    p_step, _, ctx, model = step_levers.make_steps(vae, ref, x, variant)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with ctx:
        p_step()
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert sorted(moved) == sorted(k for k, _ in model.named_parameters())  # every one
