"""The package surface: a flat public API, no optional dependency imported, typed."""

import importlib.resources
import subprocess
import sys
import types

import pytest

import gkl_jax

OPTIONAL = ["flax", "optax", "distrax", "tensorflow_probability", "numpyro", "orbax", "torch"]

_IMPORT_CHECK = f"""
import sys, types
import gkl_jax

optional = {OPTIONAL!r}
loaded = sorted(m for m in sys.modules if m.split(".")[0] in optional)
assert not loaded, f"import gkl_jax imported {{loaded}}"
for name in gkl_jax.__all__:
    assert hasattr(gkl_jax, name), name
# no public submodule attributes: gkl_jax.kl is the function, not the gkl_jax.kl module
public_modules = sorted(
    n for n, v in vars(gkl_jax).items()
    if isinstance(v, types.ModuleType) and not n.startswith("_")
)
assert public_modules == [], public_modules
assert callable(gkl_jax.kl) and not isinstance(gkl_jax.kl, types.ModuleType)
# using the API does not pull them in either
import jax.numpy as jnp
p = gkl_jax.DiagGaussian(jnp.zeros(3), jnp.zeros(3))
float(gkl_jax.kl(p, p))
float(gkl_jax.kl(p.to_full(), p))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in optional)
assert not loaded, f"using gkl_jax imported {{loaded}}"
print("ok")
"""


def _run(code):
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


def test_import_pulls_in_no_optional_dependency_and_exposes_functions():
    assert _run(_IMPORT_CHECK).strip().endswith("ok")


def test_nnx_subpackage_is_the_only_public_submodule():
    pytest.importorskip("flax")
    code = """
import types
import gkl_jax
import gkl_jax.nnx
mods = sorted(
    n for n, v in vars(gkl_jax).items()
    if isinstance(v, types.ModuleType) and not n.startswith("_")
)
assert mods == ["nnx"], mods
assert callable(gkl_jax.kl) and not isinstance(gkl_jax.kl, types.ModuleType)
assert set(gkl_jax.nnx.__all__) == {"ELBOTerms", "GaussianHead", "MixturePrior", "TwinVAE", "VAE"}
print("ok")
"""
    assert _run(code).strip() == "ok"


def test_all_is_sorted_and_unique():
    assert list(gkl_jax.__all__) == sorted(set(gkl_jax.__all__))


@pytest.mark.parametrize("name", [n for n in gkl_jax.__all__ if n != "__version__"])
def test_public_names_resolve_to_gkl_jax_objects(name):
    obj = getattr(gkl_jax, name)
    assert not isinstance(obj, types.ModuleType)
    assert obj.__module__.startswith("gkl_jax"), (name, obj.__module__)
    assert callable(obj)
    assert obj.__doc__, f"{name} has no docstring"


def test_version_is_a_string():
    assert isinstance(gkl_jax.__version__, str)
    assert all(part.isdigit() for part in gkl_jax.__version__.split(".")[:2])


def test_private_modules_are_not_exported():
    assert not any(n.startswith("_") and n != "__version__" for n in gkl_jax.__all__)
    assert "_src" not in gkl_jax.__all__


def test_ships_py_typed():
    marker = importlib.resources.files("gkl_jax").joinpath("py.typed")
    assert marker.is_file()


def test_py_typed_is_declared_as_package_data():
    import pathlib
    import tomllib

    pyproject = pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml"
    config = tomllib.loads(pyproject.read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["gkl_jax"]
