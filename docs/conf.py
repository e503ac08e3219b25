"""Sphinx configuration for pyrovae's documentation.

Build (warnings are errors, as in CI)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Nothing here needs the network: there is no intersphinx mapping, the notebooks are rendered
from their saved cells without running, and MathJax is loaded by the reader's browser.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

ROOT = Path(__file__).resolve().parent.parent
# Document this checkout's pyrovae, not whichever copy is installed in the environment.
sys.path.insert(0, str(ROOT))

import pyrovae  # noqa: E402

project = "pyrovae"
author = "The pyrovae authors"
copyright = "2026, The pyrovae authors"
release = version = pyrovae.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",  # Markdown (README.md, CONTRIBUTING.md) and the notebooks; brings myst_parser
]

exclude_patterns = ["_build", "**/.ipynb_checkpoints"]

# autodoc: members in source order, signatures as written. A method we override without a
# docstring would otherwise inherit Pyro's or torch's, whose reST is not ours to fix (and does
# not describe our override).
autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False
autodoc_typehints = "signature"
napoleon_google_docstring = True
napoleon_numpy_docstring = True

# Markdown: $...$ and $$...$$ math as the notebooks write it, and slugs for README headings.
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
# The notebooks are shown as saved; the test suite runs them (tests/test_notebooks.py).
nb_execution_mode = "off"

html_theme = "alabaster"
html_title = f"pyrovae {release}"
html_static_path: list[str] = []


def public_modules(name: str) -> list[str]:
    """``name`` and, if it is a package, every module below it whose dotted path has no part
    starting with ``_``, sorted."""
    module = importlib.import_module(name)
    found = [name]
    if hasattr(module, "__path__"):
        for info in pkgutil.walk_packages(module.__path__, prefix=name + "."):
            if not any(part.startswith("_") for part in info.name.split(".")):
                found.append(info.name)
    return [found[0]] + sorted(found[1:])


class ModuleTree(SphinxDirective):
    """``.. pyrovae-modules:: pyrovae.infer`` documents a module, or a package and each of its
    public modules in a section of its own, with ``automodule``. A module added to a package
    is documented without touching its page.

    Each module shows the members it defines (imported names are documented where they are
    defined, so a name re-exported by a package appears once). ``:exclude-members:`` is passed
    on to every ``automodule``.
    """

    required_arguments = 1
    option_spec = {"exclude-members": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        try:
            names = public_modules(name)
        except ImportError as e:
            raise self.error(f"pyrovae-modules: cannot import {name!r}: {e}") from e
        exclude = self.options.get("exclude-members")
        lines: list[str] = []
        for i, mod in enumerate(names):
            if i:
                lines += [mod, "-" * len(mod), ""]
            lines += [f".. automodule:: {mod}", "   :members:", "   :ignore-module-all:"]
            if exclude:
                lines.append(f"   :exclude-members: {exclude}")
            lines.append("")
        source = self.get_source_info()[0]
        content = StringList(lines, source=source)
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, content, container)
        return container.children


def _lookup(name: str):
    """The object a dotted name under ``pyrovae`` refers to, or None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def resolve_reexport(app, env, node, contnode):
    """Links a reference to a name as a package exports it (``pyrovae.vi.GaussianMixture``,
    or ``GaussianMixture`` written in :mod:`pyrovae.vi`'s docstring) to where the object is
    documented, the module that defines it (``pyrovae.vi.cavi.GaussianMixture``)."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    module = node.get("py:module")
    for name in (target, f"{module}.{target}" if module else None):
        if not name or not name.startswith("pyrovae."):
            continue
        obj = _lookup(name)
        home, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if not (isinstance(home, str) and isinstance(qualname, str)):
            continue
        if f"{home}.{qualname}" != name:
            found = env.get_domain("py").resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], f"{home}.{qualname}", node,
                contnode)
            if found is not None:
                return found
    return None


def setup(app):
    app.add_directive("pyrovae-modules", ModuleTree)
    app.connect("missing-reference", resolve_reexport)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
