"""The msgspec fast path of ingest parsing (telemetry.ingest.validation) answers exactly as the general path.

A body that msgspec decodes into the typed structs (no payload, no backslash escape, every field of the
expected type) skips the general path's per-value type checks; every other body takes the general path.
Each test here runs both paths on the same body and compares the envelope (batch_id, client_id, digest),
the ApiError code, and every item's outcome and staged record.
"""

from __future__ import annotations

import orjson
import pytest

from deploy.api.errors import ApiError
from telemetry.ingest import validation
from telemetry.ingest.validation import _KrrItem, _parse_fast, _parse_general, parse_envelope, validate_items

from helpers import day_str, envelope, krr_item, new_batch_id
from test_ingest import BAD_ENVELOPES, BAD_ITEMS, _fill, _materialize, catalog_metrics  # noqa: F401


@pytest.fixture(autouse=True)
def _metrics(catalog_metrics):
    return catalog_metrics


def _outcome(parse, body: bytes):
    try:
        parsed = parse(body)
    except ApiError as error:
        return ("error", error.code, error.http_status)
    if parsed is None:
        return None
    return ("ok", parsed.batch_id, parsed.client_id, parsed.digest, validate_items(parsed.reports))


def _same_on_both_paths(body: bytes, *, fast: bool | None = None):
    general = _outcome(_parse_general, body)
    taken = _outcome(_parse_fast, body)
    if fast is not None:
        assert (taken is not None) is fast
    if taken is not None:
        assert taken == general
    assert _outcome(parse_envelope, body) == general
    return general


def _batch(reports, **kwargs) -> bytes:
    return orjson.dumps(envelope(reports, **kwargs))


@pytest.mark.parametrize("bad,code", BAD_ITEMS)
def test_every_bad_item_gets_the_general_paths_code(bad, code):
    body = _batch([krr_item(value="red"), _fill(bad), krr_item(value="blue", region="US")])
    outcome = _same_on_both_paths(body)
    assert outcome[0] == "ok" and outcome[4].rejections == [(1, code)]


@pytest.mark.parametrize("body,status,code", BAD_ENVELOPES)
def test_every_bad_envelope_gets_the_general_paths_code(body, status, code):
    assert _same_on_both_paths(_materialize(body))[1:] == (code, status)


def test_the_usual_batch_takes_the_fast_path_with_repeated_items_and_nulls():
    reports = [krr_item(value=["red", "green", "blue"][i % 3], region=[None, "", "US", "DE"][i % 4],
                        **({"version": None} if i % 5 == 0 else {"version": 1} if i % 7 == 0 else {}))
               for i in range(98)]
    reports.append({"metric": "color", "value": "rouge", "day": day_str(), "region": "US"})  # rejected, repeated
    reports.append({"metric": "color", "value": "rouge", "day": day_str(), "region": "US"})
    body = _batch(reports)
    assert type(parse_envelope(body).reports[0]) is _KrrItem
    outcome = _same_on_both_paths(body, fast=True)
    assert outcome[4].rejections == [(98, "value_out_of_domain"), (99, "value_out_of_domain")]
    assert len(outcome[4].indexes) == 98


@pytest.mark.parametrize("version", [2**31, 2**63, 2**64, 10**29, -1, 0, 1.0, 1e2, True])
def test_versions_out_of_the_fast_paths_range_get_the_general_answer(version):
    body = b'{"batch_id":"%s","client_id":"c","reports":[{"metric":"color","version":%s,"value":"red","day":"%s"}]}' % (
        new_batch_id().encode(), str(version).lower().encode(), day_str().encode())
    outcome = _same_on_both_paths(body, fast=False)
    assert outcome[4].rejections[0][1] in ("invalid_version", "unknown_metric_version")


@pytest.mark.parametrize("raw", [
    pytest.param(b'{"metric":"color","metric":"nope","value":"red","day":"TODAY"}', id="duplicate-key-last-wins"),
    pytest.param(b' { "metric" : "color" , "value" : "red" , "day" : "TODAY" } ', id="whitespace"),
    pytest.param('{"metric":"color","value":"r\u00e9d","day":"TODAY"}'.encode(), id="non-ascii"),
    pytest.param('{"metric":"c\u2028olor","value":"red","day":"TODAY"}'.encode(), id="line-separator"),
    pytest.param(b'{"metric":"color","value":"re\x7fd","day":"TODAY"}', id="raw-del"),
    pytest.param(b'{"metric":"color","value":"red","day":"TODAY","region":null}', id="null-region"),
    pytest.param(b'{"metric":"color","value":"red","day":"TODAY","version":null}', id="null-version"),
    pytest.param(b'{"metric":null,"value":"red","day":"TODAY"}', id="null-metric"),
    pytest.param(b'{"metric":"color","value":"red","day":"TODAY","region":false}', id="false-region"),
])
def test_bodies_msgspec_and_orjson_read_alike_get_one_answer_and_digest(raw):
    raw = raw.replace(b"TODAY", day_str().encode())
    body = b'{"batch_id":"%s","client_id":"c","reports":[%s,%s]}' % (new_batch_id().encode(), raw,
                                                                       orjson.dumps(krr_item()))
    _same_on_both_paths(body)


@pytest.mark.parametrize("body", [
    pytest.param(b'{"batch_id":"BID","client_id":"c","reports":[{"metric":"color","value":"r\\u0000","day":"D"}]}',
                 id="escaped-nul"),
    pytest.param(b'{"batch_id":"BID","client_id":"c","reports":[{"metric":"color","value":"re\x01d","day":"D"}]}',
                 id="raw-control-character"),
    pytest.param(b'{"batch_id":"BID","client_id":"c","reports":[{"metric":"color","value":"red","day":"D"}]}xx',
                 id="trailing-bytes"),
    pytest.param(b'{"batch_id":"BID","client_id":"c","reports":[{"metric":"color","value":"\xff","day":"D"}]}',
                 id="invalid-utf8"),
    pytest.param(b'\xef\xbb\xbf{"batch_id":"BID","client_id":"c","reports":[]}', id="byte-order-mark"),
    pytest.param(b'{"batch_id":"BID","client_id":"c","reports":[{"metric":"m-oue","payload":"01000000","day":"D"}]}',
                 id="payload"),
    pytest.param(b'{"batch_id":"BID","client_id":"","reports":[{"metric":"color","value":"red","day":"D"}]}',
                 id="empty-client-id"),
    pytest.param(b'{"batch_id":"nope","client_id":"c","reports":[{"metric":"color","value":"red","day":"D"}]}',
                 id="bad-batch-id"),
    pytest.param(b'{"batch_id":"BID","client_id":"c","reports":[]}', id="no-reports"),
])
def test_escapes_refusals_and_payloads_answer_as_before(body):
    _same_on_both_paths(body.replace(b"BID", new_batch_id().encode()).replace(b'"D"', b'"%s"' % day_str().encode()))


def test_a_batch_over_the_maximum_size_is_refused_on_the_fast_path_too(settings):
    max_batch = settings.PRIVACY["MAX_BATCH_SIZE"]
    assert _same_on_both_paths(_batch([krr_item()] * (max_batch + 1)), fast=True)[1] == "batch_too_large"


def test_the_fast_digest_is_the_general_paths_canonical_form():
    reports = [krr_item(value="red", region="US", version=1), {"day": day_str(), "value": "é", "metric": "color",
                                                               "region": None}]
    batch_id = new_batch_id()
    body = _batch(reports, batch_id=batch_id)
    canonical = orjson.dumps([batch_id, reports], option=orjson.OPT_SORT_KEYS)
    assert validation._encode_sorted([batch_id, _parse_fast(body).reports]) == canonical


def test_an_all_accepted_batch_of_several_days_and_metrics_keeps_its_groups_in_first_seen_order(make_metric):
    make_metric(name="size", domain=["s", "m", "l"], bound=100)
    reports = [krr_item(value="red", day=day_str(-(i % 3))) if i % 2 else krr_item(metric="size", value="m")
               for i in range(60)]
    outcome = _same_on_both_paths(_batch(reports), fast=True)
    assert len(outcome[4].groups) == 4 and outcome[4].rejections == []


def test_the_fast_structs_fields_are_declared_in_sorted_order():
    """The digest encodes them in declaration order, which must be the canonical form's sorted keys."""
    assert list(_KrrItem.__struct_fields__) == sorted(_KrrItem.__struct_fields__)


# --- the worker's table of checked reports: a verdict holds only while what decided it is unchanged
# (a new UTC day and a change of regions: test_ingest.py's tests of those, which post through this table)


def _fast_rejections(reports) -> list:
    """The rejections of the fast path for ``reports`` (each call a new batch, the table kept)."""
    parsed = _parse_fast(_batch(reports))
    assert parsed is not None and type(parsed.reports[0]) is _KrrItem
    return validate_items(parsed.reports).rejections


def test_a_checked_report_is_checked_again_after_a_new_metric_version():
    from telemetry.services import change_metric

    assert _fast_rejections([krr_item(value="red")]) == []
    change_metric(name="color", domain=["green", "blue"])  # a new current version without "red"
    assert _fast_rejections([krr_item(value="red")]) == [(0, "value_out_of_domain")]
    assert _fast_rejections([krr_item(value="red", version=1)]) == []


def test_the_table_of_checked_reports_is_bounded(monkeypatch):
    monkeypatch.setattr(validation._CheckedReports, "MAX_ENTRIES", 5)
    for value in ("red", "green", "blue"):
        for region in ("US", "DE", "FR"):
            assert _fast_rejections([krr_item(value=value, region=region)]) == []
    assert len(validation._checked_reports._rows) <= 6


def test_reports_read_before_in_other_spellings_get_the_general_paths_digest_and_records():
    """The worker keeps each report's bytes as sent -> (report, canonical JSON); a report met again, in any
    spelling (key order, spaces), still gives the general path's digest and outcome."""
    spellings = [b'{"metric":"color","value":"red","day":"D"}', b'{"day":"D","value":"red","metric":"color"}',
                 b'{ "metric" : "color", "value": "red", "day": "D" }', b'{"metric":"color","value":"red","day":"D",'
                 b'"region":"US"}', b'{"region":null,"metric":"color","value":"blue","day":"D","version":1}']
    for _ in range(2):  # the second time, every report comes from the table
        for order in (spellings, spellings[::-1]):
            body = (b'{"batch_id":"%s","client_id":"c","reports":[%s]}' % (new_batch_id().encode(), b",".join(order))
                    ).replace(b'"D"', b'"%s"' % day_str().encode())
            assert _same_on_both_paths(body, fast=True)[4].rejections == []


def test_the_table_of_read_reports_is_bounded(monkeypatch):
    monkeypatch.setattr(validation._ReadReports, "MAX_ENTRIES", 3)
    for region in ("US", "DE", "FR", "JP", "BR", "NL", "US"):
        assert _fast_rejections([krr_item(value="red", region=region), krr_item(value="blue")]) == []
    assert len(validation._read_reports.entries) <= 5
