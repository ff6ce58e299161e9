"""advance_rollup: exact, incremental, deletes what it folds, keeps append-only epoch deltas, and is
correct while batches are being ingested."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from datetime import timedelta

import numpy as np
import psycopg
import pytest
from django.db import connection, connections

from privacy.ldp import make_oracle
from telemetry.catalog import catalog
from telemetry import rollup, staging
from telemetry.models import CountDelta, ObservedCounts, RollupEpoch, StagedReports
from telemetry.rollup import advance_rollup
from telemetry.selectors import recounted_rows

from helpers import day_str, envelope, krr_item, post_batch, staged_reports, today


def _observed() -> dict:
    """(metric_id, day, region) -> (reports, support list) from ObservedCounts."""
    return {
        (row.metric_id, row.day, row.region): (row.reports, np.frombuffer(bytes(row.support), dtype="<i8").tolist())
        for row in ObservedCounts.objects.all()
    }


def _expected(rows, before: dict | None = None) -> dict:
    """The counts ``before`` plus those of report rows, computed one report at a time."""
    support: dict = {cell: np.array(s, dtype=np.int64) for cell, (_, s) in (before or {}).items()}
    reports: dict = defaultdict(int, {cell: n for cell, (n, _) in (before or {}).items()})
    payloads: dict = defaultdict(list)
    for metric_id, day, region, value, payload in rows:
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


def test_a_rollup_makes_an_epoch_even_with_nothing_to_fold(db):
    """The data version advances with time only: an empty roll-up is an epoch too, with no deltas."""
    first, second = advance_rollup(), advance_rollup()
    assert second.id > first.id and first.token != second.token and len(first.token) >= 20
    assert ObservedCounts.objects.count() == CountDelta.objects.count() == 0


def test_rollup_folds_the_staged_reports_and_deletes_them(metrics, key):
    for c in range(3):
        assert post_batch(_batch(40, f"c{c}", c), key).json()["accepted"] == 40
    expected = _expected(staged_reports())
    assert StagedReports.objects.exists()
    epoch = advance_rollup()
    assert not StagedReports.objects.exists()  # aggregate, then discard
    assert _observed() == expected
    assert sum(r for r, _ in expected.values()) == 120
    assert set(CountDelta.objects.values_list("epoch", flat=True)) == {epoch.id}
    # again: nothing new, nothing changes
    advance_rollup()
    advance_rollup()
    assert _observed() == expected


def test_rollup_in_steps_counts_what_one_step_would(metrics, key, monkeypatch):
    """A backlog is read and folded in steps of bounded size (CHUNK_PAGES pages of a slot on PostgreSQL,
    CHUNK_ROWS rows on SQLite): the cells that several steps share add up. Here a step is one page or
    one row, so every cell spans steps."""
    for c in range(16):
        assert post_batch(_batch(100, f"c{c}", c), key).json()["accepted"] == 100
    expected = _expected(staged_reports())
    assert StagedReports.objects.count() == 32  # a row per batch and metric
    monkeypatch.setattr(rollup, "CHUNK_PAGES", 1)
    monkeypatch.setattr(rollup, "CHUNK_ROWS", 1)
    merged = []
    merge_cells = staging.merge_cells
    monkeypatch.setattr(staging, "merge_cells", lambda parts: merged.append(len(parts)) or merge_cells(parts))
    advance_rollup()
    assert not StagedReports.objects.exists()
    assert _observed() == expected
    assert min(merged) > 1  # each metric's reports came in several steps


def test_merged_cells_equal_one_fold_of_all_the_reports(make_metric):
    """merge_cells of the folds of parts of a payload equals the fold of the whole, cell order included."""
    metric = make_metric(name="merge", domain=[f"v{i}" for i in range(5)], protocol="oue", epsilon=1.0)
    spec = catalog.by_id(metric.id)
    rng = np.random.default_rng(5)  # test data only
    reports = spec.oracle.pack(spec.oracle.randomize(rng.integers(0, 5, size=300)))
    rows = [(metric.id, today() - timedelta(days=int(d)), ["", "US", "FR", "DE"][int(r)], None, p)
            for d, r, p in zip(rng.integers(0, 5, size=300), rng.integers(0, 4, size=300), reports)]
    whole = staging.fold_cells(spec, staging.pack_rows(spec, rows))
    merged = staging.merge_cells([staging.fold_cells(spec, staging.pack_rows(spec, rows[a:b]))
                                  for a, b in ((0, 7), (7, 150), (150, 151), (151, 300))])
    assert merged.dates() == whole.dates() and merged.regions == whole.regions
    assert merged.reports.tolist() == whole.reports.tolist()
    assert merged.supports.tolist() == whole.supports.tolist()


def test_rollup_is_incremental_and_merges_the_epochs_no_release_counted(metrics, key):
    post_batch(_batch(30, "a", 1), key)
    first_rows = staged_reports()
    first_epoch = advance_rollup()
    first = _observed()
    assert _expected(first_rows) == first
    post_batch(_batch(30, "b", 2), key)
    post_batch(envelope([krr_item("k", "d", day=day_str(-1), region="US")], client_id="z"), key)
    expected = _expected(staged_reports(), first)
    second_epoch = advance_rollup()
    assert _observed() == expected
    assert sum(r for r, _ in _observed().values()) == 61
    # no release counted the first epoch: its deltas now belong to the second, and it is forgotten
    assert not RollupEpoch.objects.filter(id=first_epoch.id).exists()
    assert set(CountDelta.objects.values_list("epoch", flat=True)) == {second_epoch.id}
    for metric in metrics:  # the deltas still add up to the counts
        rows = recounted_rows(catalog.by_id(metric.id), today() - timedelta(days=10), today(), second_epoch.id)
        recount = {(metric.id, day, region): (int(n), support.tolist())
                   for day, region, n, support in zip(rows.days, rows.regions, rows.reports, rows.support)}
        assert recount == {cell: value for cell, value in expected.items() if cell[0] == metric.id}


@pytest.mark.parametrize("protocol", ["krr", "oue", "olh", "ss"])
def test_staged_payloads_round_trip_and_fold_to_the_oracles_support_counts(make_metric, protocol):
    metric = make_metric(name=f"codec-{protocol}", domain=[f"v{i}" for i in range(7)], protocol=protocol)
    spec = catalog.by_id(metric.id)
    rng = np.random.default_rng(3)  # test data only
    reports = spec.oracle.randomize(rng.integers(0, 7, size=500))
    days = [today() - timedelta(days=int(d)) for d in rng.integers(0, 4, size=500)]
    regions = [["", "US", "FR"][int(r)] for r in rng.integers(0, 3, size=500)]
    if protocol == "krr":
        rows = [(metric.id, d, r, int(v), None) for d, r, v in zip(days, regions, reports)]
    else:
        rows = [(metric.id, d, r, None, p) for d, r, p in zip(days, regions, spec.oracle.pack(reports))]
    payload = staging.pack_rows(spec, rows)
    assert len(payload) == 500 * staging.record_dtype(spec).itemsize
    assert staging.unpack_rows(spec, payload) == rows
    folded = staging.fold(spec, payload)
    for (day, region), (n, support) in folded.items():
        chosen = [i for i in range(500) if days[i] == day and regions[i] == region]
        assert n == len(chosen)
        assert support.tolist() == spec.oracle.support_counts(reports[chosen]).tolist()
    assert sum(n for n, _ in folded.values()) == 500


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
                if b == batches_each // 2:  # halfway: wait for a roll-up to complete while batches are in flight
                    seen, deadline = rollups[0], time.monotonic() + 30
                    while rollups[0] <= seen and time.monotonic() < deadline:
                        time.sleep(0.005)
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
    assert rollups[0] >= 2, "the roll-up ran alongside the ingest"
    advance_rollup()
    total = writers * batches_each * batch_size
    observed = _observed()
    assert sum(r for r, _ in observed.values()) == total
    assert not StagedReports.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_rollup_waits_for_batches_being_staged_and_leaves_those_staged_after_it_sealed(metrics, key,
                                                                                         monkeypatch):
    """PostgreSQL's slots: a roll-up seals the slot ingest writes into only once every transaction staging
    rows has ended, so a batch whose transaction is open when it starts is counted by it, not lost; a
    batch staged while it holds the sealed slot truncated goes to the other slot, is not blocked, and
    waits for the next roll-up."""
    if connection.vendor != "postgresql":
        pytest.skip("the staging slots are PostgreSQL's")
    krr = metrics[0]
    spec = catalog.by_id(krr.id)
    params = connection.get_connection_params()
    open_batch = psycopg.connect(**{k: params[k] for k in ("dbname", "user", "host", "port", "password") if k in params})
    open_batch.execute("INSERT INTO telemetry_stagedreports (metric_id, payload) VALUES (%s, %s)",
                       [krr.id, staging.pack_rows(spec, [(krr.id, today(), "US", 2, None)])])  # not committed
    reading, resume, errors = threading.Event(), threading.Event(), []
    empty = rollup._empty

    def paused_after_truncate(slot):  # the slot is read and truncated; its lock is held until commit
        empty(slot)
        reading.set()
        resume.wait(30)

    monkeypatch.setattr(rollup, "_empty", paused_after_truncate)

    def roll():
        try:
            advance_rollup()
        except BaseException as error:  # noqa: BLE001
            errors.append(error)
        finally:
            connections.close_all()

    roller = threading.Thread(target=roll)
    roller.start()
    assert not reading.wait(1.0), "the roll-up sealed the slot while a batch was being staged in it"
    open_batch.commit()
    assert reading.wait(30)
    later = post_batch(envelope([krr_item("k", "a", region="FR")], client_id="later"), key)  # not blocked
    assert later.status_code == 200
    resume.set()
    roller.join(60)
    open_batch.close()
    assert not errors, errors
    assert {(cell[2], n) for cell, (n, _) in _observed().items()} == {("US", 1)}
    assert len(staged_reports()) == 1  # the later batch, in the other slot
    monkeypatch.setattr(rollup, "_empty", empty)
    advance_rollup()
    assert {(cell[2], n) for cell, (n, _) in _observed().items()} == {("US", 1), ("FR", 1)}
    assert not StagedReports.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_rollups_do_not_double_count(metrics, key):
    for c in range(4):
        post_batch(_batch(25, f"c{c}", c), key)
    expected = _expected(staged_reports())
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
    assert _observed() == expected
    # four epochs were made; none was released, so the compaction kept only the newest
    newest = RollupEpoch.objects.get()
    assert set(CountDelta.objects.values_list("epoch", flat=True)) == {newest.id}


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
