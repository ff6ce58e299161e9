"""Replay a release: prove its noise and its post-processing, cell by cell.

Unseal the DRBG seed with the audit key, re-derive the exact noise, recount the
raw grid as of the release's roll-up epoch (from the count deltas of epochs up to it,
not the current totals), and check that every stored noisy count equals raw +
noise (and, for a release grouped by region, that every stored selection count equals
the cell's raw report count + its selection noise, drawn after the grid's) and that the
released values follow from the noisy counts. The API shows
only the verdicts (:func:`verification`); raw counts and noise are shown by the
operator's command alone (:func:`operator_cells`), run by whoever holds the
audit key and the database.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from cryptography.exceptions import InvalidTag
from django.conf import settings

from privacy import central
from privacy.drbg import DRBG
from privacy.sealing import parse_key, unseal
from telemetry import selectors
from telemetry.catalog import catalog
from deploy.api.errors import ApiError
from telemetry.models import Release
from privacy.epsilon import from_micro
from telemetry.release.codec import unpack_counts
from telemetry.release.grid import build_grid, grid_axes
from telemetry.release.postprocess import postprocessing_verified
from telemetry.release.request import query_of_release


def _release(release_id) -> Release:
    try:
        release = Release.objects.filter(pk=release_id).first()
    except Exception:  # not a UUID
        release = None
    if release is None:
        raise ApiError("unknown_release", "No such release.", http_status=404)
    return release


def _open_seed(release: Release) -> bytes:
    try:
        return unseal(parse_key(settings.AUDIT_KEY), bytes(release.sealed_seed), release.id.bytes)
    except InvalidTag:
        raise ApiError("audit_seal_invalid", "The sealed seed does not open under the audit key for this "
                       "release: it was altered, moved from another release, or the key changed.", http_status=409)


def _raw_counts(release: Release, spec, query) -> np.ndarray:
    """The raw grid as the release counted it: the roll-up deltas of the epochs up to its own."""
    if release.data_epoch is None:
        raise ApiError("audit_data_unavailable", "This release predates roll-up epochs: the raw counts it was "
                       "computed on are not kept, so it cannot be replayed.", http_status=409)
    rows = selectors.recounted_rows(spec, query.start, query.end, release.data_epoch)
    return build_grid(spec, query, tuple(release.regions), rows)


#: The column of a replayed cell holding its selection count (releases grouped by region).
SELECTION_COLUMN = "selection"


@dataclass(frozen=True)
class Replay:
    """A release re-derived from stored data: raw counts, exact noise, the stored noisy counts, and
    whether the released data follows from them.

    One row per grid cell, one column per stored count: the grid's, then, for a
    release with selection counts, the cell's report count n, its selection noise
    and its stored selection count in the last column (``SELECTION_COLUMN``).
    """

    release: Release
    days: list
    regions: list
    columns: list[str]
    raw: np.ndarray
    noise: np.ndarray
    noisy: np.ndarray
    postprocessing_verified: bool

    @property
    def cell_verified(self) -> np.ndarray:
        return (self.noisy == self.raw + self.noise).all(axis=1)


def replay_release(release_id) -> Replay:
    """Unseal the seed, re-derive the noise, recount the raw grid at the release's epoch, re-render."""
    release = _release(release_id)
    spec = catalog.by_id(release.metric_id)
    query = query_of_release(release, spec)
    seed = _open_seed(release)
    raw = _raw_counts(release, spec, query)
    selection_scale = None if release.selection_scale is None else Fraction(release.selection_scale)
    # The draw order of central.release_noise: the grid's noise, then the selection noise.
    noise, selection_noise = central.release_noise(raw.shape, Fraction(release.noise_scale), selection_scale,
                                                   DRBG(seed))
    noisy = _unpacked(release.noisy_counts, raw.size, "noisy counts").reshape(raw.shape)
    columns = list(spec.domain) + (["n"] if central.counts_n_separately(spec.oracle) else [])
    if selection_noise is not None:
        selection = _unpacked(release.selection_counts, len(raw), "selection counts")
        raw = np.column_stack([raw, central.report_counts(spec.oracle, raw)])
        noise, noisy = np.column_stack([noise, selection_noise]), np.column_stack([noisy, selection])
        columns.append(SELECTION_COLUMN)
    days, regions = grid_axes(query, tuple(release.regions))
    # Post-processing is deterministic: the stored noisy counts must re-render to exactly what was released.
    return Replay(release, days, regions, columns, raw, noise, noisy, postprocessing_verified(release, spec))


def _unpacked(blob, size: int, what: str) -> np.ndarray:
    try:
        return unpack_counts(blob if blob is not None else b"", size)
    except ValueError as error:
        raise ApiError("audit_counts_unreadable", f"The stored {what} do not decode for this release's grid "
                       f"({error}): they were altered or written in another format.", http_status=409)


def _cell_labels(replay: Replay) -> list[dict]:
    return [{"day": day.isoformat() if day else None, "region": region}
            for day in replay.days for region in replay.regions]


def verification(replay: Replay, data_version: str | None) -> dict:
    """What the API shows of a replay: pass or fail per cell, digests, the seal check. No raw count, noise
    or noisy count: any of them, with the released data, would give the raw grid away."""
    verified = replay.cell_verified
    release = replay.release
    return {
        "release_id": str(release.id),
        "data_version": data_version,
        "noise_scale": release.noise_scale,
        "sensitivity": release.sensitivity,
        "epsilon": float(from_micro(release.epsilon_micro)),
        "seal_verified": True,
        "released_digest": release.released_digest,
        "noisy_counts_digest": hashlib.sha256(bytes(release.noisy_counts)).hexdigest(),
        "selection_scale": release.selection_scale,
        "selection_counts_digest": None if release.selection_counts is None
        else hashlib.sha256(bytes(release.selection_counts)).hexdigest(),
        "cells_checked": int(verified.size),
        "noise_verified": bool(verified.all()),
        "postprocessing_verified": replay.postprocessing_verified,
        "cells": [{**labels, "verified": bool(ok)} for labels, ok in zip(_cell_labels(replay), verified.tolist())],
    }


def operator_cells(replay: Replay) -> list[dict]:
    """Every cell's raw, noise and noisy counts: for the operator's own tool only (manage.py verify_release)."""
    return [{**labels, "columns": replay.columns, "raw": raw.tolist(), "noise": noise.tolist(), "noisy": noisy.tolist(),
             "verified": bool(ok)}
            for labels, raw, noise, noisy, ok in zip(_cell_labels(replay), replay.raw, replay.noise, replay.noisy,
                                                     replay.cell_verified.tolist())]
