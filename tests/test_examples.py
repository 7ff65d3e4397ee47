"""The examples and the README usage snippet run and say what they claim."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_quickstart_runs_and_beats_the_textbook_formula():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    assert "KL(a||b)" in out and "Jeffreys" in out and "Per-dimension" in out
    rows = out.split("Nearly identical encoders")[1].strip().splitlines()[2:]
    for row in rows:
        _, ours, textbook, ref = (float(v) for v in row.split())
        assert abs(ours - ref) <= 1e-5 * ref
        assert abs(textbook - ref) > 0.1 * ref  # the failure the library exists to fix


def test_readme_usage_snippet_runs():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- usage -->\s*```python\n(.*?)```", readme, re.S)
    assert block is not None, "README.md lost its usage snippet"
    exec(compile(block.group(1), "README.md", "exec"), {})
