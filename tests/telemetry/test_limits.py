"""Per-client contribution limits: the per-metric bound m, the daily cap, data days, unlinkability."""

from __future__ import annotations

import hashlib
import hmac
import threading
from datetime import timedelta

import orjson
import pytest
import redis
from django.conf import settings
from django.db import connection, connections

from telemetry.models import Report

from helpers import day_str, envelope, item_codes, krr_item, post_batch, post_raw, run_threads, today

CAP = settings.PRIVACY["MAX_DAILY_CONTRIBUTIONS"]
MAX_AGE = settings.PRIVACY["REPORT_MAX_AGE_DAYS"]


def _redis():
    return redis.Redis.from_url(settings.REDIS_URL)


# --------------------------------------------------------------------------- per-metric bound m


def test_default_bound_is_one_per_metric_and_day(color, key):
    assert color.contribution_bound == 1
    first = post_batch(envelope([krr_item(value="red"), krr_item(value="blue")], client_id="m1"), key)
    assert item_codes(first) == ["accepted", "contribution_bound_exceeded"]
    second = post_batch(envelope([krr_item(value="green")], client_id="m1"), key)
    assert item_codes(second) == ["contribution_bound_exceeded"]
    assert Report.objects.count() == 1


def test_bound_three(make_metric, key):
    make_metric(bound=3)
    first = post_batch(envelope([krr_item() for _ in range(2)], client_id="m3"), key)
    assert item_codes(first) == ["accepted"] * 2
    second = post_batch(envelope([krr_item() for _ in range(3)], client_id="m3"), key)
    assert item_codes(second) == ["accepted", "contribution_bound_exceeded", "contribution_bound_exceeded"]
    third = post_batch(envelope([krr_item()], client_id="m3"), key)
    assert item_codes(third) == ["contribution_bound_exceeded"]
    assert Report.objects.count() == 3


def test_bound_is_per_metric(make_metric, key):
    make_metric(name="a")
    make_metric(name="b")
    body = envelope([krr_item("a"), krr_item("b"), krr_item("a"), krr_item("b")], client_id="pm")
    assert item_codes(post_batch(body, key)) == ["accepted", "accepted"] + ["contribution_bound_exceeded"] * 2


def test_rejected_items_do_not_count_against_the_bound(make_metric, key):
    make_metric(bound=1)
    body = envelope([krr_item(value="purple"), krr_item(day=day_str(1)), krr_item(value="red")], client_id="rj")
    assert item_codes(post_batch(body, key)) == ["value_out_of_domain", "day_in_future", "accepted"]


def test_bound_is_per_data_day(color, key):
    items = [krr_item(day=day_str(-d)) for d in range(MAX_AGE + 1)] + [krr_item(day=day_str(-1))]
    response = post_batch(envelope(items, client_id="days"), key)
    assert item_codes(response) == ["accepted"] * (MAX_AGE + 1) + ["contribution_bound_exceeded"]
    assert Report.objects.filter(day=today() - timedelta(days=1)).count() == 1


def test_clients_are_independent(color, key):
    assert item_codes(post_batch(envelope([krr_item()], client_id="alice"), key)) == ["accepted"]
    assert item_codes(post_batch(envelope([krr_item()], client_id="bob"), key)) == ["accepted"]
    assert item_codes(post_batch(envelope([krr_item()], client_id="alice"), key)) == ["contribution_bound_exceeded"]
    assert item_codes(post_batch(envelope([krr_item()], client_id="Alice"), key)) == ["accepted"]


def test_limits_do_not_depend_on_the_ingest_key(color, key):
    from telemetry import services

    _, other = services.create_ingest_key(app="second-app")
    assert item_codes(post_batch(envelope([krr_item()], client_id="same"), key)) == ["accepted"]
    assert item_codes(post_batch(envelope([krr_item()], client_id="same"), other)) == ["contribution_bound_exceeded"]


def test_bound_change_applies_to_new_version(make_metric, key):
    """A new version with a larger bound has counters of its own (it is another metric id)."""
    from telemetry import services

    make_metric(bound=1)
    assert item_codes(post_batch(envelope([krr_item()], client_id="v"), key)) == ["accepted"]
    services.change_metric(name="color", contribution_bound=2)
    response = post_batch(envelope([krr_item(), krr_item(), krr_item(), krr_item(version=1)], client_id="v"), key)
    assert item_codes(response) == ["accepted", "accepted", "contribution_bound_exceeded",
                                    "contribution_bound_exceeded"]


# --------------------------------------------------------------------------- daily cap


def test_daily_cap_over_one_metric(make_metric, key):
    make_metric(name="big", bound=100)
    make_metric(name="other")
    full = post_batch(envelope([krr_item("big") for _ in range(CAP)], client_id="cap"), key)
    assert full.json()["accepted"] == CAP
    over = post_batch(envelope([krr_item("other"), krr_item("big"), krr_item("other", day=day_str(-1))],
                               client_id="cap"), key)
    assert item_codes(over) == ["daily_limit_exceeded", "daily_limit_exceeded", "accepted"]
    assert Report.objects.count() == CAP + 1


def test_daily_cap_over_several_metrics(make_metric, key):
    for name in ("m0", "m1", "m2", "m3", "m4"):
        make_metric(name=name, bound=30)
    # 5 metrics x 30 = 150 attempts; the cap stops them at 100
    items = [krr_item(f"m{i % 5}") for i in range(100)]
    first = post_batch(envelope(items, client_id="several"), key)
    assert first.json()["accepted"] == 100
    second = post_batch(envelope([krr_item(f"m{i % 5}") for i in range(50)], client_id="several"), key)
    codes = item_codes(second)
    assert set(codes) == {"daily_limit_exceeded"}
    assert Report.objects.count() == CAP
    # another client still has its own 100
    third = post_batch(envelope([krr_item(f"m{i % 5}") for i in range(10)], client_id="another"), key)
    assert third.json()["accepted"] == 10


def test_daily_cap_is_reached_mid_batch(make_metric, key):
    make_metric(name="big", bound=100)
    make_metric(name="small", bound=5)
    post_batch(envelope([krr_item("big") for _ in range(97)], client_id="mid"), key)
    response = post_batch(envelope([krr_item("small") for _ in range(5)], client_id="mid"), key)
    assert item_codes(response) == ["accepted"] * 3 + ["daily_limit_exceeded"] * 2


def test_daily_cap_is_per_data_day(make_metric, key):
    make_metric(name="big", bound=100)
    for offset in (0, -1, -MAX_AGE):
        response = post_batch(envelope([krr_item("big", day=day_str(offset)) for _ in range(CAP)], client_id="dd"),
                              key)
        assert response.json()["accepted"] == CAP, offset
    response = post_batch(envelope([krr_item("big", day=day_str(o)) for o in (0, -1, -2)], client_id="dd"), key)
    assert item_codes(response) == ["daily_limit_exceeded", "daily_limit_exceeded", "accepted"]


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

    answers = run_threads(16, submit)
    accepted = sum(answer["accepted"] for answer in answers)
    assert Report.objects.filter(metric=bounded).count() == 3
    assert Report.objects.count() == accepted == CAP
    assert Report.objects.filter(metric=big).count() == CAP - 3
    codes = {item.get("code") for answer in answers for item in answer["items"]}
    assert codes == {None, "contribution_bound_exceeded", "daily_limit_exceeded"}


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_of_many_clients_are_each_bounded(make_metric, key):
    make_metric(name="bounded", bound=2)

    def submit(i):
        client = f"client-{i % 4}"
        response = post_batch(envelope([krr_item("bounded") for _ in range(3)], client_id=client), key)
        return response.json()["accepted"]

    accepted = run_threads(16, submit)
    assert sum(accepted) == 4 * 2 == Report.objects.count()


# --------------------------------------------------------------------------- unlinkability


CLIENT_ID = "device-7f3a9e2c-uniquely-identifying"


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
    # the sanity check finds what is there
    assert _db_rows_containing(body["batch_id"]) == {"telemetry_batch": 1}
    assert _db_rows_containing(CLIENT_ID) == {}
    assert _db_rows_containing(hashlib.sha256(CLIENT_ID.encode()).hexdigest()[:16]) == {}


def test_redis_keys_hide_client_id_and_expire(make_metric, key):
    make_metric(bound=3)
    post_batch(envelope([krr_item(), krr_item(day=day_str(-1)), krr_item(day=day_str(-MAX_AGE))],
                        client_id=CLIENT_ID), key)
    r = _redis()
    keys = list(r.scan_iter("*"))
    assert keys, "the limiter keeps its counters in Redis"
    ttl_limit = (MAX_AGE + 2) * 86400
    for name in keys:
        text = name.decode("latin-1")
        assert CLIENT_ID not in text and CLIENT_ID.encode().hex() not in text
        assert hashlib.sha256(CLIENT_ID.encode()).hexdigest()[:16] not in text  # an unkeyed hash would link
        ttl = r.ttl(name)
        assert 0 < ttl <= ttl_limit, (name, ttl)
        if r.type(name) == b"string":
            assert CLIENT_ID.encode() not in r.get(name)


def test_pseudonyms_rotate_between_days(color, key):
    """The same client is not linkable across data days through the counter keys."""
    post_batch(envelope([krr_item(day=day_str(0)), krr_item(day=day_str(-1))], client_id=CLIENT_ID), key)
    r = _redis()
    daily = {}
    for name in r.scan_iter("*"):
        text = name.decode()
        parts = text.split(":")
        if len(parts) == 3 and parts[1] in (day_str(0), day_str(-1)) and parts[1] != "secret":
            daily[parts[1]] = parts[2]
    assert set(daily) == {day_str(0), day_str(-1)}, list(r.scan_iter("*"))
    assert daily[day_str(0)] != daily[day_str(-1)]
    # and the pseudonym is not an HMAC under any fixed, guessable key
    for guess in (b"", settings.SECRET_KEY.encode()):
        assert hmac.new(guess, CLIENT_ID.encode(), hashlib.sha256).hexdigest()[:32] not in daily.values()


def test_limits_survive_a_new_worker_process_state(color, key):
    """Another worker (fresh in-process state) enforces the same counters: they live in Redis."""
    from telemetry.limits import get_limiter

    assert item_codes(post_batch(envelope([krr_item()], client_id="w"), key)) == ["accepted"]
    get_limiter.cache_clear()
    assert item_codes(post_batch(envelope([krr_item()], client_id="w"), key)) == ["contribution_bound_exceeded"]


def test_concurrent_duplicate_does_not_leak_counts(make_metric, key):
    """After duplicate submissions of one batch, the client's remaining allowance is exact."""
    make_metric(bound=3)
    body = orjson.dumps(envelope([krr_item()], client_id="dupl"))
    for _ in range(4):
        post_raw(body, key)
    response = post_batch(envelope([krr_item(), krr_item(), krr_item()], client_id="dupl"), key)
    assert item_codes(response) == ["accepted", "accepted", "contribution_bound_exceeded"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_leave_counters_equal_to_stored_rows(make_metric, key):
    """Racing copies of one batch give back what they took: the client's remaining allowance is the
    bound minus what was actually stored."""
    metric = make_metric(bound=3)
    raw = orjson.dumps(envelope([krr_item()], client_id="racing-dup"))
    run_threads(8, lambda _: post_raw(raw, key).status_code)
    stored = Report.objects.filter(metric=metric).count()
    response = post_batch(envelope([krr_item(), krr_item(), krr_item()], client_id="racing-dup"), key)
    assert response.json()["accepted"] == 3 - stored


# --------------------------------------------------------------------------- the in-process limiter


def test_local_limiter_decides_and_refunds_as_the_redis_one(settings):
    """The embedded default's limiter gives the Redis script's decisions, item by item, refunds included."""
    import random

    from telemetry.limits import Contribution, LocalLimiter, RedisLimiter

    settings.PRIVACY = {**settings.PRIVACY, "MAX_DAILY_CONTRIBUTIONS": 7}
    local, shared = LocalLimiter(), RedisLimiter(settings.REDIS_URL)
    rng = random.Random(11)  # test data only
    days = [today() - timedelta(days=d) for d in range(3)]
    decided = set()
    for step in range(300):
        client = f"client-{rng.randrange(3)}"
        pairs = dict.fromkeys((rng.choice(days), rng.randrange(1, 5)) for _ in range(rng.randrange(1, 4)))
        groups = [Contribution(day, metric_id, bound=metric_id % 3 + 1) for day, metric_id in pairs]
        item_groups = [rng.randrange(len(groups)) for _ in range(rng.randrange(1, 6))]
        answers = [limiter.admit_groups(client, groups, item_groups) for limiter in (local, shared)]
        assert answers[0] == answers[1], step
        decided.update(answers[0])
        if rng.random() < 0.3:  # give back what this call admitted, as a failed transaction does
            admitted = [0] * len(groups)
            for group, decision in zip(item_groups, answers[0]):
                admitted[group] += decision == 0
            for limiter in (local, shared):
                limiter.refund_groups(client, groups, admitted)
    assert decided == {0, 1, 2}  # accepted, daily cap and metric bound all occurred
