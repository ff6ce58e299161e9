"""The query tests run on a short region axis (tests/conftest.py: ``short_region_axis``)."""

import pytest


@pytest.fixture(autouse=True)
def _short_axis(short_region_axis):
    """Every query test keeps its grids small."""
