"""Post-processing of released answers: coarsening of small regions into "other" decided on noisy totals,
consistency (non-negative integer counts summing to each cell's reports, totals preserved)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from privacy import central
from telemetry.catalog import catalog
from telemetry.models import Release

pytestmark = pytest.mark.django_db

MANY = ["AT", "BE", "CH", "DE", "DK", "ES", "FI", "FR", "IT", "NL", "SE", "US"]


@pytest.fixture
def many_regions(settings):
    settings.PRIVACY = {**settings.PRIVACY, "REGIONS": list(MANY)}
    return ("",) + tuple(sorted(MANY))


def _post_processed(q, release, metric):
    spec = catalog.by_id(metric.id)
    noisy = q.noisy(release).reshape(-1, central.grid_width(spec.oracle))
    return central.post_process(spec.oracle, noisy, Fraction(release.noise_scale))


def _check_cells(cells, k):
    for cell in cells:
        counts = cell["counts"]
        assert len(counts) == k == len(cell["ci_low"]) == len(cell["ci_high"])
        assert all(isinstance(c, int) and c >= 0 for c in counts), cell
        assert isinstance(cell["reports"], int) and cell["reports"] >= 0
        assert sum(counts) == cell["reports"], cell


def test_small_regions_are_merged_into_other_by_their_noisy_totals(q, analyst, color, many_regions):
    user, _ = analyst
    q.set_budget(user, "100")
    q.set_cap(color, "100")
    d1, d2 = q.day(-2), q.day(-1)
    sizes = {"DE": [90, 60, 50], "US": [40, 30, 30], "FR": [3, 2, 1], "IT": [2, 2, 1], "NL": [1, 1, 0],
             "SE": [0, 1, 0], "": [2, 1, 1], "AT": [4, 1, 0]}
    for day in (d1, d2):
        for region, counts in sizes.items():
            q.add_krr(color, day, region, counts)
    k, threshold = 3, 5
    seen_raw_big_merged = seen_raw_small_shown = 0
    for attempt in range(6):  # a few releases so both sides of the threshold get exercised
        result = q.run(user, q.body(color, d1, d2, epsilon="0.5", group_by=["day", "region"], fresh=True))
        release = Release.objects.get(id=result["release"]["id"])
        processed = _post_processed(q, release, color)
        reports = processed.reports.reshape(2, len(many_regions))
        counts = processed.counts.reshape(2, len(many_regions), k)
        data = result["data"]
        _check_cells(data, k)
        for d, day in enumerate((d1, d2)):
            cells = [c for c in data if c["day"] == day.isoformat()]
            small = reports[d] < threshold
            shown = {("unknown" if r == "" else r) for r, s in zip(many_regions, small) if not s}
            names = [c["region"] for c in cells]
            assert set(names) - {"other"} == shown
            assert ("other" in names) == bool(small.any())
            assert names[-1] == "other" or not small.any()
            for cell in cells:
                if cell["region"] == "other":
                    assert cell["reports"] == int(reports[d][small].sum())
                    assert cell["counts"] == counts[d][small].sum(0).tolist()
                    assert all(low <= high for low, high in zip(cell["ci_low"], cell["ci_high"]))
                else:
                    r = many_regions.index("" if cell["region"] == "unknown" else cell["region"])
                    assert cell["reports"] == int(reports[d, r])
                    assert cell["counts"] == counts[d, r].tolist()
            # totals preserved: the output cells add up to the whole noisy (post-processed) grid of the day
            assert sum(c["reports"] for c in cells) == int(reports[d].sum())
            for v in range(k):
                assert sum(c["counts"][v] for c in cells) == int(counts[d, :, v].sum())
            assert {"DE", "US"} <= shown  # large regions are never merged at this ε
            raw_n = {r: sum(sizes.get(r, [0])) for r in many_regions}
            seen_raw_big_merged += sum(1 for r, s in zip(many_regions, small) if s and raw_n[r] >= threshold)
            seen_raw_small_shown += sum(1 for r, s in zip(many_regions, small) if not s and raw_n[r] < threshold)
    # the decision follows the noisy totals, not the raw ones: over 12 day-releases with several
    # regions at or near the threshold, some cross it either way (each direction has probability > 0.2 here)
    assert seen_raw_big_merged + seen_raw_small_shown > 0


def test_a_day_with_only_small_regions_releases_a_single_other_cell(q, analyst, color, many_regions):
    user, _ = analyst
    result = q.run(user, q.body(color, q.day(-1), epsilon="5", group_by=["region"]))
    release = Release.objects.get(id=result["release"]["id"])
    processed = _post_processed(q, release, color)
    # No reports at all: each region's noisy n sums 3 discrete Laplace draws of scale 1/5 (P(z) ∝ e^-5|z|), and
    # reaching the threshold 5 takes draws adding up to 5: about 21 * e^-25 per region, 4e-9 over the 13.
    assert processed.reports.max() < 5
    _check_cells(result["data"], 3)
    assert [c["region"] for c in result["data"]] == ["other"]
    assert sum(c["reports"] for c in result["data"]) == int(processed.reports.sum())


def test_no_coarsening_without_region_grouping(q, analyst, color, many_regions):
    user, _ = analyst
    q.add_krr(color, q.day(-1), "FR", [1, 0, 0])
    result = q.run(user, q.body(color, q.day(-3), q.day(-1), epsilon="1", group_by=["day"]))
    assert [c["day"] for c in result["data"]] == [q.day(-3).isoformat(), q.day(-2).isoformat(),
                                                 q.day(-1).isoformat()]
    assert all("region" not in c for c in result["data"])
    _check_cells(result["data"], 3)
    total = q.run(user, q.body(color, q.day(-3), q.day(-1), epsilon="1"))
    assert len(total["data"]) == 1 and set(total["data"][0]) == {"reports", "counts", "ci_low", "ci_high"}


def test_consistent_counts_for_a_non_krr_protocol(q, analyst, many_regions):
    user, _ = analyst
    metric = q.metric(name="bits", domain=[f"v{i}" for i in range(5)], protocol="oue", epsilon=2.0)
    rng = np.random.default_rng(3)  # test data only
    q.add_randomized(metric, q.day(-1), "DE", rng.integers(0, 5, 300))
    q.add_randomized(metric, q.day(-1), "US", rng.integers(0, 5, 2))
    result = q.run(user, q.body(metric, q.day(-1), epsilon="2", group_by=["region"]))
    _check_cells(result["data"], 5)
    release = Release.objects.get(id=result["release"]["id"])
    processed = _post_processed(q, release, metric)
    assert sum(c["reports"] for c in result["data"]) == int(processed.reports.sum())
    de = next(c for c in result["data"] if c["region"] == "DE")
    assert abs(de["reports"] - 300) < 80  # n is noised at scale Δ/ε = 6/2 = 3
