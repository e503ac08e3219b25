"""benchmarks/gpu_check.sh, the one command a session lent a GPU runs, works the first time: on
a CPU at toy size (--device cpu --smoke) every section runs and reports its figures."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_every_section_on_a_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu",
                        "--smoke", "--out", str(tmp_path)], capture_output=True, text=True,
                       env=env, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = (tmp_path / "summary.txt").read_text()
    sections = dict(re.findall(r"^section_(\w+): rc=(\d+)", summary, re.M))
    assert sections == {"environment": "0", "tests": "0", "step": "0", "step_bf16": "0",
                        "likelihood": "0"}  # no CUDA graphs section without CUDA
    v = {k: float(x) for k, x in re.findall(r"^(\w+): ([-\d.e+]+)$", summary, re.M)}
    for case in ("mlp_cpu", "conv_cpu"):  # the step figures of both precisions, both cases
        assert v[f"ratio_{case}"] > 0 and v[f"fit_ratio_{case}"] > 0
    assert "bf16" in (tmp_path / "step_bf16.txt").read_text()
    assert 0 < v["nll_vae"] < 64 * 0.6932  # a trained VAE beats fair coins on 64 pixels
    assert v["cuda_available"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["environment.txt", "tests.txt", "step.txt", "step_bf16.txt", "likelihood.txt",
         "summary.txt"])
