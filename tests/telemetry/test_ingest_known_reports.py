"""The worker's table of known reports (telemetry/_ingest_native.c) answers exactly as the Python path.

``validation.read_batch`` looks a batch's reports up by their bytes as sent; a batch of reports accepted
before, of one (metric, day) group, is answered from the table without parsing them again. Each test
compares its outcome (envelope, ApiError, rejections, groups, staged records) with the reference
``parse_envelope`` then ``validate_items`` on the same body, the first time (the Python path, which
teaches the table) and the second (the table).
"""

from __future__ import annotations

import os
import random

import msgspec
import orjson
import pytest

from deploy.api.errors import ApiError
from telemetry.ingest import validation
from telemetry.ingest.orchestration import _staged
from telemetry.ingest.validation import parse_envelope, read_batch, validate_items

from helpers import day_str, envelope, krr_item, new_batch_id
from test_ingest import BAD_ENVELOPES, BAD_ITEMS, _fill, _materialize, catalog_metrics  # noqa: F401

native = validation._ingest_native
if native is None:
    # CI installs with a compiler, so a missing module there is a broken build, not a missing compiler
    pytestmark = pytest.mark.skipif(not os.environ.get("CI"), reason="telemetry._ingest_native is not built here")

KnownReports = native.KnownReports if native else None


@pytest.fixture(autouse=True)
def _metrics(catalog_metrics, monkeypatch):
    monkeypatch.setattr(validation, "_checked_reports", validation._CheckedReports())  # a fresh worker
    return catalog_metrics


def _reference(body: bytes):
    try:
        envelope_ = parse_envelope(body)
    except ApiError as error:
        return ("error", error.code, error.http_status)
    return _summary(envelope_, validate_items(envelope_.reports))


def _summary(envelope_, valid):
    return ("ok", envelope_.batch_id, envelope_.client_id, envelope_.digest, envelope_.item_count,
            valid.rejections, list(valid.indexes), valid.metric_ids, valid.candidate_records(), valid.groups,
            valid.item_groups, _staged(valid), _staged(valid, [i % 3 != 0 for i in range(len(valid.indexes))]))


def _read(body: bytes):
    """(read_batch's outcome, whether the table answered)."""
    try:
        envelope_, valid = read_batch(body)
    except ApiError as error:
        return ("error", error.code, error.http_status), None
    return _summary(envelope_, valid), envelope_.reports is None


def _same_twice(body: bytes, *, known: bool | None = None):
    """read_batch on ``body`` twice equals the reference both times; ``known``: the second came from the table."""
    expected = _reference(body)
    first, first_known = _read(body)
    second, second_known = _read(body)
    assert first == expected
    assert second == expected
    if known is not None:
        assert second_known is known
    return expected


def _body(reports, **kwargs) -> bytes:
    return orjson.dumps(envelope(reports, **kwargs))


def test_the_usual_batch_is_answered_from_the_table_the_second_time():
    reports = [krr_item(value=["red", "green", "blue"][i % 3], region=["US", "DE", None, ""][i % 4]) for i in range(100)]
    body = _body(reports)
    assert _same_twice(body, known=True)[5] == []
    # another batch of the same reports, another batch_id and client: still from the table, its own digest
    other = _body(reports, client_id="another", batch_id=new_batch_id())
    assert _read(other) == (_reference(other), True)
    assert _reference(other)[3] != _reference(body)[3]


def test_spellings_of_one_report_are_known_apart_and_give_the_reference_digest():
    day = day_str().encode()
    spellings = [b'{"metric":"color","value":"red","day":"D"}', b'{"day":"D","value":"red","metric":"color"}',
                 b'{ "metric" : "color", "value": "red", "day": "D" }', b'{"metric":"color","value":"red","day":"D",'
                 b'"region":"US"}', b'{"region":null,"metric":"color","value":"blue","day":"D","version":1}',
                 b'{"metric":"color","value":"green","day":"D","region":""}']
    for separator in (b",", b" , ", b",\n\t", b"\r\n,"):
        for order in (spellings, spellings[::-1]):
            body = (b'{"batch_id":"%s","client_id":"c","reports":[ %s ]}' % (new_batch_id().encode(),
                                                                             separator.join(order))).replace(b"D", day)
            _same_twice(body, known=True)


def test_batches_the_table_does_not_answer_get_the_reference_answer():
    red, blue_old = krr_item(value="red"), krr_item(value="blue", day=day_str(-1))
    for reports in ([red, blue_old],  # two (metric, day) groups
                    [red, krr_item(value="rouge")],  # a rejection
                    [red, {"metric": "m-oue", "payload": "AA", "day": day_str()}]):  # not the fast path's
        _same_twice(_body(reports), known=False)


@pytest.mark.parametrize("bad,code", BAD_ITEMS)
def test_a_bad_item_among_known_reports_gets_the_reference_code(bad, code):
    known = [krr_item(value="red"), krr_item(value="blue", region="US")]
    _same_twice(_body(known), known=True)
    outcome = _same_twice(_body([known[0], _fill(bad), known[1]]), known=False)
    assert outcome[5] == [(1, code)]


@pytest.mark.parametrize("body,status,code", BAD_ENVELOPES)
def test_every_bad_envelope_gets_the_reference_code(body, status, code):
    assert _same_twice(_materialize(body))[1:] == (code, status)


@pytest.mark.parametrize("change", [
    pytest.param(lambda b: b.replace(b'"batch_id":"', b'"batch_id":"x'), id="bad-batch-id"),
    pytest.param(lambda b: b.replace(b'"client_id":"c"', b'"client_id":""'), id="empty-client-id"),
    pytest.param(lambda b: b.replace(b'"client_id":"c"', b'"client_id":"%s"' % (b"c" * 257)), id="long-client-id"),
    pytest.param(lambda b: b.replace(b'"client_id":"c"', b'"client_id":7'), id="client-id-number"),
    pytest.param(lambda b: b.replace(b'"client_id":"c",', b""), id="no-client-id"),
    pytest.param(lambda b: b.replace(b'"client_id":"c"', b'"client_id":"c","extra":1'), id="unknown-field"),
    pytest.param(lambda b: b.replace(b"]}", b",]}"), id="trailing-comma"),
    pytest.param(lambda b: b.replace(b"]}", b"]} x"), id="trailing-garbage"),
    pytest.param(lambda b: b.replace(b'"reports":[', b'"reports":[[').replace(b"]}", b"]]}"), id="nested-array"),
    pytest.param(lambda b: b.replace(b'"value":"red"', b'"value":"r\\u0065d"'), id="escape"),
    pytest.param(lambda b: b.replace(b'"client_id":"c"', b'"client_id":"c\\u0000"'), id="nul-escape"),
])
def test_envelope_errors_around_known_reports_get_the_reference_answer(change):
    reports = b"[%s]" % b",".join([b'{"metric":"color","value":"red","day":"%s"}' % day_str().encode()] * 3)
    known = b'{"batch_id":"%s","client_id":"c","reports":%s}' % (new_batch_id().encode(), reports)
    _same_twice(known, known=True)
    _same_twice(change(known))


def test_a_batch_over_the_size_limit_is_refused_even_when_every_report_is_known(settings):
    item = krr_item(value="green")
    _same_twice(_body([item] * settings.PRIVACY["MAX_BATCH_SIZE"]), known=True)
    assert _same_twice(_body([item] * (settings.PRIVACY["MAX_BATCH_SIZE"] + 1)))[1:] == ("batch_too_large", 413)


def test_a_known_report_is_checked_again_when_its_verdict_could_change(settings, monkeypatch):
    from telemetry.services import change_metric

    red, fr = _body([krr_item(value="red")]), _body([krr_item(value="blue", region="FR")])
    assert _same_twice(red, known=True)[5] == [] and _same_twice(fr, known=True)[5] == []
    settings.PRIVACY = {**settings.PRIVACY, "REGIONS": ["US", "DE"]}  # other regions
    assert _same_twice(fr, known=False)[5] == [(0, "invalid_region")]
    change_metric(name="color", domain=["green", "blue"])  # a catalog load without "red"
    assert _same_twice(red, known=False)[5] == [(0, "value_out_of_domain")]


def test_a_known_report_is_refused_once_its_day_is_too_old():
    from datetime import datetime, timedelta, timezone

    import time_machine

    max_age = validation.settings.PRIVACY["REPORT_MAX_AGE_DAYS"]
    noon = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0)
    old = _body([krr_item(day=(noon.date() - timedelta(days=max_age)).isoformat())])
    with time_machine.travel(noon, tick=False):
        assert _same_twice(old, known=True)[5] == []
    with time_machine.travel(noon + timedelta(days=1), tick=False):
        assert _same_twice(old, known=False)[5] == [(0, "day_too_old")]


def test_without_the_c_module_read_batch_is_the_python_path(monkeypatch):
    monkeypatch.setattr(validation, "_ingest_native", None)
    monkeypatch.setattr(validation, "_checked_reports", validation._CheckedReports())
    body = _body([krr_item(value="red"), krr_item(value="green", region="US")])
    assert _same_twice(body, known=False)[5] == []


def test_the_table_of_known_reports_is_bounded(monkeypatch):
    monkeypatch.setattr(validation._Table, "MAX_KNOWN", 4)
    for region in ("US", "DE", "FR", "JP", "BR", "NL"):
        _same_twice(_body([krr_item(value="red", region=region), krr_item(value="blue", region=region)]), known=True)
        assert len(validation._checked_reports.table(validation._ItemCheck()).known) <= 6


# --- the C table itself


def _split_by_msgspec(array: bytes):
    try:
        return [bytes(raw) for raw in msgspec.json.decode(array, type=list[msgspec.Raw])]
    except msgspec.DecodeError:
        return None


def _random_json(rng: random.Random, depth: int = 0) -> bytes:
    """A JSON value with whitespace anywhere, strings holding brackets, braces, commas and quotes' neighbours."""
    space = lambda: rng.choice([b"", b"", b" ", b"\n", b"\t ", b"\r\n"])  # noqa: E731
    kind = rng.randrange(6 if depth < 3 else 3)
    if kind == 0:
        return b'"%s"' % bytes(rng.choice(b"ab,[]{}: ") for _ in range(rng.randrange(6)))
    if kind == 1:
        return rng.choice([b"0", b"-1.5e3", b"true", b"null", b"12"])
    if kind == 2:
        return b'"%s"' % rng.choice([b"red", b"],[", b"},{", b"{", b"]"])
    if kind == 3:
        items = [space() + _random_json(rng, depth + 1) + space() for _ in range(rng.randrange(4))]
        return b"[" + b",".join(items) + space() + b"]"
    members = [space() + b'"%s"' % rng.choice([b"a", b"]", b",{"]) + space() + b":" + space()
               + _random_json(rng, depth + 1) + space() for _ in range(rng.randrange(4))]
    return b"{" + b",".join(members) + space() + b"}"


def test_the_c_split_gives_msgspecs_elements_of_any_valid_array():
    rng = random.Random(8)
    checked = 0
    for _ in range(20_000):
        array = b"[" + b",".join(_random_json(rng) for _ in range(rng.randrange(1, 6))) + b"]"
        expected = _split_by_msgspec(array)
        if expected is None:
            continue
        checked += 1
        assert KnownReports.spans(array) == expected, array
        table = KnownReports()
        for element in expected:
            table.add(element, b"<" + element + b">", element[:1], 7)
        found = table.lookup(array, len(expected))
        assert found == (len(expected), 7, b",".join(b"<" + e + b">" for e in expected),
                         b"".join(e[:1] for e in expected)), array
        assert table.lookup(array, len(expected) - 1) is None  # over the maximum count
    assert checked > 15_000


@pytest.mark.parametrize("array", [b"", b"[", b"]", b"[]", b"[ ]", b"{}", b'"[1]"', b"[1,]", b"[1] ", b"[1]]",
                                   b"[1,,2]", b"[,1]", b'["a\\"]', b'["a\\",1]', b"[1}", b"[{]", b"[{}"])
def test_the_c_table_answers_no_batch_it_cannot_split_exactly(array):
    """It is given only what msgspec parsed (valid JSON); these shapes, and any backslash, it still refuses."""
    table = KnownReports()
    for element in (b"1", b"2", b"{}", b'"a\\"', b'"a\\",1'):
        table.add(element, element, b"", 1)
    assert table.lookup(array, 10) is None


def test_the_c_table_needs_one_group_and_keeps_a_reports_first_entry():
    table = KnownReports()
    table.add(b"a", b"A", b"1", 1)
    table.add(b"b", b"B", b"2", 2)
    table.add(b"a", b"X", b"9", 9)  # known already: unchanged
    assert len(table) == 2
    assert table.lookup(b"[a,a]", 5) == (2, 1, b"A,A", b"11")
    assert table.lookup(b"[a,b]", 5) is None
    with pytest.raises(ValueError):
        table.add(b"", b"", b"", 1)
    assert table.lookup(b"[a,a]", 2) is not None
    for too_few in (1, 0, -1, -2**62):
        assert table.lookup(b"[a,a]", too_few) is None
    table.clear()
    assert len(table) == 0 and table.lookup(b"[a]", 5) is None
    table.add(b"a", b"A", b"1", 1)  # usable after clear()
    assert table.lookup(b"[a]", 2**62) == (1, 1, b"A", b"1")


def test_the_c_table_grows_and_finds_every_report():
    table = KnownReports()
    reports = [b'{"n":%d}' % n for n in range(50_000)]
    for n, report in enumerate(reports):
        table.add(report, report, n.to_bytes(4, "big"), 0)
    assert len(table) == 50_000
    for start in range(0, 50_000, 97):
        chunk = reports[start:start + 100]
        assert table.lookup(b"[" + b",".join(chunk) + b"]", 100) == (
            len(chunk), 0, b",".join(chunk), b"".join(n.to_bytes(4, "big") for n in range(start, start + len(chunk))))
