"""Claims of docs/privacy.md, docs/threat-model.md and docs/operations.md that no other test checks.

Storage ("aggregate, then discard"): what the staged and count tables can hold, which rows share a
transaction (PostgreSQL's ``xmin``) with a batch record before and after the roll-up, and how long
batch records are kept. Operations: the beat schedule, the bound on ``ROLLUP_INTERVAL_S``, that a
query neither runs nor waits for a roll-up's fold, and that a release being written holds off the
compaction of the epoch it counted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, connections
from django.utils import timezone

from telemetry import rollup
from telemetry.models import Batch, RollupEpoch, StagedReports

from helpers import envelope, krr_item, post_batch

REPO = Path(__file__).resolve().parents[1]
MAX_AGE = settings.PRIVACY["REPORT_MAX_AGE_DAYS"]


# --------------------------------------------------------------------------- the beat and the staging window


def test_the_beat_runs_the_rollup_every_interval_and_the_expiry_hourly():
    schedule = {entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert schedule == {"telemetry.tasks.advance_rollup": timedelta(seconds=settings.ROLLUP_INTERVAL_S),
                        "telemetry.tasks.expire_limits": timedelta(hours=1),
                        "frontend.tasks.clear_sessions": timedelta(hours=1)}


def _beat_interval(value: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """A fresh interpreter's roll-up schedule, in seconds, under ``ROLLUP_INTERVAL_S=value`` (embedded default)."""
    env = {"PATH": os.environ["PATH"], "VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "deploy.settings",
           "ROLLUP_INTERVAL_S": value}
    code = ("import django; django.setup(); from django.conf import settings; "
            "print(settings.CELERY_BEAT_SCHEDULE['advance-rollup']['schedule'].total_seconds())")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("value, accepted", [("300", True), ("1", True), ("301", False), ("0", False)])
def test_the_staging_window_setting_is_bounded_at_300_seconds(tmp_path, value, accepted):
    result = _beat_interval(value, tmp_path)
    if accepted:
        assert result.returncode == 0, result.stderr
        assert float(result.stdout.strip()) == float(value)
    else:
        assert result.returncode != 0 and "ROLLUP_INTERVAL_S must be in [1, 300]" in result.stderr


# --------------------------------------------------------------------------- what the tables hold


def _columns(table: str) -> set[str]:
    with connection.cursor() as cursor:
        return {column.name for column in connection.introspection.get_table_description(cursor, table)}


@pytest.mark.django_db
def test_staged_rows_and_counts_carry_no_id_time_or_batch():
    assert _columns("telemetry_stagedreports") == {"id", "metric_id", "payload"}
    assert _columns("telemetry_countdelta") == {"id", "epoch", "metric_id", "day", "region", "reports", "support"}
    assert _columns("telemetry_observedcounts") == {"id", "metric_id", "day", "region", "reports", "support"}
    # the batch record: no client id, no reports
    assert _columns("telemetry_batch") == {"batch_id", "ingest_key_id", "body_digest", "item_count", "rejections",
                                           "received_at"}


def _xmins(table: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT xmin::text FROM {table}")
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db(transaction=True)
def test_a_staged_row_is_tied_to_its_batch_only_until_the_rollup(make_metric, key):
    """docs/privacy.md, "Storage": during the staging window a staged row shares its transaction id
    (xmin) with its batch record, and so do the client's limit counters; after the roll-up no row of
    counts does. (The counters keep the xmin of the last batch that changed them until they expire.)"""
    make_metric(bound=5)
    for client in ("a", "b", "c"):
        assert post_batch(envelope([krr_item(), krr_item(value="green")], client_id=client), key).status_code == 200
    batches = _xmins("telemetry_batch")
    assert len(set(batches)) == 3
    staged = _xmins("telemetry_stagedreports")
    assert sorted(staged) == sorted(batches)  # one staged row per (batch, metric), each in its batch's transaction
    assert set(_xmins("telemetry_clientcounter")) == set(batches)

    rollup.advance_rollup()
    assert not StagedReports.objects.exists()
    for table in ("telemetry_countdelta", "telemetry_observedcounts", "telemetry_rollupepoch"):
        assert _xmins(table) and not set(_xmins(table)) & set(batches), table


@pytest.mark.django_db
def test_batch_records_are_kept_report_max_age_plus_one_day(color, key):
    from telemetry.tasks import expire_limits

    old, recent = (envelope([krr_item()], client_id=client) for client in ("old", "recent"))
    for body in (old, recent):
        post_batch(body, key)
    keep_for = timedelta(days=MAX_AGE + 1)
    Batch.objects.filter(batch_id=old["batch_id"]).update(received_at=timezone.now() - keep_for - timedelta(minutes=1))
    Batch.objects.filter(batch_id=recent["batch_id"]).update(received_at=timezone.now() - keep_for + timedelta(hours=1))
    expire_limits()
    assert [str(b) for b in Batch.objects.values_list("batch_id", flat=True)] == [recent["batch_id"]]


# --------------------------------------------------------------------------- queries and the roll-up


def _start_thread(target, errors: list) -> threading.Thread:
    """Run ``target`` in a thread that records its exception in ``errors`` and closes its connections."""
    def run():
        try:
            target()
        except BaseException as error:  # noqa: BLE001
            errors.append(error)
        finally:
            connections.close_all()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
def test_a_query_neither_runs_nor_waits_for_a_rollup(q, analyst, color, short_region_axis, monkeypatch):
    """docs/architecture.md, "Query flow": staged reports stay staged through a query, and a query
    answers on the last committed epoch while a roll-up holds its transaction open."""
    user, _ = analyst
    q.add_krr(color, q.day(0), "DE", [5, 3, 1])  # staged and rolled up: the last committed epoch
    committed = RollupEpoch.objects.latest("id")
    q.add_krr(color, q.day(0), "DE", [2, 2, 2], roll_up=False)
    first = q.run(user, q.body(color, q.day(0), epsilon=1.0))
    assert StagedReports.objects.count() == 1 and RollupEpoch.objects.latest("id") == committed
    assert first["release"]["data_version"] == committed.token

    folded, release = threading.Event(), threading.Event()
    write_counts = rollup._write_counts

    def hold_open(epoch, rows):  # the roll-up's transaction stays open here, its locks held
        write_counts(epoch, rows)
        folded.set()
        release.wait(30)

    monkeypatch.setattr(rollup, "_write_counts", hold_open)
    answers, errors = [], []

    roller = _start_thread(rollup.advance_rollup, errors)
    try:
        assert folded.wait(30), errors
        fresh_query = q.body(color, q.day(0), epsilon=1.0, fresh=True)
        query = _start_thread(lambda: answers.append(q.run(user, fresh_query)), errors)
        query.join(20)
        assert not query.is_alive(), "the query waited for the roll-up"
    finally:
        release.set()
        roller.join(30)
    assert not errors, errors
    assert answers[0]["release"]["data_version"] == committed.token  # the roll-up in progress is not seen
    assert RollupEpoch.objects.latest("id").id > committed.id and not StagedReports.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_release_being_written_keeps_its_epoch_from_compaction(q, analyst, color, short_region_axis, monkeypatch):
    """docs/architecture.md, "Roll-up": a roll-up that commits while a query is writing its release
    merges nothing until that release commits, so the epoch the release counted stays recountable."""
    from telemetry.models import CountDelta, Release
    from telemetry.release import service
    from telemetry.release.audit import replay_release

    user, _ = analyst
    q.add_krr(color, q.day(0), "DE", [5, 3, 1])
    counted = RollupEpoch.objects.latest("id")
    q.add_krr(color, q.day(0), "DE", [2, 2, 2], roll_up=False)

    read, go = threading.Event(), threading.Event()
    build_grid = service.build_grid

    def hold_after_reading(*args):  # the query has read its epoch; its release is not committed yet
        read.set()
        go.wait(30)
        return build_grid(*args)

    monkeypatch.setattr(service, "build_grid", hold_after_reading)
    answers, errors = [], []

    query = _start_thread(lambda: answers.append(q.run(user, q.body(color, q.day(0), epsilon=1.0))), errors)
    roller = None
    try:
        assert read.wait(30), errors
        roller = _start_thread(rollup.advance_rollup, errors)
        deadline = time.monotonic() + 30
        while not RollupEpoch.objects.filter(id__gt=counted.id).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        newest = RollupEpoch.objects.get(id__gt=counted.id)  # the fold committed; the compaction must wait
        roller.join(1)
        assert roller.is_alive(), "the compaction did not wait for the release being written"
        assert set(CountDelta.objects.values_list("epoch", flat=True)) == {counted.id, newest.id}
    finally:
        go.set()
        query.join(30)
        if roller is not None:
            roller.join(30)
    assert not errors, errors
    release = Release.objects.get(id=answers[0]["release"]["id"])
    assert release.data_epoch == counted.id
    # both epochs stay apart: the released one, and the newest (nothing between them to merge)
    assert set(CountDelta.objects.values_list("epoch", flat=True)) == {counted.id, newest.id}
    replay = replay_release(release.id)
    assert replay.cell_verified.all()
    assert replay.raw.sum(axis=0)[:3].tolist() == [5, 3, 1]  # the counts at its epoch, not the later [2, 2, 2]


@pytest.mark.django_db
def test_an_admins_query_is_charged_like_anyones(q, admin, color, short_region_axis):
    """docs/threat-model.md: an admin has no free queries (same ledger, same default daily budget)."""
    user, token = admin
    q.add_krr(color, q.day(-1), "DE", [4, 2, 1])
    response = q.post(q.client(token), q.body(color, q.day(-1), epsilon="0.25"))
    assert response.status_code == 200, response.json()
    assert response.json()["privacy"]["budget_remaining"] == 9.75
    assert q.ledger_micro(user=user, metric=color) == 250_000


# --------------------------------------------------------------------------- figures quoted in the docs


@pytest.mark.parametrize("protocol, keep, per_change", [("krr", 0.327, 2.37), ("ss", 0.376, 4.75),
                                                        ("oue", 0.393, 42.1), ("olh", 0.398, 23.8)])
def test_the_defaults_table_of_privacy_md(protocol, keep, per_change):
    """docs/privacy.md, "Reporting over time" (and threat-model.md): k = 20, ε = 2, report_epsilon = 1.
    Tolerances are the tables' rounding."""
    from privacy.ldp.longitudinal import guarantees, least_variance_protocol

    figures = guarantees(protocol, 20, 2.0, 1.0)
    assert figures.keep == pytest.approx(keep, abs=5e-4)
    assert figures.per_change == pytest.approx(per_change, abs=0.06)
    assert (figures.per_value, figures.per_report) == (2.0, pytest.approx(1.0))
    assert least_variance_protocol(20, 2.0, 1.0) == "ss"  # what `auto` picks at the defaults
