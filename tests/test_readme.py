"""Every fenced code block of README.md runs as written.

The blocks are parsed from README.md when the tests are collected, so the test follows the
README as it changes. What "runs as written" means for each kind of block:

- ```python blocks run verbatim, each as a script in a fresh interpreter (the one running the
  tests) from an empty temporary folder, with the repository on ``PYTHONPATH``. Checks are
  appended after the block in the same process, so they see its results without altering it:
  every name the block assigns at top level exists when it ends (it ran to completion); every
  floating-point tensor it leaves is finite; every ``History`` has finite epoch losses, the
  last below the first (it trained); every ArviZ ``InferenceData`` has finite posterior draws.
- ```bash blocks: each command line (comments dropped, ``\\`` continuations joined) runs
  verbatim with ``bash -c`` from a temporary folder holding links to the repository's
  top-level entries and ``.venv`` linking to the environment running the tests, so
  ``.venv/bin/pyrovae`` and ``.venv/bin/python`` are this checkout's. Not run:

  * set-up, ``bash .ci/setup``: it creates ``.venv`` and installs packages from the network;
    the environment running these tests is what it produces. In ``bash .ci/setup && CMD``
    the set-up is dropped and ``CMD`` runs verbatim;
  * the test suite itself, ``-m pytest``: it is what runs this test;
  * ``torchrun``: several processes or machines (``tests/test_distributed.py`` covers it);
  * a command with a placeholder for the reader to fill in, an all-capitals word that is not
    an environment variable's name (``mnist:PATH``, ``FIRST_HOST:29500``);
  * ``--device cuda`` on a machine without CUDA.

  Skipped commands are reported as skips with the reason. A ``pyrovae train ... --out DIR``
  command must leave ``DIR/metrics.json`` with a finite test log-likelihood.
- Blocks in other languages (or none) are not code and are not run.

Running the README's main command trains a VAE for 50 epochs and evaluates it with
K = 1000: about a minute on two cores; its block and the python block are marked ``slow``.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BASH = ("bash", "sh", "shell", "console")
SETUP = "bash .ci/setup"
PLACEHOLDER = re.compile(r"(?<![\w$])[A-Z][A-Z0-9_]{2,}(?![\w=])")
RUNNERS = (".venv/bin/pyrovae", ".venv/bin/python")


@dataclass
class Block:
    language: str
    line: int  # of the opening fence, 1-based
    text: str


def fenced_blocks(markdown: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, in order."""
    blocks, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^(\s*)(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, language = len(m.group(1)), m.group(2), m.group(3).lower()
        body, j = [], i + 1
        while j < len(lines) and not re.match(rf"^\s*{re.escape(fence)}\s*$", lines[j]):
            body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j])
            j += 1
        blocks.append(Block(language, i + 1, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def bash_commands(block: Block) -> list[tuple[int, str]]:
    """(line, command line) of a shell block: comments dropped, continuations joined."""
    out, pending, start = [], "", None
    for k, raw in enumerate(block.text.splitlines()):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if start is None:
            start = block.line + 1 + k
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        out.append((start, pending + line))
        pending, start = "", None
    return out


def runnable(command: str) -> tuple[str | None, str]:
    """(the command to run verbatim, or None; why not)."""
    parts = [p.strip() for p in command.split("&&")]
    parts = [p for p in parts if p != SETUP]
    if not parts:
        return None, "set-up only (bash .ci/setup): the environment running the tests is its result"
    for p in parts:
        if "torchrun" in p:
            return None, "torchrun: several processes or machines"
        program = re.sub(r"^(\w+=\S*\s+)*", "", p)  # after VAR=value assignments
        if not program.startswith(RUNNERS):
            return None, f"not a pyrovae or python command of .venv: {program.split()[0]}"
        if re.search(r"-m\s+pytest\b", p):
            return None, "runs the test suite, which is what runs this"
        if m := PLACEHOLDER.search(p):
            return None, f"placeholder {m.group(0)} for the reader to fill in"
        if "--device cuda" in p and not torch.cuda.is_available():
            return None, "needs CUDA, which this machine lacks"
    return " && ".join(parts), ""


def _cases():
    cases = []
    for block in fenced_blocks(README.read_text()):
        if block.language == "python":
            cases.append(pytest.param(block, id=f"python-line{block.line}",
                                      marks=pytest.mark.slow if "fit(" in block.text else ()))
        elif block.language in BASH:
            for line, command in bash_commands(block):
                slow = " train " in f" {command} "
                cases.append(pytest.param(Block("bash", line, command),
                                          id=f"bash-line{line}",
                                          marks=pytest.mark.slow if slow else ()))
    return cases


CASES = _cases()

CHECKS = '''

# ---- appended by tests/test_readme.py; not part of the README block ----
import json as _json
import math as _math

import numpy as _np
import torch as _torch

_report = {"present": [], "checked": []}
for _name, _value in list(globals().items()):
    if _name.startswith("_"):
        continue
    _report["present"].append(_name)
    if isinstance(_value, _torch.Tensor) and _value.is_floating_point():
        assert _torch.isfinite(_value).all(), f"{_name} holds non-finite values"
    elif type(_value).__name__ == "History":
        _losses = [e["loss"] for e in _value.epochs]
        assert _losses and all(_math.isfinite(v) for v in _losses), f"{_name}: {_losses}"
        assert _losses[-1] < _losses[0], f"{_name}: training did not lower the loss {_losses}"
    elif type(_value).__name__ == "InferenceData":
        _post = _value.posterior
        assert len(_post.data_vars) > 0, f"{_name} has no posterior draws"
        for _v in _post.data_vars.values():
            assert _np.isfinite(_v.values).all(), f"{_name}: non-finite posterior draws"
    else:
        continue
    _report["checked"].append(_name)
print("README-CHECKS " + _json.dumps(_report))
'''


def _assigned(code: str) -> set[str]:
    """Names a block assigns at top level (``x = ...``, ``a, b = ...``, ``def``, ``class``)."""
    names = set()
    for node in ast.parse(code).body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        for t in targets:
            names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _workdir(tmp_path: Path) -> Path:
    """A folder laid out like the repository root, whose .venv is the running environment."""
    for entry in ROOT.iterdir():
        if entry.name in (".git", ".venv", "runs") or entry.name.startswith(".") and \
                entry.name != ".ci":
            continue
        (tmp_path / entry.name).symlink_to(entry)
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    return tmp_path


def test_readme_has_blocks_that_run():
    """The rule above must leave something to run, or this file would pass vacuously."""
    kinds = {c.values[0].language for c in CASES}
    assert "python" in kinds and "bash" in kinds
    assert any(runnable(c.values[0].text)[0] for c in CASES if c.values[0].language == "bash")


def test_block_parser_reads_fences_and_continuations():
    blocks = fenced_blocks("x\n```python\na = 1\n```\n\n```bash\n# c\n.venv/bin/pyrovae a \\\n"
                           "    --b 1\nbash .ci/setup && .venv/bin/python -m pytest\n```\n")
    assert [(b.language, b.line) for b in blocks] == [("python", 2), ("bash", 6)]
    assert blocks[0].text == "a = 1\n"
    cmds = bash_commands(blocks[1])
    assert cmds == [(8, ".venv/bin/pyrovae a --b 1"),
                    (10, "bash .ci/setup && .venv/bin/python -m pytest")]
    assert runnable(cmds[0][1]) == (".venv/bin/pyrovae a --b 1", "")
    assert runnable(cmds[1][1])[0] is None
    assert runnable(".venv/bin/pyrovae train --data mnist:PATH")[0] is None
    assert runnable("PYROVAE_X=1 .venv/bin/python -c 1")[0] == "PYROVAE_X=1 .venv/bin/python -c 1"
    assert runnable("pip install pyrovae")[0] is None
    assert runnable(".venv/bin/torchrun --nproc_per_node 4 -m pyrovae train")[0] is None


def test_import_pyrovae_gives_analysis_on_first_use():
    """README's snippet uses pyrovae.analysis after a plain `import pyrovae`; it is imported on
    first use (matplotlib costs about half a second), with no import cycle either way round."""
    code = ("import sys, pyrovae; assert 'pyrovae.analysis' not in sys.modules; "
            "assert 'analysis' in dir(pyrovae); f = pyrovae.analysis.to_inference_data; "
            "from pyrovae import analysis; assert analysis.to_inference_data is f; "
            "import pyrovae.analysis as a; assert a is analysis; print('ok')")
    for c in (code, "import pyrovae.analysis, pyrovae; print('ok')"):
        r = subprocess.run([sys.executable, "-c", c], env=_env(), capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.parametrize("block", CASES)
def test_readme_block_runs_as_written(block, tmp_path):
    if block.language == "python":
        script = tmp_path / "readme_block.py"
        script.write_text(block.text + CHECKS)
        r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(),
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"README.md line {block.line}:\n{r.stderr[-3000:]}"
        report = json.loads(r.stdout.rsplit("README-CHECKS ", 1)[1])
        missing = _assigned(block.text) - set(report["present"])
        assert not missing, f"the block's {sorted(missing)} do not exist after it ran"
        return
    command, why = runnable(block.text)
    if command is None:
        pytest.skip(f"README.md line {block.line}: {why}")
    work = _workdir(tmp_path)
    for runner in RUNNERS:
        if runner in command and not (work / runner).exists():
            pytest.skip(f"{runner}: the environment running the tests ({sys.prefix}) has none")
    r = subprocess.run(["bash", "-c", command], cwd=work, env=_env(), capture_output=True,
                       text=True, timeout=1800)
    assert r.returncode == 0, f"README.md line {block.line}: {command}\n{r.stderr[-3000:]}"
    for part in command.split("&&"):
        args = shlex.split(part)
        if len(args) > 1 and args[1] == "train" and "--out" in args:
            metrics = json.loads((work / args[args.index("--out") + 1] / "metrics.json")
                                 .read_text())
            test = metrics["test"]
            value = (test.get("log_likelihood") or test["recon_log_prob"])["mean"]
            assert math.isfinite(value), test
            if "elbo" in test:  # L_K >= the ELBO of the same draws (Jensen)
                assert value >= test["elbo"]["mean"], test
