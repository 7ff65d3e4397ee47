"""Test configuration: strict rank promotion everywhere, and shared fixtures."""

import jax
import pytest
from hypothesis import settings

jax.config.update("jax_numpy_rank_promotion", "raise")

# Property tests are derandomized so that CI runs are reproducible; each test's own
# @settings(max_examples=...) still applies.
settings.register_profile("gkl_jax", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("gkl_jax")


@pytest.fixture
def x64():
    """Runs the test body with float64 enabled (restored afterwards)."""
    with jax.enable_x64(True):
        yield
