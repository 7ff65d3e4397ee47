"""Copies the speed tables of the last ``python -m benchmarks`` run into README.md.

``python -m benchmarks.readme`` replaces the text between ``<!-- speed -->`` and
``<!-- /speed -->`` in README.md with the sections listed in :data:`SECTIONS`, read from
``benchmarks/results/<name>.md`` (written by that run), under the run's description of the
machine. Nothing is measured here: the README shows the figures of one run of the one command.
"""

from __future__ import annotations

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SECTIONS = ("diag_large", "diag_small", "vae_step", "eager", "full", "knn_speed")
START, END = "<!-- speed -->", "<!-- /speed -->"


def section_text(name: str, results: pathlib.Path = RESULTS) -> tuple[str, str]:
    """``(machine header, body)`` of one results file, headings one level down."""
    text = (results / f"{name}.md").read_text()
    header, _, body = text.partition("\n\n")
    if not header.startswith("Machine:"):
        raise ValueError(f"{name}.md does not start with the run's machine line")
    body = re.sub(r"^(#+) ", r"#\1 ", body.strip(), flags=re.M)
    return header.strip(), body


def block(results: pathlib.Path = RESULTS) -> str:
    headers, bodies = [], []
    for name in SECTIONS:
        header, body = section_text(name, results)
        headers.append(header)
        bodies.append(body)
    if len(set(headers)) != 1:  # one run writes one header into every file
        raise ValueError("the results files come from different runs: " + repr(set(headers)))
    return "\n\n".join([f"{headers[0]}", *bodies])


def main(readme: pathlib.Path = ROOT / "README.md", results: pathlib.Path = RESULTS) -> int:
    text = readme.read_text()
    start, end = text.index(START) + len(START), text.index(END)
    readme.write_text(text[:start] + "\n" + block(results) + "\n" + text[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
