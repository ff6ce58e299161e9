"""Post-processing of a release's stored noisy counts into its released cells (deterministic, free).

Coarsen regions whose noisy selection count is within the noise of an empty region
into one "other" row per day (the sum of their noisy raw counts), then debias -> Norm-Sub
-> round every released row and give its interval (privacy.central). Re-running
it on the same stored counts gives the same cells, which is what the audit checks.
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
#: Releases digested with layout v1 merged regions whose rounded noisy n was below this fixed threshold.
V1_COARSEN_THRESHOLD = 5


def _stored_noisy_grid(release: Release, days: int, regions: int, width: int) -> np.ndarray:
    """The stored noisy counts as a (days, regions, width) grid."""
    try:
        return unpack_counts(release.noisy_counts, days * regions * width).reshape(days, regions, width)
    except ValueError as error:
        raise ApiError("release_unreadable", f"The stored noisy counts of release {release.id} do not decode "
                       f"({error}); ask again with fresh: true for a new, paid answer.", http_status=409)


def _stored_selection(release: Release, days: int, regions: int) -> np.ndarray:
    """The stored selection counts as a (days, regions) grid."""
    try:
        return unpack_counts(release.selection_counts, days * regions).reshape(days, regions)
    except ValueError as error:
        raise ApiError("release_unreadable", f"The stored selection counts of release {release.id} do not decode "
                       f"({error}); ask again with fresh: true for a new, paid answer.", http_status=409)


def _shown_regions(release: Release, spec: MetricSpec, noisy: np.ndarray) -> np.ndarray:
    """(days, regions) mask of the regions shown on their own.

    On the release's selection counts (their own noise) when it has them; releases
    made before them decided on the grid's noisy n, and are re-rendered that way.
    """
    survival = settings.PRIVACY["EMPTY_REGION_SURVIVAL"]
    if release.selection_scale is None:
        return central.shown_regions(spec.oracle, noisy, Fraction(release.noise_scale), survival)
    selection = _stored_selection(release, *noisy.shape[:2])
    return central.selected_regions(selection, Fraction(release.selection_scale), survival)


def _labels_of_cells(labels: list[str] | None, index: np.ndarray) -> list[str] | None:
    return None if labels is None else np.array(labels, dtype=object)[index].tolist()


def released_data(release: Release, spec: MetricSpec, presentation: Presentation) -> ReleasedData:
    """The released data: post-processing of the stored noisy counts, deterministic.

    Cells are columnar: ``counts``, ``unbiased``, ``ci_low`` and ``ci_high`` list
    one entry per value of the metric's domain, in its order. When grouped by
    region, a region is shown only if its noisy selection count exceeds the level
    that an empty region's selection noise passes with probability
    EMPTY_REGION_SURVIVAL; each day's other regions are merged into one "other"
    cell after its shown ones, estimated from their summed noisy grid counts.
    """
    query = query_of_release(release, spec)
    days, regions = grid_axes(query, tuple(release.regions))
    scale = Fraction(release.noise_scale)
    noisy = _stored_noisy_grid(release, len(days), len(regions), central.grid_width(spec.oracle))
    by_region = "region" in query.group_by
    shown = _shown_regions(release, spec, noisy) if by_region else np.ones(noisy.shape[:2], dtype=bool)
    cells = central.coarsen(noisy, shown)
    processed = central.post_process(spec.oracle, cells.rows, scale, cells.noise_terms)
    low, high = central.intervals(processed.unbiased, processed.variance,
                                  presentation.confidence, presentation.simultaneous)
    day_labels = [day.isoformat() for day in days] if "day" in query.group_by else None
    region_labels = [r or UNKNOWN_REGION for r in regions] + [OTHER_REGION] if by_region else None
    return ReleasedData(_labels_of_cells(day_labels, cells.day), _labels_of_cells(region_labels, cells.slot),
                        processed.reports, processed.counts, np.round(low, 2), np.round(high, 2),
                        unbiased=np.round(processed.unbiased, 2))


def _v1_released_data(release: Release, spec: MetricSpec, presentation: Presentation) -> ReleasedData:
    """The data as releases digested with layout v1 showed it, for their audit only.

    Every grid cell post-processed alone; regions whose rounded noisy n was
    below V1_COARSEN_THRESHOLD summed, value by value, into "other" (reports,
    counts, unbiased estimates and variances); no ``unbiased`` column.
    """
    query = query_of_release(release, spec)
    days, regions = grid_axes(query, tuple(release.regions))
    width = central.grid_width(spec.oracle)
    noisy = _stored_noisy_grid(release, len(days), len(regions), width).reshape(-1, width)
    processed = central.post_process(spec.oracle, noisy, Fraction(release.noise_scale))
    shape = (len(days), len(regions))
    by_region = "region" in query.group_by
    small = processed.reports.reshape(shape) < V1_COARSEN_THRESHOLD if by_region else np.zeros(shape, dtype=bool)
    released = np.concatenate([~small, small.any(axis=1, keepdims=True)], axis=1)

    def with_other(column: np.ndarray) -> np.ndarray:
        grid = column.reshape(*shape, *column.shape[1:])
        mask = small.reshape(*shape, *[1] * (grid.ndim - 2))
        return np.concatenate([grid, np.where(mask, grid, 0).sum(axis=1, keepdims=True)], axis=1)[released]

    low, high = central.intervals(with_other(processed.unbiased), with_other(processed.variance),
                                  presentation.confidence, presentation.simultaneous)
    day, slot = np.nonzero(released)
    day_labels = [d.isoformat() for d in days] if "day" in query.group_by else None
    region_labels = [r or UNKNOWN_REGION for r in regions] + [OTHER_REGION] if by_region else None
    return ReleasedData(_labels_of_cells(day_labels, day), _labels_of_cells(region_labels, slot),
                        with_other(processed.reports), with_other(processed.counts), np.round(low, 2),
                        np.round(high, 2))


def postprocessing_verified(release: Release, spec: MetricSpec) -> bool:
    """Whether the stored noisy counts re-render to exactly the data first released (its stored digest).

    Re-rendered with the post-processing of the digest layout the release was
    made under: v2 (today's), else v1 (releases made before it). The layout
    name opens the digested bytes, so a digest matches under one layout only.
    """
    presentation = Presentation(release.confidence, release.simultaneous)
    return any(render(release, spec, presentation).digest() == release.released_digest
               for render in (released_data, _v1_released_data))
