"""Replay a release: prove its noise and its post-processing, cell by cell.

Unseal the DRBG seed with the audit key, re-derive the exact noise, recount
the raw reports as of the release's watermark (from the insert-only report
table, not the roll-up), and check that every stored noisy count equals
raw + noise and that the released values follow from the noisy counts.
"""

from __future__ import annotations

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


def verify_release(release_id) -> dict:
    release = _release(release_id)
    spec = catalog.by_id(release.metric_id)
    query = query_of_release(release, spec)
    regions = tuple(release.regions)
    try:
        seed = unseal(parse_key(settings.AUDIT_KEY), bytes(release.sealed_seed), release.id.bytes)
    except InvalidTag:
        raise ApiError("audit_seal_invalid", "The sealed seed does not open under the audit key for this "
                       "release: it was altered, moved from another release, or the key changed.", http_status=409)
    raw = build_grid(spec, query, regions, selectors.recounted_rows(spec, query.start, query.end, release.watermark))
    scale = Fraction(release.noise_scale)
    noise = central.add_noise(np.zeros_like(raw), scale, DRBG(seed))[1]
    try:
        noisy = unpack_counts(release.noisy_counts, raw.size).reshape(raw.shape)
    except ValueError as error:
        raise ApiError("audit_counts_unreadable", f"The stored noisy counts do not decode for this release's grid "
                       f"({error}): they were altered or written in another format.", http_status=409)
    matches = noisy == raw + noise
    days, region_list = grid_axes(query, regions)
    columns = list(spec.domain) + (["n"] if central.counts_n_separately(spec.oracle) else [])
    cells = [
        {
            "day": day.isoformat() if day else None,
            "region": region,
            "columns": columns,
            "raw": raw[i].tolist(),
            "noise": noise[i].tolist(),
            "noisy": noisy[i].tolist(),
            "noisy_equals_raw_plus_noise": bool(matches[i].all()),
        }
        for i, (day, region) in enumerate((d, r) for d in days for r in region_list)
    ]
    return {
        "release_id": str(release.id),
        "watermark": release.watermark,
        "noise_scale": release.noise_scale,
        "sensitivity": release.sensitivity,
        "epsilon": float(from_micro(release.epsilon_micro)),
        "cells_checked": int(matches.shape[0]),
        "noise_verified": bool(matches.all()),
        # Post-processing is deterministic: the stored noisy counts must re-render to exactly what was released.
        "postprocessing_verified": postprocessing_verified(release, spec),
        "cells": cells,
    }
