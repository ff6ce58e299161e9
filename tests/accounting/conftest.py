"""The budget tests run queries on a short region axis (tests/conftest.py: ``short_region_axis``)."""

import pytest


@pytest.fixture(autouse=True)
def _short_axis(short_region_axis):
    """Every budget test keeps its grids small."""
