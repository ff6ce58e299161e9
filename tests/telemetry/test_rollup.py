"""advance_rollup: exact, idempotent, incremental, and correct while batches are being ingested."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import numpy as np
import pytest
from django.db import connections

from privacy.ldp import make_oracle
from telemetry.catalog import catalog
from telemetry.models import ObservedCounts, Report, RollupWatermark
from telemetry.rollup import advance_rollup

from helpers import day_str, envelope, krr_item, post_batch


def _observed() -> dict:
    """(metric_id, day, region) -> (reports, support list) from ObservedCounts."""
    return {
        (row.metric_id, row.day, row.region): (row.reports, np.frombuffer(bytes(row.support), dtype="<i8").tolist())
        for row in ObservedCounts.objects.all()
    }


def _expected_from_reports() -> dict:
    """The same, computed straight from the Report rows."""
    support: dict = {}
    reports: dict = defaultdict(int)
    payloads: dict = defaultdict(list)
    for metric_id, day, region, value, payload in Report.objects.values_list(
        "metric_id", "day", "region", "value", "payload"
    ):
        cell = (metric_id, day, region)
        reports[cell] += 1
        spec = catalog.by_id(metric_id)
        support.setdefault(cell, np.zeros(spec.k, dtype=np.int64))
        if value is not None:
            support[cell][value] += 1
        else:
            payloads[cell].append(bytes(payload))
    for cell, packed in payloads.items():
        oracle = catalog.by_id(cell[0]).oracle
        support[cell] += oracle.support_counts(oracle.unpack(packed))
    return {cell: (reports[cell], support[cell].tolist()) for cell in reports}


@pytest.fixture
def metrics(make_metric):
    krr = make_metric(name="k", domain=["a", "b", "c", "d"], protocol="krr", bound=100)
    oue = make_metric(name="o", domain=[f"v{i}" for i in range(10)], protocol="oue", epsilon=1.0, bound=100)
    return krr, oue


def _batch(n: int, client: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)  # test data only
    oracle = make_oracle("oue", 10, 1.0)
    wire = oracle.to_wire(oracle.randomize(rng.integers(0, 10, size=n)))
    items = []
    for i in range(n):
        day, region = day_str(-int(rng.integers(0, 3))), ["", "US", "FR"][int(rng.integers(0, 3))]
        if i % 2:
            items.append({"metric": "o", "payload": wire[i], "day": day, "region": region})
        else:
            items.append({"metric": "k", "value": "abcd"[int(rng.integers(0, 4))], "day": day, "region": region})
    return envelope(items, client_id=client)


def test_empty_rollup(db):
    assert advance_rollup() == 0
    assert advance_rollup() == 0
    assert ObservedCounts.objects.count() == 0


def test_rollup_matches_reports_and_is_idempotent(metrics, key):
    for c in range(3):
        assert post_batch(_batch(40, f"c{c}", c), key).json()["accepted"] == 40
    high = advance_rollup()
    assert high == Report.objects.order_by("-id").values_list("id", flat=True).first()
    assert RollupWatermark.objects.get().report_id == high
    expected = _expected_from_reports()
    assert _observed() == expected
    assert sum(r for r, _ in expected.values()) == 120
    # again: nothing new, nothing changes
    assert advance_rollup() == high
    assert advance_rollup() == high
    assert _observed() == expected


def test_rollup_is_incremental(metrics, key):
    post_batch(_batch(30, "a", 1), key)
    advance_rollup()
    first = _observed()
    post_batch(_batch(30, "b", 2), key)
    post_batch(envelope([krr_item("k", "d", day=day_str(-1), region="US")], client_id="z"), key)
    advance_rollup()
    assert _observed() == _expected_from_reports()
    assert sum(r for r, _ in _observed().values()) == 61
    assert _observed() != first


def test_rollup_counts_krr_exactly(make_metric, key):
    metric = make_metric(name="exact", domain=["x", "y", "z"], bound=10)
    values = ["x", "x", "z", "x", "z"]
    post_batch(envelope([krr_item("exact", v, region="JP") for v in values]), key)
    advance_rollup()
    row = ObservedCounts.objects.get(metric=metric)
    assert (row.day.isoformat(), row.region, row.reports) == (day_str(), "JP", 5)
    assert np.frombuffer(bytes(row.support), dtype="<i8").tolist() == [3, 0, 2]


@pytest.mark.django_db(transaction=True)
def test_rollup_while_ingesting_loses_and_doubles_nothing(metrics, key):
    writers, batches_each, batch_size = 6, 12, 20
    stop = threading.Event()
    errors: list = []
    rollups = [0]

    def ingest(w: int) -> None:
        try:
            for b in range(batches_each):
                response = post_batch(_batch(batch_size, f"w{w}-b{b}", w * 1000 + b), key)
                assert response.status_code == 200
                assert response.json()["accepted"] == batch_size
        except BaseException as error:  # noqa: BLE001
            errors.append(error)
        finally:
            connections.close_all()

    def roll() -> None:
        try:
            while not stop.is_set():
                advance_rollup()
                rollups[0] += 1
                time.sleep(0.001)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)
        finally:
            connections.close_all()

    roller = threading.Thread(target=roll)
    roller.start()
    threads = [threading.Thread(target=ingest, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    stop.set()
    roller.join(60)
    assert not errors, errors
    assert rollups[0] > 3, "the roll-up ran alongside the ingest"
    advance_rollup()
    total = writers * batches_each * batch_size
    assert Report.objects.count() == total
    observed = _observed()
    assert sum(r for r, _ in observed.values()) == total
    assert observed == _expected_from_reports()


@pytest.mark.django_db(transaction=True)
def test_concurrent_rollups_do_not_double_count(metrics, key):
    for c in range(4):
        post_batch(_batch(25, f"c{c}", c), key)
    errors = []
    barrier = threading.Barrier(4)

    def roll():
        try:
            barrier.wait()
            advance_rollup()
        except BaseException as error:  # noqa: BLE001
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=roll) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert sum(r for r, _ in _observed().values()) == 100
    assert _observed() == _expected_from_reports()


def test_watermark_covers_exactly_the_rolled_up_reports(metrics, key):
    post_batch(_batch(10, "x", 1), key)
    high = advance_rollup()
    assert Report.objects.filter(id__gt=high).count() == 0
    post_batch(_batch(10, "y", 2), key)
    assert Report.objects.filter(id__gt=high).count() == 10
    assert sum(r for r, _ in _observed().values()) == 10  # not yet rolled up
    assert advance_rollup() > high
    assert sum(r for r, _ in _observed().values()) == 20
    assert _observed() == _expected_from_reports()


def test_change_seen_late_by_another_worker_does_not_break_the_rollup(make_metric, key):
    """Other workers keep their catalog cache (up to telemetry.catalog._MAX_AGE_S) and may store
    reports against the definition they know. Since a change always makes a new version, those
    reports land under the old, unchanged version and the roll-up stays consistent."""
    from telemetry import services

    make_metric(name="color", domain=["red", "green", "blue"], bound=5)
    catalog.lookup("color")  # a worker that has the metric cached
    stale = (catalog._versions, catalog._by_id, catalog._loaded_at)
    services.change_metric(name="color", domain=["red", "green"])
    catalog._versions, catalog._by_id, catalog._loaded_at = stale[0], stale[1], time.monotonic()
    response = post_batch(envelope([krr_item("color", "blue"), krr_item("color", "red")], client_id="s"), key)
    catalog.invalidate()  # the roll-up worker sees the current definition
    accepted = response.json()["accepted"]
    advance_rollup()  # must not raise
    assert sum(r for r, _ in _observed().values()) == accepted
