"""The documentation builds with warnings as errors, and documents what it claims to.

One Sphinx build (``-j 1``, notebooks not executed, about 20 s on two cores) into a temporary
folder; the tests then read its HTML. Which modules need documenting is computed from the
source tree, so a new package or module without its page fails here.
"""

import ast
import html
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx", reason="sphinx is not installed (it is in the dev extra)")
pytest.importorskip("myst_nb", reason="myst-nb is not installed (it is in the dev extra)")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE = ROOT / "pyrovae"


def _public(name: str) -> bool:
    return not name.startswith("_")


def _modules_below(path: Path, prefix: str) -> list[str]:
    """Dotted names of the public modules in the package at ``path``, found without importing
    anything (so this sees the checkout, whichever pyrovae the environment has installed)."""
    found = []
    for info in pkgutil.iter_modules([str(path)]):
        if _public(info.name):
            found.append(prefix + info.name)
            if info.ispkg:
                found += _modules_below(path / info.name, f"{prefix}{info.name}.")
    return found


TOP_LEVEL = [info.name for info in pkgutil.iter_modules([str(PACKAGE)]) if _public(info.name)]
ALL_MODULES = _modules_below(PACKAGE, "pyrovae.")


@pytest.fixture(scope="module")
def html_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-j", "1", "-q", "-b", "html",
           "-d", str(out / "doctrees"), str(DOCS), str(out / "html")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout[-4000:]}\n{proc.stderr}"
    assert "WARNING" not in proc.stderr, proc.stderr
    return out / "html"


def _page(html_dir: Path, name: str) -> str:
    path = html_dir / name
    assert path.is_file(), f"no page {name} in the built docs"
    return path.read_text(encoding="utf-8")


def _object_ids(page: str) -> set[str]:
    """The full names of the objects a page documents (autodoc's anchors)."""
    return set(re.findall(r'<dt class="sig sig-object py" id="([^"]+)"', page))


_SMART_QUOTES = str.maketrans("\u2018\u2019\u201c\u201d", "''\"\"")


def _text(fragment: str) -> str:
    """The text of an HTML fragment, whitespace collapsed, Sphinx's curly quotes made plain."""
    text = html.unescape(re.sub(r"<[^>]+>", "", fragment)).translate(_SMART_QUOTES)
    return " ".join(text.split())


def test_the_package_has_the_layout_this_file_expects():
    # guards the discovery below: were it to find nothing, the page checks would pass vacuously
    assert {"nn", "models", "infer", "train"} <= set(TOP_LEVEL)
    assert "pyrovae.infer.tc" in ALL_MODULES and "pyrovae.models.vae" in ALL_MODULES


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_every_package_and_top_level_module_has_a_page_documenting_objects(html_dir, name):
    page = _page(html_dir, f"api/{name}.html")
    assert _object_ids(page), f"docs/api/{name}.rst documents no object"


def test_every_module_inside_a_package_is_documented(html_dir):
    anchors = set()
    for page in (html_dir / "api").glob("*.html"):
        anchors |= set(re.findall(r'id="module-([\w.]+)"', page.read_text(encoding="utf-8")))
    nested = [m for m in ALL_MODULES if m.count(".") > 1]
    missing = sorted(set(nested) - anchors)
    assert not missing, f"modules with no automodule in docs/api/: {missing}"


def test_pages_document_the_public_names(html_dir):
    train = _object_ids(_page(html_dir, "api/train.html"))
    assert {"pyrovae.fit", "pyrovae.History", "pyrovae.TrainState"} <= train
    assert "pyrovae.Callback" in _object_ids(_page(html_dir, "api/callbacks.html"))
    infer = _object_ids(_page(html_dir, "api/infer.html"))
    assert {"pyrovae.infer.tc.TraceTC_ELBO", "pyrovae.infer.registry.make_loss"} <= infer
    assert "pyrovae.models.vae.VAE" in _object_ids(_page(html_dir, "api/models.html"))
    # the trainer's own names are documented once, under pyrovae, not again under pyrovae.train
    assert not {n for n in train if re.fullmatch(r"pyrovae\.train(\.\w+)*\.fit", n)}
    # cross-references resolve to the objects' anchors: from prose, and from docstrings that
    # name a class as its package exports it, in full (pyrovae.data.DSprites, defined in
    # pyrovae.data.dsprites) or inside the package (GaussianMixture in pyrovae.vi's docstring)
    assert 'href="api/train.html#pyrovae.fit"' in _page(html_dir, "index.html")
    assert 'href="data.html#pyrovae.data.dsprites.DSprites"' in _page(html_dir, "api/metrics.html")
    assert 'href="#pyrovae.vi.cavi.GaussianMixture"' in _page(html_dir, "api/vi.html")


def _tc_docstring_math() -> tuple[str, str]:
    """The first ``.. math::`` block and the first ``:math:`` role of pyrovae/infer/tc.py's
    module docstring, read from the source."""
    doc = ast.get_docstring(ast.parse((PACKAGE / "infer" / "tc.py").read_text("utf-8")))
    block = re.search(r"^\.\. math::\n\n((?:[ ]+\S.*\n|\n)+)", doc + "\n", re.M)
    role = re.search(r":math:`([^`]*\\[^`]*)`", doc)  # one with a TeX command in it
    assert block and role, "pyrovae/infer/tc.py's docstring no longer has the math tested here"
    return " ".join(block.group(1).split()), " ".join(role.group(1).split())


def test_docstring_math_renders_as_mathjax(html_dir):
    page = _page(html_dir, "api/infer.html")
    block, role = _tc_docstring_math()
    displays = [_text(m) for m in re.findall(
        r'<div class="math notranslate nohighlight">(.*?)</div>', page, re.S)]
    inlines = [_text(m) for m in re.findall(
        r'<span class="math notranslate nohighlight">(.*?)</span>', page, re.S)]
    assert rf"\[{block}\]" in displays
    assert rf"\({role}\)" in inlines
    assert re.search(r'<script [^>]*src="[^"]*mathjax[^"]*"', page), "MathJax is not loaded"


def test_no_docstring_markup_is_left_unparsed(html_dir):
    # ``name``s (no escaped space before the s) does not end the literal: docutils pairs the
    # backquotes with the next literal's, silently, and the rendered text shows them. (The
    # Markdown pages are left out: CONTRIBUTING.md shows this very mistake as code.)
    bad = []
    for page in sorted((html_dir / "api").glob("*.html")):
        text = page.read_text(encoding="utf-8")
        for literal in re.findall(r'<code class="docutils literal notranslate">(.*?)</code>',
                                  text, re.S):
            if "``" in _text(literal) or ":math:" in _text(literal):
                bad.append(f"{page.relative_to(html_dir)}: {_text(literal)[:80]!r}")
        # ":param a, b:" documents b with the type "a," (one field per parameter)
        for item in re.findall(r"<li><p><strong>\w+</strong>.*?</p></li>", text, re.S):
            if re.match(r"\w+ \([^)]*,\) ", _text(item)):
                bad.append(f"{page.relative_to(html_dir)}: {_text(item)[:80]!r}")
    assert not bad, "\n".join(bad)


def test_guide_includes_every_readme_section(html_dir):
    headings = re.findall(r"^##+ (.+)$", (ROOT / "README.md").read_text("utf-8"), re.M)
    assert headings
    page = _page(html_dir, "guide.html")
    rendered = {_text(h).rstrip("¶") for h in re.findall(r"<h[2-6]>(.*?)</h[2-6]>", page)}
    missing = {h.replace("`", "").strip() for h in headings} - rendered
    assert not missing, f"README sections missing from the guide page: {sorted(missing)}"


def test_every_notebook_is_included_unexecuted(html_dir):
    import nbformat

    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        page = _page(html_dir, f"notebooks/{path.stem}.html")
        nb = nbformat.read(path, as_version=4)
        title = re.search(r"^# (.+)$", nb.cells[0].source, re.M).group(1)
        h1 = re.search(r"<h1>(.*?)</h1>", page, re.S)
        assert h1 and _text(h1.group(1)).rstrip("¶") == title
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert page.count('class="cell docutils container"') == len(code)
        assert "cell_output" not in page, f"{path.name} was rendered with outputs"
