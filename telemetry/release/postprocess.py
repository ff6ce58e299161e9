"""Post-processing of a release's stored noisy counts into its released cells (deterministic, free).

Debias -> Norm-Sub -> round (privacy.central), then coarsen small regions into
"other" on the noisy totals, then intervals. Re-running it on the same stored
counts gives the same cells, which is what the audit checks.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from django.conf import settings

from deploy.api.errors import ApiError
from privacy import central
from telemetry.catalog import MetricSpec
from telemetry.models import Release
from telemetry.release.codec import unpack_counts
from telemetry.release.grid import grid_axes
from telemetry.release.released import ReleasedData
from telemetry.release.request import Presentation, query_of_release

UNKNOWN_REGION, OTHER_REGION = "unknown", "other"


def _with_other(column: np.ndarray, small: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """The released rows of a (days, regions, ...) column: each day's shown regions, then, if it has
    any small region, their sum as its "other" cell."""
    if not small.any():  # every grid cell is shown as it is
        return column.reshape(-1, *column.shape[2:])
    merged = small.reshape(*small.shape, *[1] * (column.ndim - 2))
    other = np.where(merged, column, 0).sum(axis=1, keepdims=True)
    return np.concatenate([column, other], axis=1)[shown]


def _stored_noisy_counts(release: Release, size: int) -> np.ndarray:
    try:
        return unpack_counts(release.noisy_counts, size)
    except ValueError as error:
        raise ApiError("release_unreadable", f"The stored noisy counts of release {release.id} do not decode "
                       f"({error}); ask again with fresh: true for a new, paid answer.", http_status=409)


def released_data(release: Release, spec: MetricSpec, presentation: Presentation) -> ReleasedData:
    """The released data: post-processing of the stored noisy counts, deterministic.

    Cells are columnar: ``counts``, ``ci_low`` and ``ci_high`` list one entry per
    value of the metric's domain, in its order. Regions whose noisy total is below
    COARSEN_THRESHOLD are summed into one "other" cell per day, after that day's
    other regions.
    """
    query = query_of_release(release, spec)
    days, regions = grid_axes(query, tuple(release.regions))
    shape, width = (len(days), len(regions)), central.grid_width(spec.oracle)
    noisy = _stored_noisy_counts(release, shape[0] * shape[1] * width).reshape(-1, width)
    processed = central.post_process(spec.oracle, noisy, Fraction(release.noise_scale))
    reports = processed.reports.reshape(shape)
    small = central.coarsen_mask(reports, settings.PRIVACY["COARSEN_THRESHOLD"]) if "region" in query.group_by \
        else np.zeros(shape, dtype=bool)
    shown = np.concatenate([~small, small.any(axis=1, keepdims=True)], axis=1)  # (days, regions + "other")

    def released(column: np.ndarray) -> np.ndarray:
        return _with_other(column.reshape(*shape, *column.shape[1:]), small, shown)

    low, high = central.intervals(released(processed.unbiased), released(processed.variance),
                                  presentation.confidence, presentation.simultaneous)
    day_of_cell, slot_of_cell = np.nonzero(shown)
    day_labels = [day.isoformat() for day in days] if "day" in query.group_by else None
    region_labels = [r or UNKNOWN_REGION for r in regions] + [OTHER_REGION] if "region" in query.group_by else None
    return ReleasedData(_labels_of_cells(day_labels, day_of_cell), _labels_of_cells(region_labels, slot_of_cell),
                        released(processed.reports), released(processed.counts), np.round(low, 2), np.round(high, 2))


def _labels_of_cells(labels: list[str] | None, index: np.ndarray) -> list[str] | None:
    return None if labels is None else np.array(labels, dtype=object)[index].tolist()

