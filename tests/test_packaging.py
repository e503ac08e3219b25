"""``python -m build`` makes an sdist and a wheel that hold the whole package, and the wheel,
installed outside the repository, trains a model and runs the CLI.

The build runs as a user's would, in pip's isolated environments with the build backend from
PyPI (``build-system.requires``; a few seconds with pip's cache), so it checks that
pyproject.toml builds with the setuptools it names, without deprecation warnings. The wheel
is built from the sdist (``build``'s default), so a file missing from the sdist is missing
from the wheel too.
"""

import json
import math
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("build", reason="build is not installed (it is in the dev extra)")

pytestmark = pytest.mark.slow  # builds twice, then imports torch and trains in two processes

ROOT = Path(__file__).resolve().parents[1]


def _package_files() -> set[str]:
    """Paths of the package's files relative to the repository root, as archives name them."""
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / "pyrovae").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"python -m build failed:\n{log[-6000:]}"
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in out.iterdir())
    return {"sdist": sdists[0], "wheel": wheels[0], "log": log}


@pytest.fixture(scope="module")
def installed(dists, tmp_path_factory):
    """The wheel installed alone (no dependencies, no repository) into a fresh folder."""
    site = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                           "--no-compile", "--disable-pip-version-check", "--target", str(site),
                           str(dists["wheel"])], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return site


def _run_outside(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Runs the interpreter with only ``site`` added to its path, from a folder outside the
    repository; its installed dependencies (torch, pyro, scikit-learn) come from the venv."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_build_warns_of_nothing_deprecated(dists):
    # e.g. setuptools deprecates `license = { text = ... }` and License classifiers
    assert not re.search(r"deprecat", dists["log"], re.I), dists["log"][-6000:]


def test_wheel_holds_the_package_its_type_marker_and_licence(dists):
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = set(whl.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        assert _package_files() - names == set()
        assert "pyrovae/py.typed" in names
        assert whl.read(f"{info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
        metadata = whl.read(f"{info}/METADATA").decode()
        entry_points = whl.read(f"{info}/entry_points.txt").decode()
    assert re.search(r"^License-Expression: Apache-2.0$", metadata, re.M)
    assert re.search(r"^License-File: LICENSE$", metadata, re.M)
    urls = dict(re.findall(r"^Project-URL: ([^,]+), (\S+)$", metadata, re.M))
    assert set(urls) == {"Homepage", "Documentation", "Source", "Issues"}
    assert all(u.startswith("https://") for u in urls.values())
    assert re.search(r"^pyrovae = pyrovae\.cli:main$", entry_points, re.M)
    # nothing but the package and its metadata
    assert {n.split("/")[0] for n in names} == {"pyrovae", info}


def test_sdist_holds_the_package_readme_and_licence(dists):
    with tarfile.open(dists["sdist"]) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers()
                   if m.isfile() and "/" in m.name}
        top = dists["sdist"].name[: -len(".tar.gz")]
        licence = tar.extractfile(f"{top}/LICENSE").read()
    assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO"} <= members
    assert licence == (ROOT / "LICENSE").read_bytes()
    assert _package_files() - members == set()
    assert not {m for m in members if m.startswith("tests/")}, "MANIFEST.in prunes tests/"


TRAIN = """
import json, math, sys
from pathlib import Path
import pyrovae, torch

site = Path(sys.argv[1]).resolve()
assert site in Path(pyrovae.__file__).resolve().parents, pyrovae.__file__
torch.set_num_threads(1)
splits = pyrovae.data.load("digits", binarize="dynamic", seed=0)  # from scikit-learn's wheel
model = pyrovae.VAE(input_shape=(1, 8, 8), latent_dim=4, hidden=(32,))
history = pyrovae.fit(model, splits, epochs=3, batch_size=128, lr=3e-3, progress=False)
typed = (Path(pyrovae.__file__).parent / "py.typed").is_file()
print(json.dumps({"file": pyrovae.__file__, "n_train": len(splits.train), "typed": typed,
                  "loss": history.series("loss"), "valid": history.series("valid_loss")}))
"""


def test_installed_wheel_trains_a_vae_on_the_digits(installed, tmp_path):
    proc = _run_outside(installed, tmp_path, "-c", TRAIN, str(installed))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(result["file"]).resolve().is_relative_to(installed.resolve())
    assert not Path(result["file"]).resolve().is_relative_to(ROOT)
    assert result["typed"]
    assert result["n_train"] > 1000  # 80% of the 1,797 digits
    loss, valid = result["loss"], result["valid"]
    assert len(loss) == len(valid) == 3
    assert all(math.isfinite(v) for v in loss + valid), result
    # per-digit negative ELBO of 64 binary pixels: near 64 log 2 = 44 nats untrained; a few
    # epochs must bring it well down, on the training and the held-out split alike
    assert loss[-1] < loss[0] - 3 and valid[-1] < valid[0] - 3, result


def test_installed_cli_lists_every_registered_model(installed, tmp_path):
    proc = _run_outside(installed, tmp_path, "-m", "pyrovae", "list")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = dict(re.findall(r"^(\w+):\s+(.+)$", proc.stdout, re.M))
    models = set(listed["models"].split(", "))
    # the registrations, read from the checkout's source: each model file must have shipped
    expected = set(re.findall(r'@register_model\("(\w+)"\)',
                              "".join(p.read_text("utf-8")
                                      for p in (ROOT / "pyrovae" / "models").glob("*.py"))))
    assert expected and models == expected
    assert "digits" in listed["data"].split(", ")
