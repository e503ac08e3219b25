"""The package's layering, checked by import-linter (contracts in pyproject.toml): each layer
imports only the layers below it, and no package's modules import each other in a cycle."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports():
    exe = Path(sys.executable).with_name("lint-imports")
    if exe.exists():
        return str(exe)
    return shutil.which("lint-imports")


def test_import_contracts_are_kept():
    exe = _lint_imports()
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    r = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "pyrovae's layers, top to bottom KEPT" in out
    assert "no import cycles among the modules of any pyrovae package KEPT" in out
    assert "0 broken" in out


def test_a_wrong_way_import_breaks_the_contract(tmp_path):
    """The contract can fail: a copy of the package in which the lowest layer imports the
    trainer is reported broken."""
    exe = _lint_imports()
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    shutil.copytree(ROOT / "pyrovae", tmp_path / "pyrovae")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    leaf = tmp_path / "pyrovae" / "checks.py"
    leaf.write_text(leaf.read_text() + "\nfrom .train import fit  # noqa\n")
    r = subprocess.run([exe, "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env={"PYTHONPATH": str(tmp_path), "PATH": ""})
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "pyrovae.checks is not allowed to import pyrovae.train" in out
