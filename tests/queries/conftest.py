"""The query tests run on a short region axis; their fixtures and helpers are shared (tests/conftest.py)."""

from __future__ import annotations

import pytest

from helpers import REGIONS


@pytest.fixture(autouse=True)
def _short_region_axis(settings):
    """Keep grids small: the region axis is ("", "DE", "US")."""
    settings.PRIVACY = {**settings.PRIVACY, "REGIONS": list(REGIONS)}
