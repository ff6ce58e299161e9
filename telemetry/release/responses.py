"""The JSON of query answers and release listings: ε and δ as JSON numbers, everywhere."""

from __future__ import annotations

import orjson

from privacy.epsilon import from_micro
from telemetry.catalog import MetricSpec
from telemetry.models import Release
from telemetry.release.request import Presentation

#: What each figure of a cell is (docs/api.md, "Queries"; docs/privacy.md, "Post-processing").
ESTIMATES = {
    "reports": "noisy report count of the cell, rounded, at least 0",
    "counts": "consistent estimate: Norm-Sub of unbiased, rounded; non-negative integers summing to reports",
    "unbiased": "unbiased estimate of each count (debiased noisy counts); can be negative",
    "ci_low/ci_high": "normal-approximation interval around unbiased at presentation.confidence "
                      "(Bonferroni over the values if simultaneous), clipped below at 0",
}


def dumps(response) -> bytes:
    """JSON of a query response; its cells hold numpy rows, which orjson writes directly."""
    return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)


def privacy_json(release: Release, remaining, resets_at, delta, cached: bool) -> dict:
    return {
        "epsilon": float(from_micro(release.epsilon_micro)),
        "delta": float(delta),
        "differential_privacy": True,
        "ldp_corrected": True,
        "budget_remaining": float(remaining),
        "resets_at": resets_at.isoformat(),
        "cached": cached,
    }


def release_query_json(release: Release) -> dict:
    """The canonical query of a release, with ε as a number (releases stored before that held a string)."""
    return {**release.query, "epsilon": float(from_micro(release.epsilon_micro))}


def query_response(release: Release, spec: MetricSpec, answer: dict, presentation: Presentation,
                   data_version: str | None) -> dict:
    """``data_version`` is the opaque token of the roll-up the release counted: equal tokens, same data."""
    return {
        **answer,
        "values": list(spec.domain),
        "estimates": ESTIMATES,
        "presentation": {"confidence": presentation.confidence, "simultaneous": presentation.simultaneous},
        "release": {"id": str(release.id), "created_at": release.created_at.isoformat(),
                    "data_version": data_version, "query": release_query_json(release)},
    }


def release_json(release: Release, ledger_entry_ids: list[int], data_version: str | None) -> dict:
    """One release in the admins' listing."""
    return {
        "id": str(release.id),
        "analyst": release.analyst.username,
        "query": release_query_json(release),
        "epsilon": float(from_micro(release.epsilon_micro)),
        "sensitivity": release.sensitivity,
        "noise_scale": release.noise_scale,
        "selection_scale": release.selection_scale,
        "data_version": data_version,
        "created_at": release.created_at.isoformat(),
        "ledger_entries": ledger_entry_ids,
    }
