"""How a release is stored and pinned: the width-tagged noisy counts, the canonical digest of the
released data, the binary Release INSERT, and the binary roll-up read (each against its plain
counterpart)."""

from __future__ import annotations

import hashlib

import numpy as np
import orjson
import pytest
from django.db import connection

from telemetry import selectors
from telemetry.catalog import catalog
from accounting.models import LedgerEntry
from telemetry.models import Release
from deploy.api.db import insert_binary as _insert
from telemetry.release.codec import pack_counts, unpack_counts
from telemetry.release.released import DIGEST_LAYOUT, ReleasedData, released_digest
from telemetry.rollup import advance_rollup

pytestmark = pytest.mark.django_db


# --- noisy counts: one width byte, then little-endian counts ------------------------------------


@pytest.mark.parametrize("low, high, width", [(0, 0, 1), (-128, 127, 1), (-129, 5, 2), (0, 128, 2),
                                              (-32768, 32767, 2), (0, 32768, 4), (-(2**31), 2**31 - 1, 4),
                                              (0, 2**31, 8), (-(2**63), 2**63 - 1, 8)])
def test_counts_are_stored_in_the_narrowest_width_and_read_back_exactly(low, high, width):
    counts = np.array([[low, 0, high], [1, -1, 0]], dtype=np.int64)
    blob = pack_counts(counts)
    assert blob[0] == width and len(blob) == 1 + width * counts.size
    assert blob[1:] == counts.astype(f"<i{width}").tobytes()  # little-endian, row-major
    back = unpack_counts(blob, counts.size)
    assert back.dtype == np.int64 and (back.reshape(counts.shape) == counts).all()


@pytest.mark.parametrize("blob", [b"", b"\x03" + bytes(6), b"\x02" + bytes(5), b"\x02" + bytes(8),
                                  np.arange(3, dtype="<i8").tobytes()])  # the old untagged int64 layout
def test_anything_but_a_tagged_blob_of_the_grid_size_is_refused(blob):
    with pytest.raises(ValueError):
        unpack_counts(blob, 3)


def test_a_90_day_grid_at_small_epsilon_takes_2_bytes_per_count(q, analyst, color):
    user, _ = analyst
    q.add_krr(color, q.day(-1), "DE", [300, 200, 100])
    result = q.run(user, q.body(color, q.day(-90), q.day(-1), epsilon="0.01", group_by=["day", "region"]))
    blob = bytes(Release.objects.get(id=result["release"]["id"]).noisy_counts)
    assert blob[0] == 2 and len(blob) == 1 + 2 * 90 * len(q.axis) * 3


def test_verify_refuses_counts_it_cannot_decode_with_a_clear_error(q, analyst, admin, color):
    user, _ = analyst
    q.add_krr(color, q.day(-1), "DE", [3, 2, 1])
    release_id = q.run(user, q.body(color, q.day(-1), epsilon="1"))["release"]["id"]
    release = Release.objects.get(id=release_id)
    Release.objects.filter(id=release_id).update(noisy_counts=q.noisy(release).astype("<i8").tobytes())
    response = q.client(admin[1], raise_errors=False).post(f"/api/v1/releases/{release_id}/verify")
    assert response.status_code == 409 and response.json()["code"] == "audit_counts_unreadable"


def test_a_cached_answer_whose_counts_do_not_decode_is_a_clear_error_and_costs_nothing(q, analyst, color):
    user, token = analyst
    q.add_krr(color, q.day(-1), "DE", [3, 2, 1])
    body = q.body(color, q.day(-1), epsilon="1")
    release_id = q.run(user, body)["release"]["id"]
    release = Release.objects.get(id=release_id)
    Release.objects.filter(id=release_id).update(noisy_counts=q.noisy(release).astype("<i8").tobytes())
    spent = LedgerEntry.objects.count()
    response = q.client(token, raise_errors=False).post("/api/v1/queries", data=orjson.dumps(body),
                                                        content_type="application/json")
    assert response.status_code == 409 and response.json()["code"] == "release_unreadable"
    assert LedgerEntry.objects.count() == spent


# --- the digest of the released data ---------------------------------------------------------------


def _layout_by_hand(cells: list[dict]) -> str:
    """docs/privacy.md, "Audit": the digest recomputed from a response's JSON, independently of the code."""
    k = len(cells[0]["counts"])
    head = (f"{DIGEST_LAYOUT} {len(cells)} {k}\n" + ",".join(c.get("day", "") for c in cells) + "\n"
            + ",".join(c.get("region", "") for c in cells) + "\n").encode()
    body = b"".join(
        np.array([c[key] for c in cells], dtype=dtype).tobytes()
        for key, dtype in (("reports", "<i8"), ("counts", "<i8"), ("unbiased", "<f8"), ("ci_low", "<f8"),
                           ("ci_high", "<f8"))
    )
    return hashlib.sha256(head + body).hexdigest()


@pytest.mark.parametrize("group_by", [["day", "region"], ["region"], ["day"], []])
def test_the_stored_digest_is_the_documented_layout_of_the_json_cells(q, analyst, color, group_by):
    user, _ = analyst
    q.add_krr(color, q.day(-2), "DE", [30, 20, 10])
    q.add_krr(color, q.day(-1), "", [1, 0, 0])  # small: merged into "other" when grouped by region
    result = q.run(user, q.body(color, q.day(-2), q.day(-1), epsilon="2", group_by=group_by))
    stored = Release.objects.get(id=result["release"]["id"]).released_digest
    assert stored == released_digest(result["data"]) == _layout_by_hand(result["data"])


def test_the_digest_covers_every_released_number_and_label():
    data = ReleasedData(["2026-01-01"], ["DE"], np.array([3]), np.array([[2, 1]]), np.array([[0.5, 0.0]]),
                        np.array([[4.25, 2.0]]), unbiased=np.array([[2.37, -0.41]]))
    cells = orjson.loads(orjson.dumps(data.cells(), option=orjson.OPT_SERIALIZE_NUMPY))
    assert released_digest(cells) == data.digest() == _layout_by_hand(cells)
    for key, change in (("day", "2026-01-02"), ("region", "US"), ("reports", 4), ("counts", [1, 2]),
                        ("unbiased", [2.37, -0.4]), ("ci_low", [0.5, 0.01]), ("ci_high", [4.26, 2.0])):
        assert released_digest([{**cells[0], key: change}]) != data.digest(), key


# --- binary paths against their plain counterparts ---------------------------------------------------


def test_the_binary_release_insert_stores_what_the_orm_stores(q, analyst, color):
    user, _ = analyst
    q.add_krr(color, q.day(-1), "DE", [5, 4, 3])
    release = Release.objects.get(id=q.run(user, q.body(color, q.day(-1), epsilon="1"))["release"]["id"])
    fields = [f.attname for f in Release._meta.concrete_fields if f.attname != "id"]
    values = {name: getattr(release, name) for name in fields}
    via_orm, via_insert = Release(**values), Release(**values)
    via_orm.save(force_insert=True)
    _insert(via_insert)
    assert via_insert._state.adding is False and via_insert._state.db == "default"
    rows = {row.pop("id"): {k: bytes(v) if isinstance(v, memoryview) else v for k, v in row.items()}
            for row in Release.objects.filter(id__in=[via_orm.id, via_insert.id]).values("id", *fields)}
    assert rows[via_orm.id] == rows[via_insert.id]


def _rows_as_sorted_tuples(rows: selectors.CountRows) -> list:
    return sorted(zip(rows.days, rows.regions, rows.reports.tolist(), map(tuple, rows.support.tolist())))


def test_the_binary_rollup_read_returns_the_plain_read(q, color, monkeypatch):
    for offset, region, counts in ((-3, "DE", [4, 0, 1]), (-3, "", [0, 2, 0]), (-2, "US", [7, 7, 7]),
                                   (-1, "DE", [1, 2, 3]), (-1, "FR", [2, 0, 0])):  # FR: not on the test axis
        q.add_krr(color, q.day(offset), region, counts)
    advance_rollup()
    spec = catalog.by_id(color.id)
    binary = selectors.observed_rows(spec, q.day(-3), q.day(-1))
    monkeypatch.setattr(connection, "vendor", "sqlite")  # the portable path, through Django's cursor
    plain = selectors.observed_rows(spec, q.day(-3), q.day(-1))
    assert _rows_as_sorted_tuples(binary) == _rows_as_sorted_tuples(plain)
    assert len(binary.regions) == 5 and set(binary.regions) == {"", "DE", "US", "FR"}
    assert binary.start == q.day(-3) and sorted(binary.day_offsets.tolist()) == [0, 0, 1, 2, 2]
    empty = selectors.observed_rows(spec, q.day(-30), q.day(-20))
    assert empty.support.shape == (0, 3) and empty.regions == []
