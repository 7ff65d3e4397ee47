"""gkl_jax and gkl_jax.interop import no peer library, work with the peers blocked, and register
a library's converters when its objects first arrive; the README's interop snippet runs."""

import pathlib
import re
import subprocess
import sys

import pytest

from tests.interop.cases import installed

ROOT = pathlib.Path(__file__).resolve().parents[2]
PEERS = ("distrax", "tensorflow_probability", "numpyro")


def _run(code):
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


_BLOCKED = f"""
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {PEERS!r}:
            raise ImportError(f"blocked: {{name}}")
        return None

sys.meta_path.insert(0, Block())
import jax, jax.numpy as jnp
import gkl_jax
import gkl_jax.interop
from gkl_jax.interop import as_gaussian, to_distrax

p = gkl_jax.DiagGaussian(jnp.zeros(3), jnp.zeros(3))
q = gkl_jax.DiagGaussian(jnp.ones(3), jnp.zeros(3))
assert float(gkl_jax.kl(p, q)) == 1.5
assert float(gkl_jax.jeffreys(p.to_full(), q)) == 3.0
est = gkl_jax.kl_mc(jax.random.key(0), p, q.log_prob, num_samples=64)  # a callable q
assert abs(float(est.value) - 1.5) < 1e-4, est
assert as_gaussian(p) is p
try:
    as_gaussian(object())
except TypeError as e:
    assert "as_gaussian: no converter for builtins.object" in str(e), e
else:
    raise AssertionError("no TypeError")
try:
    to_distrax(p)
except ImportError as e:
    assert 'pip install "gkl_jax[interop]"' in str(e), e
else:
    raise AssertionError("no ImportError")
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in {PEERS!r})
assert not loaded, loaded
print("ok")
"""


def test_works_with_the_peers_blocked():
    assert _run(_BLOCKED).strip().endswith("ok")


_LAZY = f"""
import sys
import jax.numpy as jnp
import gkl_jax, gkl_jax.interop
from gkl_jax._src.interop_hook import converters
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in {PEERS!r})
assert not loaded, loaded
import numpyro.distributions as nd  # imported after gkl_jax.interop: registered on first use
q = gkl_jax.DiagGaussian(jnp.ones(3), jnp.zeros(3))
assert converters.lookup(nd.Normal) is None
assert float(gkl_jax.kl(nd.Normal(jnp.zeros(3), 1.0).to_event(1), q)) == 1.5
assert converters.lookup(nd.Normal) is not None
assert "distrax" not in sys.modules  # only the library in use
print("ok")
"""


def test_interop_imports_no_peer_and_registers_on_first_use():
    pytest.importorskip("numpyro")
    assert _run(_LAZY).strip().endswith("ok")


def test_readme_interop_snippet_runs():
    for library in ("distrax", "tfp", "numpyro"):
        if not installed(library):
            pytest.skip(f"{library} is not installed")
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- interop -->\s*```python\n(.*?)```", readme, re.S)
    assert block is not None, "README.md lost its interop snippet"
    exec(compile(block.group(1), "README.md", "exec"), {})
