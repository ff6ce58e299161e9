"""The audit trail: a release replays exactly (noise and post-processing), tampering is caught,
reports that arrive later do not disturb a replay, the ledger is insert-only."""

from __future__ import annotations

from fractions import Fraction
from io import StringIO

import numpy as np
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from accounting.models import LedgerEntry
from privacy import central
from privacy.drbg import DRBG
from privacy.sealing import parse_key, unseal
from telemetry.models import Release, Report
from telemetry.release.codec import pack_counts
from telemetry.release.released import released_digest
from telemetry.rollup import advance_rollup

pytestmark = pytest.mark.django_db


def _verify(q, admin_token, release_id, raise_errors=True):
    return q.client(admin_token, raise_errors=raise_errors).post(f"/api/v1/releases/{release_id}/verify")


def _krr_release(q, user, metric):
    d1, d2 = q.day(-2), q.day(-1)
    raw = {(d1, "DE"): [12, 5, 3], (d1, ""): [1, 0, 2], (d2, "US"): [9, 9, 1], (d2, "DE"): [0, 4, 0]}
    for (day, region), counts in raw.items():
        q.add_krr(metric, day, region, counts)
    expected = [raw.get((day, region), [0, 0, 0]) for day in (d1, d2) for region in q.axis]
    result = q.run(user, q.body(metric, d1, d2, epsilon="0.5", group_by=["day", "region"]))
    return Release.objects.get(id=result["release"]["id"]), np.array(expected, dtype=np.int64), result


def test_krr_release_replays_exactly(q, analyst, admin, color):
    user, _ = analyst
    release, expected, result = _krr_release(q, user, color)
    response = _verify(q, admin[1], release.id)
    assert response.status_code == 200, response.json()
    report = response.json()
    assert report["noise_verified"] is True and report["postprocessing_verified"] is True
    assert report["release_id"] == str(release.id) and report["watermark"] == release.watermark
    assert report["cells_checked"] == 6 and len(report["cells"]) == 6
    assert report["sensitivity"] == 1 and Fraction(report["noise_scale"]) == 2
    raw = np.array([cell["raw"] for cell in report["cells"]])
    noise = np.array([cell["noise"] for cell in report["cells"]])
    noisy = np.array([cell["noisy"] for cell in report["cells"]])
    assert (raw == expected).all()  # the recount from raw reports is what was inserted
    assert (noisy == raw + noise).all() and all(c["noisy_equals_raw_plus_noise"] for c in report["cells"])
    assert (noisy.reshape(-1) == q.noisy(release)).all()
    assert [(c["day"], c["region"]) for c in report["cells"]] == [
        (day.isoformat(), region) for day in (q.day(-2), q.day(-1)) for region in q.axis]
    # the digest pins the released data the analyst got
    assert release.released_digest == released_digest(result["data"])


def test_the_sealed_seed_alone_re_derives_the_noise(q, analyst, color):
    """Independently of verify_release: unseal with the audit key, re-run the DRBG, compare."""
    user, _ = analyst
    release, expected, _ = _krr_release(q, user, color)
    sealed = bytes(release.sealed_seed)
    seed = unseal(parse_key(settings.AUDIT_KEY), sealed, release.id.bytes)
    assert len(seed) == 32 and seed not in sealed  # stored encrypted, never in plaintext
    _, noise = central.add_noise(np.zeros_like(expected), Fraction(release.noise_scale), DRBG(seed))
    assert (q.noisy(release) == (expected + noise).reshape(-1)).all()
    # no column of the release holds the raw counts in plaintext
    stored = bytes(release.noisy_counts)
    assert pack_counts(expected.reshape(-1)) != stored and expected.astype("<i8").tobytes() not in {stored, sealed}
    assert {f.name for f in Release._meta.get_fields()}.isdisjoint({"raw", "raw_counts", "seed"})


@pytest.mark.parametrize("protocol, k", [("oue", 4), ("olh", 6), ("ss", 5)])
def test_non_krr_release_replays_exactly(q, analyst, admin, protocol, k):
    user, _ = analyst
    metric = q.metric(name=f"m-{protocol}", domain=[f"v{i}" for i in range(k)], protocol=protocol, epsilon=1.5)
    d1, d2 = q.day(-3), q.day(-2)
    rng = np.random.default_rng(7)  # test data only, not privacy noise
    supports = {}
    for day, region, n in ((d1, "DE", 30), (d1, "US", 11), (d2, "US", 25), (d2, "", 4)):
        supports[(day, region)] = (n, q.add_randomized(metric, day, region, rng.integers(0, k, n)))
    result = q.run(user, q.body(metric, d1, d2, epsilon="2", group_by=["day", "region"]))
    report = _verify(q, admin[1], result["release"]["id"]).json()
    assert report["noise_verified"] is True and report["postprocessing_verified"] is True
    from telemetry.catalog import catalog

    oracle = catalog.by_id(metric.id).oracle
    assert report["sensitivity"] == oracle.max_support + 1  # m = 1: one report's support weight plus its n
    if protocol in ("oue", "olh"):
        assert oracle.max_support == k
    for cell in report["cells"]:
        day = q.day(-3) if cell["day"] == d1.isoformat() else q.day(-2)
        n, support = supports.get((day, cell["region"]), (0, np.zeros(k, dtype=np.int64)))
        assert cell["columns"][-1] == "n"
        assert cell["raw"] == [*support.tolist(), n], cell
        assert cell["noisy_equals_raw_plus_noise"] is True


def test_ungrouped_release_replays(q, analyst, admin, color):
    user, _ = analyst
    q.add_krr(color, q.day(-1), "DE", [3, 2, 1])
    result = q.run(user, q.body(color, q.day(-5), q.day(-1), epsilon="1"))
    report = _verify(q, admin[1], result["release"]["id"]).json()
    assert report["noise_verified"] and report["postprocessing_verified"] and report["cells_checked"] == 1
    assert report["cells"][0]["raw"] == [3, 2, 1]


def test_a_tampered_noisy_count_fails_verification_in_that_cell_only(q, analyst, admin, color):
    user, _ = analyst
    release, _, _ = _krr_release(q, user, color)
    noisy = q.noisy(release).copy()
    noisy[4] += 1  # second cell of the grid (day 1, DE), value "green"
    Release.objects.filter(id=release.id).update(noisy_counts=pack_counts(noisy))
    report = _verify(q, admin[1], release.id).json()
    assert report["noise_verified"] is False
    assert [c["noisy_equals_raw_plus_noise"] for c in report["cells"]] == [True, False, True, True, True, True]
    assert report["postprocessing_verified"] is False  # the released values no longer follow from them


def test_tampered_released_data_fails_postprocessing_verification(q, analyst, admin, color):
    user, _ = analyst
    release, _, result = _krr_release(q, user, color)
    data = result["data"]
    data[0]["counts"][0] += 1
    Release.objects.filter(id=release.id).update(released_digest=released_digest(data))
    report = _verify(q, admin[1], release.id).json()
    assert report["noise_verified"] is True and report["postprocessing_verified"] is False


def test_a_report_slipped_in_below_the_watermark_is_caught(q, analyst, admin, color):
    user, _ = analyst
    release, _, _ = _krr_release(q, user, color)
    assert release.watermark > 0
    Report.objects.create(id=-1, metric_id=color.id, day=q.day(-1), region="US", value=2)  # id <= watermark
    report = _verify(q, admin[1], release.id).json()
    assert report["noise_verified"] is False
    bad = [(c["day"], c["region"]) for c in report["cells"] if not c["noisy_equals_raw_plus_noise"]]
    assert bad == [(q.day(-1).isoformat(), "US")]


def test_reports_arriving_after_the_release_do_not_change_its_verification(q, analyst, admin, color):
    user, _ = analyst
    release, _, _ = _krr_release(q, user, color)
    ids = q.add_krr(color, q.day(-1), "US", [50, 0, 0]) + q.add_krr(color, q.day(-2), "DE", [0, 7, 0])
    assert min(ids) > release.watermark
    assert advance_rollup() > release.watermark  # the roll-up has moved on
    report = _verify(q, admin[1], release.id).json()
    assert report["noise_verified"] is True and report["postprocessing_verified"] is True
    # and a fresh release of the same query sees the new reports
    fresh = q.run(user, {**release.query, "fresh": True})
    assert fresh["release"]["data_as_of_report_id"] >= max(ids)
    assert _verify(q, admin[1], fresh["release"]["id"]).json()["noise_verified"] is True


def test_a_tampered_or_moved_sealed_seed_is_a_clear_failure_not_a_server_error(q, analyst, admin, color):
    user, _ = analyst
    release, _, _ = _krr_release(q, user, color)
    other = q.run(user, q.body(color, q.day(-9), epsilon="0.5"))["release"]["id"]
    sealed = bytearray(bytes(release.sealed_seed))
    sealed[-1] ^= 1
    Release.objects.filter(id=release.id).update(sealed_seed=bytes(sealed))
    Release.objects.filter(id=other).update(sealed_seed=bytes(Release.objects.get(id=release.id).sealed_seed))
    for release_id in (release.id, other):
        response = _verify(q, admin[1], release_id, raise_errors=False)
        assert response.status_code == 409, (release_id, response.status_code)
        assert response.json()["code"] == "audit_seal_invalid", release_id


def test_verify_of_an_unknown_release_is_404(q, admin):
    response = _verify(q, admin[1], "00000000-0000-4000-8000-000000000000")
    assert response.status_code == 404 and response.json()["code"] == "unknown_release"
    assert q.client(admin[1]).post("/api/v1/releases/not-a-uuid/verify").status_code == 404


def test_releases_list_shows_the_audit_record(q, analyst, admin, color):
    user, _ = analyst
    release, _, _ = _krr_release(q, user, color)
    listed = q.client(admin[1]).get("/api/v1/releases").json()["releases"]
    assert len(listed) == 1
    row = listed[0]
    assert row["id"] == str(release.id) and row["analyst"] == "ana" and row["epsilon"] == 0.5
    assert row["query"] == release.query and row["watermark"] == release.watermark
    entry = LedgerEntry.objects.get()
    assert row["ledger_entries"] == [entry.id]
    assert (entry.spender, entry.epsilon_micro, entry.subject_kind, entry.subject_id) == (
        f"user:{user.id}", 500_000, "release", str(release.id))
    assert entry.event == {"kind": "discrete_laplace", "epsilon": "0.5", "sensitivity": release.sensitivity}
    assert "sealed_seed" not in row and "noisy_counts" not in row and "seed" not in row


# --- the management command --------------------------------------------------------------


def test_verify_release_management_command(q, analyst, color):
    user, _ = analyst
    release, _, _ = _krr_release(q, user, color)
    out = StringIO()
    call_command("verify_release", str(release.id), stdout=out)
    assert str(release.id) in out.getvalue() and "false" not in out.getvalue().lower(), out.getvalue()
    noisy = q.noisy(release).copy()
    noisy[0] -= 1
    Release.objects.filter(id=release.id).update(noisy_counts=pack_counts(noisy))
    with pytest.raises(CommandError):  # a failed verification exits non-zero
        call_command("verify_release", str(release.id), stdout=StringIO(), stderr=StringIO())
    with pytest.raises(CommandError):
        call_command("verify_release", "00000000-0000-4000-8000-000000000000", stdout=StringIO())


# --- the ledger is insert-only --------------------------------------------------------------


def test_ledger_entries_cannot_be_changed_or_deleted_through_the_orm_or_sql(q, analyst, color):
    user, _ = analyst
    q.run(user, q.body(color, q.day(-1), epsilon="0.5"))
    entry = LedgerEntry.objects.get()

    entry.epsilon_micro = 1
    with pytest.raises(PermissionError), transaction.atomic():
        entry.save()
    with pytest.raises(PermissionError), transaction.atomic():
        entry.delete()
    with pytest.raises(DatabaseError), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).update(epsilon_micro=1)
    with pytest.raises(DatabaseError), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).delete()
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE accounting_ledgerentry SET epsilon_micro = 1 WHERE id = %s", [entry.pk])
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM accounting_ledgerentry WHERE id = %s", [entry.pk])
    with pytest.raises(PermissionError), transaction.atomic():
        Release.objects.get().delete()  # the release it paid for is kept too

    entry.refresh_from_db()
    assert entry.epsilon_micro == 500_000 and LedgerEntry.objects.count() == 1
