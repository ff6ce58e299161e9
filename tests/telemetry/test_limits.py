"""Per-client contribution limits: the per-metric bound m, the daily cap, data days, unlinkability,
no participation oracle, and counters that can neither be lost nor doubled.

Items over a bound are answered ``accepted`` like any other (docs/api.md) and not stored, so
these tests count what was stored (the staged reports) rather than reading answers.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

import orjson
import pytest
import redis
from django.conf import settings
from django.db import connection

from telemetry import limits
from telemetry.models import ClientCounter, DailySecret

from helpers import day_str, envelope, item_codes, krr_item, post_batch, post_raw, run_threads, staged_reports, today

CAP = settings.PRIVACY["MAX_DAILY_CONTRIBUTIONS"]
MAX_AGE = settings.PRIVACY["REPORT_MAX_AGE_DAYS"]
CLIENT_ID = "device-7f3a9e2c-uniquely-identifying"


def _send(items, client_id: str, key) -> list[str]:
    return item_codes(post_batch(envelope(items, client_id=client_id), key))


# --------------------------------------------------------------------------- per-metric bound m


def test_default_bound_is_one_per_metric_and_day(color, key):
    assert color.contribution_bound == 1
    assert _send([krr_item(value="red"), krr_item(value="blue")], "m1", key) == ["accepted", "accepted"]
    assert _send([krr_item(value="green")], "m1", key) == ["accepted"]
    assert [row[3] for row in staged_reports()] == [0]  # only the first: red


def test_bound_three(make_metric, key):
    make_metric(bound=3)
    _send([krr_item() for _ in range(2)], "m3", key)
    _send([krr_item() for _ in range(3)], "m3", key)
    _send([krr_item()], "m3", key)
    assert len(staged_reports()) == 3


def test_bound_is_per_metric(make_metric, key):
    a, b = make_metric(name="a"), make_metric(name="b")
    _send([krr_item("a"), krr_item("b"), krr_item("a"), krr_item("b")], "pm", key)
    assert len(staged_reports(a)) == len(staged_reports(b)) == 1


def test_rejected_items_do_not_count_against_the_bound(make_metric, key):
    make_metric(bound=1)
    codes = _send([krr_item(value="purple"), krr_item(day=day_str(1)), krr_item(value="red")], "rj", key)
    assert codes == ["value_out_of_domain", "day_in_future", "accepted"]
    assert len(staged_reports()) == 1


def test_bound_is_per_data_day(color, key):
    _send([krr_item(day=day_str(-d)) for d in range(MAX_AGE + 1)] + [krr_item(day=day_str(-1))], "days", key)
    assert len(staged_reports()) == MAX_AGE + 1
    assert len(staged_reports(day=today() - timedelta(days=1))) == 1


def test_clients_are_independent(color, key):
    for client in ("alice", "bob", "alice", "Alice"):
        _send([krr_item()], client, key)
    assert len(staged_reports()) == 3


def test_limits_do_not_depend_on_the_ingest_key(color, key):
    from telemetry import services

    _, other = services.create_ingest_key(app="second-app")
    _send([krr_item()], "same", key)
    assert item_codes(post_batch(envelope([krr_item()], client_id="same"), other)) == ["accepted"]
    assert len(staged_reports()) == 1


def test_bound_change_applies_to_new_version(make_metric, key):
    """A new version with a larger bound has counters of its own (it is another metric id)."""
    from telemetry import services

    first = make_metric(bound=1)
    _send([krr_item()], "v", key)
    second = services.change_metric(name="color", contribution_bound=2)
    _send([krr_item(), krr_item(), krr_item(), krr_item(version=1)], "v", key)
    assert (len(staged_reports(first)), len(staged_reports(second))) == (1, 2)


# --------------------------------------------------------------------------- daily cap


def test_daily_cap_over_one_metric(make_metric, key):
    make_metric(name="big", bound=100)
    other = make_metric(name="other")
    assert post_batch(envelope([krr_item("big") for _ in range(CAP)], client_id="cap"), key).json()["accepted"] == CAP
    _send([krr_item("other"), krr_item("big"), krr_item("other", day=day_str(-1))], "cap", key)
    assert len(staged_reports()) == CAP + 1
    assert [row[1] for row in staged_reports(other)] == [today() - timedelta(days=1)]


def test_daily_cap_over_several_metrics(make_metric, key):
    for name in ("m0", "m1", "m2", "m3", "m4"):
        make_metric(name=name, bound=30)
    _send([krr_item(f"m{i % 5}") for i in range(100)], "several", key)  # 5 metrics x 30 = 150 allowed by m
    _send([krr_item(f"m{i % 5}") for i in range(50)], "several", key)
    assert len(staged_reports()) == CAP
    _send([krr_item(f"m{i % 5}") for i in range(10)], "another", key)  # another client has its own cap
    assert len(staged_reports()) == CAP + 10


def test_daily_cap_is_per_data_day(make_metric, key):
    make_metric(name="big", bound=100)
    _send([krr_item("big") for _ in range(CAP)], "cap-days", key)
    _send([krr_item("big", day=day_str(-1)) for _ in range(3)], "cap-days", key)
    assert len(staged_reports()) == CAP + 3


# --------------------------------------------------------------------------- no participation oracle


def test_the_answer_does_not_tell_whether_a_client_id_has_reported(color, key):
    """A probe with a victim's client_id is answered exactly as one with a fresh client_id."""
    _send([krr_item(value="green")], "victim", key)
    batch_id = envelope([])["batch_id"]
    probe = post_batch(envelope([krr_item()], client_id="victim", batch_id=batch_id), key)
    fresh = post_batch(envelope([krr_item()], client_id="never-seen", batch_id=envelope([])["batch_id"]), key)
    assert probe.status_code == fresh.status_code == 200
    strip = lambda response: {**response.json(), "batch_id": None}  # noqa: E731
    assert strip(probe) == strip(fresh)
    assert sorted(probe.headers) == sorted(fresh.headers)
    assert len(staged_reports()) == 2  # the victim's probe was not stored


# --------------------------------------------------------------------------- concurrency


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_of_one_client_never_exceed_the_bounds(make_metric, key):
    bounded = make_metric(name="bounded", bound=3)
    big = make_metric(name="big", bound=100)
    items = [krr_item("bounded") for _ in range(5)] + [krr_item("big") for _ in range(10)]

    def submit(_):
        response = post_batch(envelope(items, client_id="racer"), key)
        assert response.status_code == 200
        return response.json()

    run_threads(16, submit)
    assert len(staged_reports(bounded)) == 3
    assert len(staged_reports(big)) == CAP - 3
    assert sorted(ClientCounter.objects.values_list("count", flat=True)) == [3, CAP - 3, CAP]


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_of_many_clients_are_each_bounded(make_metric, key):
    make_metric(name="bounded", bound=2)
    run_threads(16, lambda i: post_batch(envelope([krr_item("bounded") for _ in range(3)],
                                                  client_id=f"client-{i % 4}"), key).status_code)
    assert len(staged_reports()) == 4 * 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_count_exactly_what_was_stored(make_metric, key):
    """Racing copies of one batch store it once and count it once."""
    make_metric(bound=3)
    raw = orjson.dumps(envelope([krr_item()], client_id="racing-dup"))
    assert set(run_threads(8, lambda _: post_raw(raw, key).status_code)) == {200}
    assert len(staged_reports()) == 1
    _send([krr_item(), krr_item(), krr_item()], "racing-dup", key)
    assert len(staged_reports()) == 3


# --------------------------------------------------------------------------- crashes around COMMIT


@pytest.mark.django_db(transaction=True)
def test_a_batch_committed_just_before_a_failure_is_replayed_not_counted_again(make_metric, key, monkeypatch):
    """The commit succeeds, then the request fails before answering (a crash after COMMIT, a lost
    response). The client retries: the batch is answered from its record, and neither its reports
    nor its counts are doubled; the client has exactly its bound left."""
    from deploy.api.db import LibpqSession

    make_metric(bound=2)
    body = envelope([krr_item(), krr_item(day=day_str(-1))], client_id="crash-after")
    commit_prepared = LibpqSession.commit_prepared

    def commit_then_fail(self, *args):  # the one-round-trip path, which this batch takes (it fits m)
        commit_prepared(self, *args)
        raise ConnectionError("the worker died after COMMIT")

    with monkeypatch.context() as patch:
        patch.setattr(LibpqSession, "commit_prepared", commit_then_fail)
        with pytest.raises(ConnectionError):
            post_batch(body, key)
    retry = post_batch(body, key)
    assert retry.status_code == 200 and retry["Idempotent-Replayed"] == "true"
    assert len(staged_reports()) == 2
    _send([krr_item(), krr_item(), krr_item()], "crash-after", key)  # one more today fits (m = 2)
    assert len(staged_reports()) == 3
    assert sorted(ClientCounter.objects.values_list("count", flat=True)) == [1, 1, 2, 2]


@pytest.mark.django_db(transaction=True)
def test_a_batch_over_its_bound_committed_just_before_a_failure_is_replayed_not_counted_again(make_metric, key,
                                                                                             monkeypatch):
    """The same on the item-by-item path (the batch passes its bound): COMMIT, then the failure."""
    from deploy.api.db import LibpqSession

    make_metric(bound=1)
    body = envelope([krr_item(), krr_item()], client_id="crash-after-items")
    require_commit = LibpqSession.require_commit

    def commit_then_fail(self, results):
        require_commit(self, results)
        if results[-1].command_status == b"COMMIT" and len(results) > 1:
            raise ConnectionError("the worker died after COMMIT")

    with monkeypatch.context() as patch:
        patch.setattr(LibpqSession, "require_commit", commit_then_fail)
        with pytest.raises(ConnectionError):
            post_batch(body, key)
    retry = post_batch(body, key)
    assert retry.status_code == 200 and retry["Idempotent-Replayed"] == "true"
    assert len(staged_reports()) == 1
    assert sorted(ClientCounter.objects.values_list("count", flat=True)) == [1, 1]


@pytest.mark.django_db(transaction=True)
def test_a_batch_that_failed_before_commit_counts_nothing(make_metric, key, monkeypatch):
    from deploy.api.db import LibpqSession

    make_metric(bound=1)
    body = envelope([krr_item()], client_id="crash-before")
    send = LibpqSession.send

    def fail_at_commit(self, sql, *expected, **kwargs):
        if sql.endswith("COMMIT") and "telemetry_stagedreports" in sql:
            raise ConnectionError("the worker died before COMMIT")
        return send(self, sql, *expected, **kwargs)

    def fail_in_one_step(self, name, sql, params, formats):  # the one-round-trip path, before its commit
        raise ConnectionError("the worker died before COMMIT")

    with monkeypatch.context() as patch:
        patch.setattr(LibpqSession, "send", fail_at_commit)
        patch.setattr(LibpqSession, "commit_prepared", fail_in_one_step)
        with pytest.raises(ConnectionError):
            post_batch(body, key)
    assert len(staged_reports()) == 0 and not ClientCounter.objects.filter(count__gt=0).exists()
    assert item_codes(post_batch(body, key)) == ["accepted"]  # the retry is admitted, once
    assert len(staged_reports()) == 1


# --------------------------------------------------------------------------- unlinkability


def _db_rows_containing(needle: str) -> dict:
    hits = {}
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE %s OR t::text LIKE %s',
                           [f"%{needle}%", f"%{needle.encode().hex()}%"])
            count = cursor.fetchone()[0]
            if count:
                hits[table] = count
    return hits


@pytest.mark.parametrize("protocol", ["krr", "oue"])
def test_client_id_is_stored_nowhere_in_postgres(make_metric, key, protocol):
    make_metric(name="m", domain=["a", "b", "c"], protocol=protocol, bound=5)
    item = {"metric": "m", "day": day_str(), "region": "NL"}
    item.update({"value": "a"} if protocol == "krr" else {"payload": "010"})
    body = envelope([item, dict(item, day=day_str(-1)), krr_item("nope")], client_id=CLIENT_ID)
    assert post_batch(body, key).json()["accepted"] == 2
    assert _db_rows_containing(body["batch_id"]) == {"telemetry_batch": 1}  # the check finds what is there
    assert _db_rows_containing(CLIENT_ID) == {}
    assert _db_rows_containing(hashlib.sha256(CLIENT_ID.encode()).hexdigest()[:16]) == {}


def test_counter_keys_hide_the_client_id_and_expire(make_metric, key):
    bounded = make_metric(bound=3)
    _send([krr_item(), krr_item(day=day_str(-1)), krr_item(day=day_str(-MAX_AGE))], CLIENT_ID, key)
    counters = {c.key: c for c in ClientCounter.objects.all()}
    assert len(counters) == 6  # per day: the all-metrics total and the metric's count
    # each key is 64 bits of an HMAC under that day's secret: computed here independently of limits.py
    secrets_by_day = {row.day: bytes(row.secret) for row in DailySecret.objects.all()}
    assert len(secrets_by_day) == 3
    expected = set()
    for day, secret in secrets_by_day.items():
        for metric in ("*", str(bounded.id)):
            digest = hmac.new(secret, f"{CLIENT_ID}\0{metric}".encode(), hashlib.sha256).digest()
            expected.add(int.from_bytes(digest[:8], "big", signed=True))
    assert set(counters) == expected
    unkeyed = int.from_bytes(hashlib.sha256(CLIENT_ID.encode()).digest()[:8], "big", signed=True)
    assert unkeyed not in counters  # an unkeyed hash would link
    # a day that can no longer receive reports loses its secret and counters
    assert limits.expire(today()) == 0  # every day still receives reports
    assert limits.expire(today() + timedelta(days=MAX_AGE)) == 3  # the oldest day: its 2 counters and its secret
    assert sorted({c.day for c in ClientCounter.objects.all()}) == [today() - timedelta(days=1), today()]
    assert sorted(DailySecret.objects.values_list("day", flat=True)) == [today() - timedelta(days=1), today()]


def test_pseudonyms_rotate_between_days(color, key):
    """The same client is not linkable across data days through the counter keys."""
    _send([krr_item(day=day_str(0)), krr_item(day=day_str(-1))], CLIENT_ID, key)
    keys = {}
    for counter in ClientCounter.objects.all():
        keys.setdefault(counter.day, set()).add(counter.key)
    assert set(keys) == {today(), today() - timedelta(days=1)}
    assert not keys[today()] & keys[today() - timedelta(days=1)]  # nothing shared between the days
    for guess in (b"", settings.SECRET_KEY.encode()):  # not an HMAC under any fixed, guessable key
        for metric in ("*", str(color.id)):
            digest = hmac.new(guess, f"{CLIENT_ID}\0{metric}".encode(), hashlib.sha256).digest()
            assert int.from_bytes(digest[:8], "big", signed=True) not in keys[today()] | keys[today() - timedelta(days=1)]


def test_every_worker_uses_the_one_secret_of_a_day(color, key):
    """A worker started later (empty process state) reads the day's secret from the database."""
    _send([krr_item()], "w", key)
    limits.secrets.forget()
    _send([krr_item()], "w", key)
    assert len(staged_reports()) == 1 and DailySecret.objects.count() == 1


def test_losing_redis_cannot_raise_a_bound(color, key):
    """The counters are in PostgreSQL: an emptied Redis changes nothing."""
    _send([krr_item()], "r", key)
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    limits.secrets.forget()
    _send([krr_item()], "r", key)
    assert len(staged_reports()) == 1
