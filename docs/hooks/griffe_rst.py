"""A griffe extension that renders gkl_jax's reST-flavoured Google docstrings as Markdown.

gkl_jax's docstrings are Google style (Args/Returns/Raises/Example) with a few reST constructs
that Markdown does not know. This rewrites them, in the docs build only (the source is untouched):

* ``.. math::`` blocks become ``$$ ... $$`` display math (pymdownx.arithmatex);
* an ``Example:`` section is titled ``Examples:``, the title griffe parses as an examples
  section (its ``>>>`` lines become highlighted code instead of Markdown block quotes);
* ``Raises:`` items that the source runs together on one line are split into one per exception;
* ``text::`` followed by an indented block becomes ``text:`` and a fenced ``text`` block (a reST
  literal block; a lone ``::`` line is dropped);
* ``:func:`x```, ``:class:`~gkl_jax.X```, ``:meth:``, ``:attr:``, ``:mod:``, ``:data:``,
  ``:obj:`` roles become *optional* cross-references (mkdocs-autorefs): a link where the target is
  rendered in the API reference, plain code otherwise (never an unresolved-reference warning).
  Bare names are looked up in the ``__all__`` of the docstring's own public package
  (``gkl_jax.interop``, ``gkl_jax.nnx``) and then of ``gkl_jax``.

reST bullet items (2-space continuation) are re-indented to Markdown's 4 spaces first.
Double-backtick literals need nothing: ````x```` is a Markdown code span too.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|obj):`(~?)([^`]+)`")
_MATH = re.compile(r"^(\s*)\.\. math::\s*$")
_LITERAL = re.compile(r"^(\s*)(.*?)::\s*$")
_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)
_RAISES = re.compile(r"^(\s*)Raises:\s*$")
# a second exception run into the previous item's text: "... not an int. ValueError: ..."
_RUN_ON = re.compile(r"(?<=[.)`]) +([A-Z]\w*(?:Error|Exception|Warning)): ")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block(lines: list[str], start: int, base: int) -> tuple[list[str], int]:
    """The indented block that follows line ``start - 1`` (indent > base), dedented; next index."""
    i = start
    while i < len(lines) and not lines[i].strip():
        i += 1
    body: list[str] = []
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
        body.append(lines[i])
        i += 1
    while body and not body[-1].strip():
        body.pop()
        i -= 1
    strip = min((_indent(b) for b in body if b.strip()), default=0)
    return [b[strip:] for b in body], i


def reindent_lists(text: str) -> str:
    """reST bullet items continue at 2 spaces, Markdown's at 4: shift what belongs to an item
    (its continuation lines, and blocks after a blank line) by 2, so that display math, literal
    blocks and later paragraphs of an item stay in it and the list does not end early."""
    out: list[str] = []
    bullet = None  # the indentation of the current bullet item
    loose = False  # whether the item holds a blank line (then the next item needs one before it)
    for line in text.splitlines():
        if not line.strip():
            loose = bullet is not None
        else:
            indent = _indent(line)
            if line.lstrip().startswith(("* ", "- ")) and (bullet is None or indent <= bullet):
                if loose and out and out[-1].strip():
                    out.append("")
                bullet, loose = indent, False
            elif bullet is not None and indent >= bullet + 2:
                line = "  " + line
            elif bullet is not None:
                bullet, loose = None, False
        out.append(line)
    return "\n".join(out)


def _block_pad(previous: list[str], indent: int) -> str:
    """The indentation for a display-math block at reST indentation ``indent``: inside a reST
    bullet item (2-space continuation) Markdown needs 4 spaces to keep the block in the item."""
    for line in reversed(previous):
        if line.strip() and _indent(line) < indent:
            if line.lstrip().startswith(("* ", "- ")):
                return " " * (_indent(line) + 4)
            break
    return " " * indent


def rewrite_blocks(text: str) -> str:
    """``.. math::`` and ``::`` literal blocks to Markdown."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        math = _MATH.match(line)
        literal = None if math else _LITERAL.match(line)
        if math or literal:
            pad = (math or literal).group(1)
            body, nxt = _block(lines, i + 1, len(pad))
            if body:
                if literal:
                    lead = literal.group(2).rstrip()
                    if lead:
                        out.append(f"{pad}{lead}:")
                    out += ["", f"{pad}```text", *(pad + b for b in body), f"{pad}```", ""]
                else:
                    pad = _block_pad(out, len(pad))
                    out += ["", f"{pad}$$", *(pad + b for b in body), f"{pad}$$", ""]
                i = nxt
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


def split_raises(text: str) -> str:
    """One item per exception in ``Raises:`` sections (Google style), also where the source runs
    two together on one line ("TypeError: ... not an int. ValueError: a negative size.")."""
    out: list[str] = []
    base = item = None  # the Raises header's indentation, and its items'
    for line in text.splitlines():
        head = _RAISES.match(line)
        if head:
            base, item = len(head.group(1)), None
        elif base is not None and line.strip():
            if _indent(line) <= base:
                base = item = None  # the section ended
            else:
                item = _indent(line) if item is None else item
                first, *rest = _RUN_ON.split(line)
                out.append(first)
                out += [f"{' ' * item}{n}: {r}" for n, r in zip(rest[::2], rest[1::2], strict=True)]
                continue
        out.append(line)
    return "\n".join(out)


def rewrite_roles(text: str, exports: dict[str, set[str]], home: str) -> str:
    """Sphinx roles to optional autorefs; ``home`` is the public package that owns the text."""

    def resolve(target: str) -> str:
        if target.startswith("gkl_jax"):
            return target
        first = target.split(".")[0]
        for package in (home, "gkl_jax"):
            if first in exports.get(package, ()):
                return f"{package}.{target}"
        return target

    def sub(match: re.Match[str]) -> str:
        short, target = match.group(1), match.group(2).strip()
        title = target.rsplit(".", 1)[-1] if short else target
        return f'<autoref identifier="{resolve(target)}" optional><code>{title}</code></autoref>'

    return _ROLE.sub(sub, text)


class RstToMarkdown(griffe.Extension):
    """Rewrites every docstring of the package once, before mkdocstrings parses it."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        exports: dict[str, set[str]] = {}
        for path in ("", "interop", "nnx"):
            module = pkg[path] if path else pkg
            names = module.exports or ()
            exports[module.path] = {n if isinstance(n, str) else n.name for n in names}
        seen: set[int] = set()
        self._walk(pkg, exports, seen)

    def _walk(self, obj: griffe.Object, exports: dict[str, set[str]], seen: set[int]) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if obj.docstring is not None:
            home = "gkl_jax"
            for sub in ("gkl_jax.interop", "gkl_jax.nnx"):
                if obj.path == sub or obj.path.startswith(sub + "."):
                    home = sub
            text = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
            text = split_raises(rewrite_blocks(reindent_lists(text)))
            obj.docstring.value = rewrite_roles(text, exports, home)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, exports, seen)
