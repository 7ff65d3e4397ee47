"""The documentation site's sources (docs/, mkdocs.yml): complete and runnable.

`mkdocs build --strict` runs in .ci/run, not here. These tests check what the build cannot:
that the API reference lists every public name, and that every Python example on the site's
pages runs (each page's blocks in order, in one namespace, like a reader pasting them).
"""

import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API_SOURCES = "\n".join(p.read_text() for p in sorted((DOCS / "api").glob("*.md")))
PAGES = sorted(p for p in DOCS.glob("*.md"))

# A fence at column 0; a block preceded by a "<!-- skip-test: reason -->" line is shown, not run
# (it needs trained models or data the page only describes).
_BLOCK = re.compile(r"(<!-- skip-test[^\n]*-->\n)?^```python\n(.*?)^```$", re.M | re.S)


@pytest.mark.parametrize(
    "package", ["gkl_jax", "gkl_jax.nnx", "gkl_jax.interop", "gkl_jax.sharding"]
)
def test_api_reference_lists_every_public_name(package):
    module = importlib.import_module(package)
    public = [n for n in module.__all__ if not n.startswith("__")]
    missing = [n for n in public if f"::: {package}.{n}\n" not in API_SOURCES + "\n"]
    assert not missing, f"add to docs/api/*.md: {', '.join(f'::: {package}.{n}' for n in missing)}"


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [p.relative_to(DOCS).as_posix() for p in (*PAGES, *(DOCS / "api").glob("*.md"))]
    assert [p for p in pages if f": {p}\n" not in nav] == []


def _blocks(page: pathlib.Path) -> list[str]:
    return [m.group(2) for m in _BLOCK.finditer(page.read_text()) if not m.group(1)]


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p)], ids=lambda p: p.stem)
def test_page_examples_run(page):
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, block in enumerate(_blocks(page)):
        code = compile(block, f"{page.relative_to(ROOT)} (python block {i + 1})", "exec")
        exec(code, namespace)  # the documentation's own examples
