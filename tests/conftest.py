"""Test configuration: strict rank promotion, a persistent compilation cache, shared fixtures."""

import gc
import os
import pathlib

import jax
import pytest
from hypothesis import settings

# run in a subprocess with 8 simulated devices by tests/test_sharding.py, never imported here
collect_ignore = ["sharded_checks.py"]

jax.config.update("jax_numpy_rank_promotion", "raise")

# JAX's persistent compilation cache, shared by repeated runs and by the pytest-xdist workers.
# Configured at import of this conftest, before any test module is imported or compiles anything.
# Every executable is cached, however fast it compiled and however small it is.
_CACHE_DIR = os.environ.get("GKL_JAX_TEST_CACHE") or str(
    pathlib.Path(__file__).resolve().parents[1] / ".jax_cache"
)
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

# Property tests are derandomized so that CI runs are reproducible; each test's own
# @settings(max_examples=...) still applies.
settings.register_profile("gkl_jax", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("gkl_jax")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Frees every compiled program after each test module (``jax.clear_caches``).

    Each XLA:CPU executable that stays alive keeps its code mapped; a worker that runs a few
    hundred test modules' programs passed 40000 memory mappings at 40% of the suite, and at the
    kernel's limit (``vm.max_map_count``, 65530 by default) the next compilation crashes the
    process (a segmentation fault inside XLA's compiler). Programs needed again come back from
    the persistent compilation cache."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture
def x64():
    """Runs the test body with float64 enabled (restored afterwards)."""
    with jax.enable_x64(True):
        yield


def pytest_collection_modifyitems(config, items):
    """Under the jaxtyping import hook, deselect the ``invalid_input`` tests.

    Those tests check gkl_jax's own error messages for bad shapes and dtypes; with the hook on,
    the annotations reject such calls first (with jaxtyping's message), so they run in the
    README's second pytest invocation, without the hook. Everything else runs under the hook, so
    a wrong annotation fails a test.
    """
    if not config.getoption("jaxtyping_packages", default=None):
        return
    keep = [item for item in items if item.get_closest_marker("invalid_input") is None]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
