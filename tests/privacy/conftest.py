"""Fixtures of the privacy tests."""

from __future__ import annotations

import pytest

from privacy import pii


@pytest.fixture(params=["c", "python"])
def pii_engine(request, monkeypatch):
    """Runs a PII test twice: strippers made in it use the C engine (privacy/_pii_native.c), then Python's only."""
    if request.param == "python":
        monkeypatch.setattr(pii, "_NATIVE", None)
    elif pii._pii_native is None:
        pytest.skip("privacy._pii_native is not built here")
    else:
        assert pii._NATIVE is not None, "privacy._pii_native is built but ports other patterns than pii.py's"
    assert (pii.PiiStripper()._native is None) == (request.param == "python")
    return request.param
