"""The data-independent grid of a query: raw counts per (day, region) cell, zeros included."""

from __future__ import annotations

import numpy as np

from privacy import central
from telemetry.catalog import MetricSpec
from telemetry.release.request import CanonicalQuery
from telemetry.selectors import CountRows


def grid_axes(query: CanonicalQuery, regions: tuple[str, ...]) -> tuple[list, list]:
    days = query.days() if "day" in query.group_by else [None]
    return days, (list(regions) if "region" in query.group_by else [None])


def build_grid(spec: MetricSpec, query: CanonicalQuery, regions: tuple[str, ...],
               rows: CountRows) -> np.ndarray:
    """Raw counts on the full grid, (days x regions) rows by width columns, zeros included.

    Regions outside the configured axis (after a configuration change) count
    as "" so nothing is dropped.
    """
    days, region_list = grid_axes(query, regions)
    zeros = np.zeros(len(rows.regions), dtype=np.int64)
    d = rows.day_offsets + (rows.start - query.start).days if "day" in query.group_by else zeros
    index = {region: i for i, region in enumerate(region_list)}
    r = np.array([index.get(region, index.get("")) for region in rows.regions], dtype=np.int64) \
        if "region" in query.group_by else zeros
    cell = d * len(region_list) + r
    grid = np.zeros((len(days) * len(region_list), central.grid_width(spec.oracle)), dtype=np.int64)
    np.add.at(grid[:, : spec.k], cell, rows.support)
    if central.counts_n_separately(spec.oracle):
        np.add.at(grid[:, spec.k], cell, rows.reports)
    return grid

