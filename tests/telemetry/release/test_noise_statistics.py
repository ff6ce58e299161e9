"""Statistics of released answers: the central noise has the discrete Laplace variance 2e^{-1/t}/(1-e^{-1/t})^2
(≈ 2t², t = Δ/ε), is centred, and the released intervals cover the true counts at their level.

Each test states its tolerance. Random draws come from the service's CSPRNG, so these tests are
not seeded; the tolerances are set so that a correct implementation fails with probability < 1e-4.
"""

from __future__ import annotations

import math
import threading
from datetime import timedelta
from fractions import Fraction

import numpy as np
import pytest

from django.db import connection

from privacy.auditing import binomial_acceptance_region, rejection_probability
from privacy.noise import discrete_laplace_variance

from accounting.models import LedgerEntry
from telemetry.catalog import catalog
from telemetry import staging
from telemetry.models import Release, StagedReports
from telemetry.release.codec import unpack_counts
from telemetry.release.request import parse_query_request
from telemetry.release.service import _paid_answer
from telemetry.rollup import advance_rollup

pytestmark = pytest.mark.slow

RELEASES = 400


def _discrete_laplace_moments(t: float) -> tuple[float, float]:
    """(variance, fourth moment) of the discrete Laplace with scale t, by direct summation of its PMF."""
    a = 1.0 / t
    xs = np.arange(-int(80 * t) - 10, int(80 * t) + 11, dtype=np.float64)
    pmf = math.tanh(a / 2) * np.exp(-a * np.abs(xs))  # (1-e^{-a})/(1+e^{-a}) e^{-a|x|}
    assert abs(pmf.sum() - 1) < 1e-12
    return float((pmf * xs**2).sum()), float((pmf * xs**4).sum())


WORKERS = 8  # parallel analysts, each on its own metric (same data), so their budget and partition locks differ


@pytest.mark.django_db(transaction=True)
def test_released_noisy_counts_have_discrete_laplace_variance_2_delta_over_eps_squared(q, settings):
    """400 fresh releases of a fixed k-RR dataset with contribution bound m = 2 (Δ = 2) at ε = 1 grouped by
    region, with SELECTION_EPSILON_SHARE = 0.5: the grid at ε = 0.5 (t = Δ/0.5 = 4), the selection counts
    at 0.5 too (t = m/0.5 = 4).

    8 analysts x 50 releases, each analyst on its own copy of the metric (identical data), run in
    parallel threads (one DB connection each) through the release service (budget reserve -> grid ->
    DRBG noise -> Release -> ledger), the roll-up advanced once beforehand, to keep the test fast.
    The grid is 2 days x 3 regions ("", DE, US) x 3 values = 18 noise draws per release, 7200 in all,
    400 per grid position.
    Tolerances (normal approximation to the sampling distributions):
      * pooled second moment m2 = mean(noise²) within 4 SE of σ², SE = sqrt((μ4 - σ⁴)/N), about ±2.7 %;
      * every grid position's sample variance within 4.5 SE = 4.5 sqrt((μ4 - σ⁴)/n) of σ², n = 400 (±25 %);
      * pooled mean within 4 σ/sqrt(N) of 0, and every grid position's mean within 4.5 σ/sqrt(n).
    A mechanism that ignored the contribution bound (t = 2, σ² ≈ 7.9) or used ε as the scale would
    be far outside these bounds; σ² at t = 4 is 31.83 against 2t² = 32 (0.5 % apart).
    The selection counts (6 per release, 2400 in all) minus each cell's n: pooled second moment within
    4 SE of σ² (about ±39 %), pooled mean within 4 σ/sqrt(N) of 0; selection noise at the default
    share's scale (t = m/0.1 = 20, σ² ≈ 800) or at the whole ε (t = 2, σ² ≈ 7.9) is far outside.
    """
    settings.PRIVACY = {**settings.PRIVACY, "SELECTION_EPSILON_SHARE": "0.5"}
    d1, d2 = q.day(-2), q.day(-1)
    raw = {(d1, "DE"): [7, 0, 3], (d1, "US"): [1, 1, 1], (d2, ""): [2, 5, 0], (d2, "US"): [10, 4, 6]}
    expected = np.array([raw.get((day, region), [0, 0, 0]) for day in (d1, d2) for region in q.axis],
                        dtype=np.int64).reshape(-1)
    jobs = []
    for w in range(WORKERS):
        user, _ = q.user(f"stat{w}")
        metric = q.metric(name=f"bounded{w}", domain=["a", "b", "c"], bound=2)
        q.set_budget(user, "1000")
        q.set_cap(metric, "1000")
        for (day, region), counts in raw.items():
            q.add_krr(metric, day, region, counts)
        jobs.append((user, q.body(metric, d1, d2, epsilon="1", group_by=["day", "region"], fresh=True)))

    per_worker = RELEASES // WORKERS
    ids: list = [[] for _ in jobs]
    errors: list = []

    advance_rollup()  # once: the releases below read the roll-up without advancing it, so they run in parallel

    def work(i, user, body):
        try:
            request = parse_query_request(body)
            assert request.fresh
            for _ in range(per_worker):
                ids[i].append(str(_paid_answer(user, request)[0].id))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i, user, body)) for i, (user, body) in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors[:3]
    all_ids = [i for chunk in ids for i in chunk]
    releases = {str(r.id): r for r in Release.objects.filter(id__in=all_ids)}
    assert len(releases) == RELEASES
    first = releases[all_ids[0]]
    assert first.sensitivity == 2 and Fraction(first.noise_scale) == 4 and Fraction(first.selection_scale) == 4
    assert list(first.regions) == list(q.axis)
    noise = np.stack([q.noisy(releases[i]) - expected for i in all_ids]).astype(np.float64)  # (400, 18)
    assert noise.shape == (RELEASES, 18)

    sigma2, mu4 = _discrete_laplace_moments(4.0)
    assert sigma2 == pytest.approx(discrete_laplace_variance(Fraction(4)), rel=1e-9)
    assert sigma2 == pytest.approx(2 * 4.0**2, rel=0.01)

    n_total = noise.size
    m2 = float((noise**2).mean())
    se_m2 = math.sqrt((mu4 - sigma2**2) / n_total)
    assert abs(m2 - sigma2) <= 4 * se_m2, (m2, sigma2, se_m2)
    mean = float(noise.mean())
    assert abs(mean) <= 4 * math.sqrt(sigma2 / n_total), mean

    se_cell_var = math.sqrt((mu4 - sigma2**2) / RELEASES)
    cell_vars = noise.var(axis=0, ddof=1)
    assert np.all(np.abs(cell_vars - sigma2) <= 4.5 * se_cell_var), (cell_vars, sigma2)
    cell_means = noise.mean(axis=0)
    assert np.all(np.abs(cell_means) <= 4.5 * math.sqrt(sigma2 / RELEASES)), cell_means
    # the noise is integer and not all zero in any cell (exact integer noise, on every cell of the grid)
    assert np.all(noise == np.round(noise)) and np.all(noise.std(axis=0) > 0)
    # every release used a fresh seed: no two noise vectors are identical
    assert len({row.tobytes() for row in noise}) == RELEASES
    assert LedgerEntry.objects.count() == RELEASES

    reports = expected.reshape(-1, 3).sum(axis=1)  # k-RR: a cell's n is the sum of its counts
    selection_noise = np.stack([unpack_counts(bytes(releases[i].selection_counts), 6) - reports
                                for i in all_ids]).astype(np.float64)
    se_selection = math.sqrt((mu4 - sigma2**2) / selection_noise.size)
    assert abs(float((selection_noise**2).mean()) - sigma2) <= 4 * se_selection
    assert abs(float(selection_noise.mean())) <= 4 * math.sqrt(sigma2 / selection_noise.size)


@pytest.mark.django_db
def test_the_sensitivity_is_the_enforced_contribution_bound_times_a_reports_l1_weight(q, analyst):
    """Δ = m x (max support + 1 for the separately released n, for protocols other than k-RR)."""
    user, _ = analyst
    cases = [("krr", 3, 1, 1), ("krr", 3, 4, 4), ("oue", 4, 1, 5), ("oue", 4, 3, 15)]
    for i, (protocol, k, bound, delta) in enumerate(cases):
        metric = q.metric(name=f"m{i}", domain=[f"v{j}" for j in range(k)], protocol=protocol, bound=bound)
        release_id = q.run(user, q.body(metric, q.day(-1), epsilon="0.5"))["release"]["id"]
        release = Release.objects.get(id=release_id)
        assert release.sensitivity == delta, (protocol, k, bound)
        assert Fraction(release.noise_scale) == Fraction(delta) / Fraction(1, 2)


COVERAGE_REGIONS = ["AT", "BE", "BR", "CA", "CH", "CN", "DE", "DK", "ES", "FI",
                    "FR", "GB", "IN", "IT", "JP", "MX", "NL", "NO", "SE", "US"]
COVERAGE_DAYS = 270  # three 90-day queries
COVERAGE_FALSE_ALARM = 1e-3


def _coverage_is_nominal(covered: int, total: int) -> bool:
    """Exact two-sided acceptance region of Binomial(total, 0.95) at COVERAGE_FALSE_ALARM."""
    low, high = binomial_acceptance_region(total, 0.95, COVERAGE_FALSE_ALARM)
    return low <= covered <= high


@pytest.mark.django_db
def test_intervals_cover_the_true_counts_at_their_level(q, analyst, settings):
    """Coverage of the default 95 % intervals over 270 days x 21 regions = 5670 independent cells.

    Every (day, region) cell holds 200 reports with the same true counts (100, 60, 40), freshly
    randomized by k-RR (local ε = 2), so the cells are independent draws of both the local and the
    central noise; three 90-day queries grouped by day and region at ε = 1 with SELECTION_EPSILON_SHARE
    = 0.5, so the grid is at ε = 0.5 (Δ = 1, t = 2: the central variance is about a fifth of the total)
    and the selection counts at 0.5 (t = 2, cut-off 8: a cell of 200 reports is never merged). Each
    cell contributes the interval of one value,
    chosen by its position in the response (data-independent), so the 5670 intervals are
    independent and the number that cover is Binomial(5670, c).

    Tolerance and power: the check accepts on the exact acceptance region of Binomial(5670, 0.95)
    at false-alarm rate 1e-3. Simulating this pipeline (k-RR counts, discrete Laplace at t = 2,
    plug-in variance, 4e5 cells per value, Monte Carlo SE 3e-4) gives c = 0.9485-0.949 with the right
    variance, 0.966-0.967 with the variance 1.2x too large and 0.925-0.926 with it 1.2x too small;
    the check rejects the latter two with probability >= 0.996 (computed below with exact binomial
    tails; the issue asks >= 0.99), and a correct pipeline fails it with probability <= 3e-3.
    (At t = 5 the Laplace tails pull c down to 0.945, too far from 0.95 for a check this sharp;
    t = 2 keeps the release's variance a sum of both layers.)
    The same check on the same intervals, rescaled to 1.2x and 1/1.2x the variance, must reject.
    """
    settings.PRIVACY = {**settings.PRIVACY, "REGIONS": list(COVERAGE_REGIONS), "SELECTION_EPSILON_SHARE": "0.5"}
    user, _ = analyst
    q.set_budget(user, "10")
    metric = q.metric(name="truth", domain=["x", "y", "z"], epsilon=2.0, report_epsilon=2.0)  # plain k-RR (λ = 1)
    q.set_cap(metric, "100")
    true_counts = np.array([100, 60, 40])
    true_values = np.repeat(np.arange(3), true_counts)
    last = q.day(-1)
    days = [last - timedelta(days=i) for i in range(COVERAGE_DAYS)]
    regions = [""] + COVERAGE_REGIONS
    oracle = catalog.by_id(metric.id).oracle
    cells = len(days) * len(regions)
    reported = oracle.randomize(np.tile(true_values, cells)).reshape(len(days), len(regions), -1)  # fresh per cell
    spec = catalog.by_id(metric.id)
    records = np.zeros(reported.size, dtype=staging.record_dtype(spec))  # staged as ingest would, in one payload
    records["day"] = np.repeat([(day - staging.EPOCH_DAY).days for day in days], len(regions) * reported.shape[2])
    records["region"] = np.tile(np.repeat([r.encode() for r in regions], reported.shape[2]), len(days))
    records["value"] = reported.reshape(-1)
    StagedReports.objects.create(metric_id=metric.id, payload=records.tobytes())
    advance_rollup()

    truths, lows, highs = [], [], []
    for w in range(COVERAGE_DAYS // 90):
        start, end = days[90 * w + 89], days[90 * w]
        result = q.run(user, q.body(metric, start, end, epsilon="1", group_by=["day", "region"]))
        assert len(result["data"]) == 90 * len(regions)  # no cell coarsened into "other"
        for cell in result["data"]:
            value = len(truths) % 3
            truths.append(true_counts[value])
            lows.append(cell["ci_low"][value])
            highs.append(cell["ci_high"][value])
    truths, lows, highs = np.array(truths), np.array(lows), np.array(highs)
    total = len(truths)
    assert total == cells == 5670

    region = binomial_acceptance_region(total, 0.95, COVERAGE_FALSE_ALARM)
    assert rejection_probability(total, region, 0.9485) <= 3e-3
    assert min(rejection_probability(total, region, c) for c in (0.966, 0.926)) >= 0.996

    covered = int(np.count_nonzero((lows <= truths) & (truths <= highs)))
    print(f"coverage {covered / total:.4f} of {total} intervals")
    assert _coverage_is_nominal(covered, total), covered / total
    # The same check on the same intervals rescaled to 1.2x and 1/1.2x the variance. Rescaling needs
    # the centre, so it skips the few intervals clipped at 0 (an estimate over 3 sd below 40 reports);
    # rounding to 0.01 is moot at these widths.
    unclipped = lows > 0
    assert np.count_nonzero(~unclipped) <= 10
    centre, half = (lows + highs)[unclipped] / 2, (highs - lows)[unclipped] / 2

    def rescaled_is_nominal(variance_factor: float) -> bool:
        reach = half * math.sqrt(variance_factor)
        covered = np.count_nonzero(np.abs(centre - truths[unclipped]) <= reach)
        return _coverage_is_nominal(int(covered), len(centre))

    assert rescaled_is_nominal(1.0)
    assert not rescaled_is_nominal(1.2)
    assert not rescaled_is_nominal(1 / 1.2)
    # sanity: the intervals are not trivially wide (local + central sd here is about 8-10, so ±1.96 sd ≈ 30-40)
    assert 25 < float(np.median(highs - lows)) < 50, np.median(highs - lows)
