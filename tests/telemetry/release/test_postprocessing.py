"""Post-processing of released answers, through the query service: regions shown only when their selection
count clears the empty-region cut-off, the rest merged into "other" from their noisy raw counts (releases made
before selection counts: on the grid's own noisy n); the ε split stored on the release; consistent counts
(non-negative integers summing to each cell's reports); what each figure is; the audit of both digest layouts."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from django.conf import settings

from privacy import central
from telemetry.catalog import catalog
from telemetry.models import Release
from telemetry.release.codec import pack_counts, unpack_counts
from telemetry.release.postprocess import _v1_released_data, postprocessing_verified, released_data
from telemetry.release.released import DIGEST_LAYOUT, DIGEST_LAYOUT_V1, ReleasedData
from telemetry.release.request import Presentation
from telemetry.release.responses import ESTIMATES

pytestmark = pytest.mark.django_db

MANY = ["AT", "BE", "CH", "DE", "DK", "ES", "FI", "FR", "IT", "NL", "SE", "US"]
CELL_KEYS = {"reports", "counts", "unbiased", "ci_low", "ci_high"}


@pytest.fixture
def many_regions(settings):
    settings.PRIVACY = {**settings.PRIVACY, "REGIONS": list(MANY)}
    return ("",) + tuple(sorted(MANY))


def _noisy_grid(q, release, metric, days: int, regions: int) -> np.ndarray:
    spec = catalog.by_id(metric.id)
    return q.noisy(release).reshape(days, regions, central.grid_width(spec.oracle))


def _selection(release, days: int, regions: int) -> np.ndarray:
    """The release's stored selection counts as a (days, regions) grid."""
    return unpack_counts(bytes(release.selection_counts), days * regions).reshape(days, regions)


def _shown(release, days: int, regions: int) -> np.ndarray:
    survival = settings.PRIVACY["EMPTY_REGION_SURVIVAL"]
    return _selection(release, days, regions) > central.selection_threshold(Fraction(release.selection_scale), survival)


def _check_cells(cells, k):
    for cell in cells:
        counts = cell["counts"]
        assert len(counts) == k == len(cell["unbiased"]) == len(cell["ci_low"]) == len(cell["ci_high"])
        assert all(isinstance(c, int) and c >= 0 for c in counts), cell
        assert isinstance(cell["reports"], int) and cell["reports"] >= 0
        assert sum(counts) == cell["reports"], cell


def _expected_cell(oracle, noisy_rows: np.ndarray, scale: Fraction) -> dict:
    """A released cell from the noisy raw counts it covers (one region, or the merged ones summed)."""
    processed = central.post_process(oracle, noisy_rows.sum(axis=0, keepdims=True), scale, len(noisy_rows))
    low, high = central.intervals(processed.unbiased, processed.variance, 0.95, False)
    return {"reports": int(processed.reports[0]), "counts": processed.counts[0].tolist(),
            "unbiased": np.round(processed.unbiased[0], 2).tolist(),
            "ci_low": np.round(low[0], 2).tolist(), "ci_high": np.round(high[0], 2).tolist()}


def test_regions_show_when_their_selection_count_clears_the_cut_off_and_the_rest_merge_from_their_noisy_counts(
        q, analyst, color, many_regions):
    """k-RR (Δ = m = 1) at ε = 2: the grid at 1.8 (t = 5/9), selection counts at 0.2 (t = 5, cut-off 20)."""
    user, _ = analyst
    q.set_budget(user, "100")
    q.set_cap(color, "100")
    d1, d2 = q.day(-2), q.day(-1)
    sizes = {"DE": [90, 60, 50], "US": [40, 30, 30], "FR": [3, 2, 1], "IT": [2, 2, 1], "NL": [1, 1, 0],
             "SE": [0, 1, 0], "": [2, 1, 1], "AT": [4, 1, 0]}
    for day in (d1, d2):
        for region, counts in sizes.items():
            q.add_krr(color, day, region, counts)
    oracle, k = catalog.by_id(color.id).oracle, 3
    for attempt in range(4):
        result = q.run(user, q.body(color, d1, d2, epsilon="2", group_by=["day", "region"], fresh=True))
        release = Release.objects.get(id=result["release"]["id"])
        scale = Fraction(release.noise_scale)
        assert (scale, Fraction(release.selection_scale)) == (Fraction(5, 9), 5)
        assert central.selection_threshold(Fraction(5), 0.01) == 20
        noisy = _noisy_grid(q, release, color, 2, len(many_regions))
        selection = _selection(release, 2, len(many_regions))
        _check_cells(result["data"], k)
        for d, day in enumerate((d1, d2)):
            cells = [c for c in result["data"] if c["day"] == day.isoformat()]
            shown = selection[d] > 20
            expected = [{"region": region or "unknown", **_expected_cell(oracle, noisy[d, [r]], scale)}
                        for r, region in enumerate(many_regions) if shown[r]]
            if not shown.all():
                expected.append({"region": "other", **_expected_cell(oracle, noisy[d, ~shown], scale)})
            assert [{key: c[key] for key in c if key != "day"} for c in cells] == expected
            assert {"DE", "US"} <= {c["region"] for c in cells}  # 200 and 100 reports: far above the cut-off


def test_the_selection_is_decided_on_the_selection_counts_not_the_grid(q, analyst, color, many_regions):
    """Rewriting the stored selection counts (the audit would catch it) moves regions in and out of "other"
    while the grid stays: the shown regions follow the selection counts alone."""
    user, _ = analyst
    q.add_krr(color, q.day(-1), "DE", [400, 300, 300])
    result = q.run(user, q.body(color, q.day(-1), epsilon="1", group_by=["region"]))
    release = Release.objects.get(id=result["release"]["id"])
    regions = len(many_regions)
    assert "DE" in [c["region"] for c in result["data"]]
    forced = np.zeros((1, regions), dtype=np.int64)
    forced[0, many_regions.index("FR")] = 1000  # an empty region's selection count far above the cut-off
    release.selection_counts = pack_counts(forced)
    data = released_data(release, catalog.by_id(color.id), Presentation()).cells()
    assert [c["region"] for c in data] == ["FR", "other"]  # DE, with 1000 reports, now merged
    assert data[-1]["reports"] > 800


def test_a_release_made_before_selection_counts_is_rendered_on_its_grid_s_noisy_n(q, analyst, color,
                                                                                  many_regions):
    """Releases without ``selection_scale`` (older ones) keep the rule they were made under."""
    user, _ = analyst
    q.add_krr(color, q.day(-1), "DE", [40, 20, 10])
    result = q.run(user, q.body(color, q.day(-1), epsilon="5", group_by=["region"]))
    release = Release.objects.get(id=result["release"]["id"])
    release.selection_scale, release.selection_counts = None, None
    spec, scale = catalog.by_id(color.id), Fraction(release.noise_scale)
    noisy = _noisy_grid(q, release, color, 1, len(many_regions))
    shown = central.shown_regions(spec.oracle, noisy, scale, settings.PRIVACY["EMPTY_REGION_SURVIVAL"])[0]
    data = released_data(release, spec, Presentation()).cells()
    assert [c["region"] for c in data] == [(r or "unknown") for r, s in zip(many_regions, shown) if s] \
        + ["other"] * (not shown.all())
    assert data[-1]["reports"] == max(int(noisy[0, ~shown].sum()), 0) or shown.all()


def test_a_day_of_empty_regions_releases_a_single_other_cell_unless_a_noise_clears_the_cut_off(
        q, analyst, color, many_regions):
    user, _ = analyst
    result = q.run(user, q.body(color, q.day(-1), epsilon="5", group_by=["region"]))
    release = Release.objects.get(id=result["release"]["id"])
    noisy = _noisy_grid(q, release, color, 1, len(many_regions))[0]
    shown = _shown(release, 1, len(many_regions))[0]
    names = [c["region"] for c in result["data"]]
    _check_cells(result["data"], 3)
    assert names == [(r or "unknown") for r, s in zip(many_regions, shown) if s] + ["other"] * (not shown.all())
    assert shown.all() or result["data"][-1]["reports"] == max(int(noisy[~shown].sum()), 0)


def test_no_coarsening_without_region_grouping(q, analyst, color, many_regions):
    user, _ = analyst
    q.add_krr(color, q.day(-1), "FR", [1, 0, 0])
    result = q.run(user, q.body(color, q.day(-3), q.day(-1), epsilon="1", group_by=["day"]))
    assert [c["day"] for c in result["data"]] == [q.day(-3).isoformat(), q.day(-2).isoformat(),
                                                 q.day(-1).isoformat()]
    assert all("region" not in c for c in result["data"])
    _check_cells(result["data"], 3)
    total = q.run(user, q.body(color, q.day(-3), q.day(-1), epsilon="1"))
    assert len(total["data"]) == 1 and set(total["data"][0]) == CELL_KEYS


def test_consistent_counts_for_a_non_krr_protocol(q, analyst, many_regions):
    user, _ = analyst
    metric = q.metric(name="bits", domain=[f"v{i}" for i in range(5)], protocol="oue", epsilon=2.0)
    rng = np.random.default_rng(3)  # test data only
    q.add_randomized(metric, q.day(-1), "DE", rng.integers(0, 5, 300))
    q.add_randomized(metric, q.day(-1), "US", rng.integers(0, 5, 2))
    result = q.run(user, q.body(metric, q.day(-1), epsilon="2", group_by=["region"]))
    _check_cells(result["data"], 5)
    release = Release.objects.get(id=result["release"]["id"])
    # Δ = 6 on the grid at 1.8 (t = 10/3); the selection counts' sensitivity is m = 1, at 0.2 (t = 5)
    assert (Fraction(release.noise_scale), Fraction(release.selection_scale)) == (Fraction(10, 3), 5)
    shown = _shown(release, 1, len(many_regions))[0]
    assert [c["region"] for c in result["data"]] == [(r or "unknown") for r, s in zip(many_regions, shown) if s] \
        + ["other"] * (not shown.all())
    de = next(c for c in result["data"] if c["region"] == "DE")
    assert abs(de["reports"] - 300) < 80  # n is noised at scale 10/3


def test_the_response_says_which_estimate_each_figure_is_and_echoes_the_presentation(q, analyst, color):
    user, _ = analyst
    q.add_krr(color, q.day(-1), "DE", [60, 30, 10])
    body = q.body(color, q.day(-1), epsilon="1", group_by=["region"], confidence=0.9, simultaneous=True)
    paid = q.run(user, body)
    cached = q.run(user, {**body, "confidence": 0.99, "simultaneous": False})
    assert cached["privacy"]["cached"] is True
    for result, confidence, simultaneous in ((paid, 0.9, True), (cached, 0.99, False)):
        assert result["presentation"] == {"confidence": confidence, "simultaneous": simultaneous}
        assert result["estimates"] == ESTIMATES and set(ESTIMATES) == {"reports", "counts", "unbiased",
                                                                       "ci_low/ci_high"}
        for cell in result["data"]:
            for unbiased, low, high in zip(cell["unbiased"], cell["ci_low"], cell["ci_high"]):
                # the interval is centred on the unbiased estimate (up to rounding to 2 decimals), clipped at 0
                if low > 0:
                    assert abs((low + high) / 2 - unbiased) <= 0.011
                else:
                    assert high >= max(unbiased, 0) - 0.01
    de_paid, de_cached = (next(c for c in r["data"] if c["region"] == "DE") for r in (paid, cached))
    assert de_paid["counts"] == de_cached["counts"] and de_paid["unbiased"] == de_cached["unbiased"]
    assert de_cached["ci_high"][0] - de_cached["ci_low"][0] > de_paid["ci_high"][0] - de_paid["ci_low"][0]


def test_releases_digested_with_either_layout_verify(q, analyst, color, many_regions):
    """v2 (with ``unbiased``) for releases made now; v1 for releases made before, re-rendered the old way
    (fixed threshold 5, per-region values summed), so their audit still passes; a v1 digest of other
    data fails."""
    user, _ = analyst
    q.add_krr(color, q.day(-1), "DE", [40, 20, 10])
    q.add_krr(color, q.day(-1), "FR", [2, 1, 0])
    result = q.run(user, q.body(color, q.day(-1), epsilon="1", group_by=["region"]))
    release = Release.objects.get(id=result["release"]["id"])
    spec = catalog.by_id(color.id)
    assert release.released_digest == ReleasedData.from_cells(result["data"]).digest()
    assert postprocessing_verified(release, spec)
    v1 = _v1_released_data(release, spec, Presentation())
    assert v1.unbiased is None and "unbiased" not in v1.cells()[0]
    assert [c["region"] for c in v1.cells()][-1] == "other"  # 13 regions, most empty: some below 5
    release.released_digest = v1.digest()
    assert postprocessing_verified(release, spec)
    v1_tampered = ReleasedData(v1.days, v1.regions, v1.reports + 1, v1.counts, v1.ci_low, v1.ci_high)
    release.released_digest = v1_tampered.digest()
    assert not postprocessing_verified(release, spec)
    assert DIGEST_LAYOUT.endswith("/v2") and DIGEST_LAYOUT_V1.endswith("/v1")


def test_the_demo_configures_its_own_regions(monkeypatch):
    from telemetry.management.commands.demo import DEMO_REGIONS, demo_environment

    monkeypatch.delenv("PRIVACY_REGIONS", raising=False)
    assert demo_environment()["PRIVACY_REGIONS"].split(",") == DEMO_REGIONS
    monkeypatch.setenv("PRIVACY_REGIONS", "US,CA")
    assert demo_environment()["PRIVACY_REGIONS"] == "US,CA"
