"""The audit trail: a release replays exactly (noise, selection counts and post-processing), tampering is
caught, reports that arrive later do not disturb a replay, changing the ε share does not change an old
release, the ledger is insert-only."""

from __future__ import annotations

import hashlib
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
from telemetry.models import Release
from telemetry.release.audit import operator_cells, replay_release
from telemetry.release.codec import pack_counts, unpack_counts
from telemetry.release.released import released_digest
from telemetry.rollup import advance_rollup

pytestmark = pytest.mark.django_db


def _verify(q, admin_token, release_id, raise_errors=True):
    return q.client(admin_token, raise_errors=raise_errors).post(f"/api/v1/releases/{release_id}/verify")


def _selection(release) -> np.ndarray:
    """The release's stored selection counts, one per grid cell."""
    return unpack_counts(bytes(release.selection_counts), len(release.regions) * 2)


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
    assert report["seal_verified"] is True
    assert report["release_id"] == str(release.id) and report["data_version"] == result["release"]["data_version"]
    assert report["cells_checked"] == 6 and len(report["cells"]) == 6
    # ε = 0.5 grouped by region: the grid at 0.45 (t = Δ/0.45 = 20/9), the selection counts at 0.05 (t = m/0.05)
    assert report["sensitivity"] == 1 and Fraction(report["noise_scale"]) == Fraction(20, 9)
    assert Fraction(report["selection_scale"]) == 20 and report["epsilon"] == 0.5
    assert [(c["day"], c["region"], c["verified"]) for c in report["cells"]] == [
        (day.isoformat(), region, True) for day in (q.day(-2), q.day(-1)) for region in q.axis]
    # the digests pin the released data the analyst got and the stored noisy counts
    assert report["released_digest"] == release.released_digest == released_digest(result["data"])
    assert report["noisy_counts_digest"] == hashlib.sha256(bytes(release.noisy_counts)).hexdigest()
    assert report["selection_counts_digest"] == hashlib.sha256(bytes(release.selection_counts)).hexdigest()
    # the operator's replay (audit key + database) shows the raw counts: the recount is what was stored,
    # and each cell's last column is its report count, selection noise and stored selection count
    replay = replay_release(release.id)
    assert replay.columns == ["red", "green", "blue", "selection"]
    assert (replay.raw[:, :3] == expected).all() and (replay.raw[:, 3] == expected.sum(axis=1)).all()
    assert (replay.noisy == replay.raw + replay.noise).all()
    assert (replay.noisy[:, :3].reshape(-1) == q.noisy(release)).all()
    assert (replay.noisy[:, 3] == _selection(release)).all()


def test_verify_over_the_api_reveals_no_raw_count_noise_or_noisy_count(q, analyst, admin, color):
    """An admin could run a query at a tiny ε and verify it: the API must prove without revealing."""
    user, _ = analyst
    release, expected, _ = _krr_release(q, user, color)
    report = _verify(q, admin[1], release.id).json()
    assert set(report) == {"release_id", "data_version", "noise_scale", "sensitivity", "epsilon", "seal_verified",
                           "released_digest", "noisy_counts_digest", "selection_scale", "selection_counts_digest",
                           "cells_checked", "noise_verified", "postprocessing_verified", "cells"}
    assert all(set(cell) == {"day", "region", "verified"} for cell in report["cells"])
    assert all(isinstance(cell["verified"], bool) for cell in report["cells"])


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

    cells = operator_cells(replay_release(result["release"]["id"]))
    oracle = catalog.by_id(metric.id).oracle
    assert report["sensitivity"] == oracle.max_support + 1  # m = 1: one report's support weight plus its n
    if protocol in ("oue", "olh"):
        assert oracle.max_support == k
    for cell in cells:
        day = q.day(-3) if cell["day"] == d1.isoformat() else q.day(-2)
        n, support = supports.get((day, cell["region"]), (0, np.zeros(k, dtype=np.int64)))
        assert cell["columns"][-2:] == ["n", "selection"]
        assert cell["raw"] == [*support.tolist(), n, n], cell  # the selection count's raw value is n too
        assert cell["verified"] is True


def test_a_tampered_selection_count_fails_verification_in_that_cell_only(q, analyst, admin, color):
    """The selection counts are checked like the grid: raw n + selection noise = stored selection count."""
    user, _ = analyst
    release, _, _ = _krr_release(q, user, color)
    assert _verify(q, admin[1], release.id).json()["noise_verified"] is True
    selection = _selection(release).copy()
    selection[1] += 1  # (day 1, DE): one more than its n + noise, too little to change what is shown
    Release.objects.filter(id=release.id).update(selection_counts=pack_counts(selection))
    report = _verify(q, admin[1], release.id).json()
    assert report["noise_verified"] is False
    assert [c["verified"] for c in report["cells"]] == [True, False, True, True, True, True]
    selection[1] = 10**6  # now it moves that region out of "other": the released data no longer follows
    Release.objects.filter(id=release.id).update(selection_counts=pack_counts(selection))
    report = _verify(q, admin[1], release.id).json()
    assert report["noise_verified"] is False and report["postprocessing_verified"] is False
    Release.objects.filter(id=release.id).update(selection_counts=b"\x01")  # not a blob of 6 counts
    response = _verify(q, admin[1], release.id, raise_errors=False)
    assert response.status_code == 409 and response.json()["code"] == "audit_counts_unreadable"


def test_changing_the_selection_share_changes_new_releases_only(q, analyst, admin, color, settings):
    """A release keeps the ε split it was made with: after the setting changes it re-renders (cached, free)
    and replays the same; a fresh release uses the new share."""
    user, _ = analyst
    release, _, first = _krr_release(q, user, color)
    settings.PRIVACY = {**settings.PRIVACY, "SELECTION_EPSILON_SHARE": "0.5"}
    cached = q.run(user, release.query)
    assert cached["privacy"]["cached"] is True and cached["data"] == first["data"]
    report = _verify(q, admin[1], release.id).json()
    assert report["noise_verified"] is True and report["postprocessing_verified"] is True
    fresh = Release.objects.get(id=q.run(user, {**release.query, "fresh": True})["release"]["id"])
    assert (Fraction(fresh.noise_scale), Fraction(fresh.selection_scale)) == (4, 4)  # 0.25 each
    assert _verify(q, admin[1], fresh.id).json()["noise_verified"] is True


def test_ungrouped_release_replays(q, analyst, admin, color):
    user, _ = analyst
    q.add_krr(color, q.day(-1), "DE", [3, 2, 1])
    result = q.run(user, q.body(color, q.day(-5), q.day(-1), epsilon="1"))
    report = _verify(q, admin[1], result["release"]["id"]).json()
    assert report["noise_verified"] and report["postprocessing_verified"] and report["cells_checked"] == 1
    assert report["selection_scale"] is None and report["selection_counts_digest"] is None  # one mechanism
    assert operator_cells(replay_release(result["release"]["id"]))[0]["raw"] == [3, 2, 1]


def test_a_tampered_noisy_count_fails_verification_in_that_cell_only(q, analyst, admin, color):
    user, _ = analyst
    release, _, _ = _krr_release(q, user, color)
    noisy = q.noisy(release).copy()
    noisy[4] += 1  # second cell of the grid (day 1, DE), value "green"
    Release.objects.filter(id=release.id).update(noisy_counts=pack_counts(noisy))
    report = _verify(q, admin[1], release.id).json()
    assert report["noise_verified"] is False
    assert [c["verified"] for c in report["cells"]] == [True, False, True, True, True, True]
    assert report["postprocessing_verified"] is False  # the released values no longer follow from them


def test_tampered_released_data_fails_postprocessing_verification(q, analyst, admin, color):
    user, _ = analyst
    release, _, result = _krr_release(q, user, color)
    data = result["data"]
    data[0]["counts"][0] += 1
    Release.objects.filter(id=release.id).update(released_digest=released_digest(data))
    report = _verify(q, admin[1], release.id).json()
    assert report["noise_verified"] is True and report["postprocessing_verified"] is False


def test_a_count_slipped_into_a_counted_epoch_is_caught(q, analyst, admin, color):
    from telemetry.models import CountDelta

    user, _ = analyst
    release, _, _ = _krr_release(q, user, color)
    CountDelta.objects.create(epoch=release.data_epoch, metric_id=color.id, day=q.day(-1), region="US", reports=1,
                              support=np.array([0, 0, 1], dtype="<i8").tobytes())
    report = _verify(q, admin[1], release.id).json()
    assert report["noise_verified"] is False
    bad = [(c["day"], c["region"]) for c in report["cells"] if not c["verified"]]
    assert bad == [(q.day(-1).isoformat(), "US")]


def test_reports_rolled_up_after_the_release_do_not_change_its_verification(q, analyst, admin, color):
    user, _ = analyst
    release, _, first = _krr_release(q, user, color)
    q.add_krr(color, q.day(-1), "US", [50, 0, 0])
    q.add_krr(color, q.day(-2), "DE", [0, 7, 0])
    assert advance_rollup().id > release.data_epoch  # the roll-up has moved on
    report = _verify(q, admin[1], release.id).json()
    assert report["noise_verified"] is True and report["postprocessing_verified"] is True
    # a fresh release of the same query counts the new reports, at a new data version
    fresh = q.run(user, {**release.query, "fresh": True})
    assert fresh["release"]["data_version"] != first["release"]["data_version"]
    assert Release.objects.get(id=fresh["release"]["id"]).data_epoch > release.data_epoch
    assert _verify(q, admin[1], fresh["release"]["id"]).json()["noise_verified"] is True
    assert operator_cells(replay_release(fresh["release"]["id"]))[3 + q.axis.index("US")]["raw"] == [59, 9, 1, 69]


def test_a_release_older_than_epochs_cannot_be_replayed_and_says_so(q, analyst, admin, color):
    user, _ = analyst
    release, _, _ = _krr_release(q, user, color)
    Release.objects.filter(id=release.id).update(data_epoch=None)
    response = _verify(q, admin[1], release.id, raise_errors=False)
    assert response.status_code == 409 and response.json()["code"] == "audit_data_unavailable"


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
    assert row["query"] == release.query and row["data_version"] == replay_token(release)
    entry = LedgerEntry.objects.get()
    assert row["ledger_entries"] == [entry.id]
    assert (entry.spender, entry.epsilon_micro, entry.subject_kind, entry.subject_id) == (
        f"user:{user.id}", 500_000, "release", str(release.id))
    assert entry.event == {"kind": "composed", "parts": [  # the grid and the selection counts: one charge
        {"kind": "discrete_laplace", "epsilon": "0.45", "sensitivity": release.sensitivity},
        {"kind": "discrete_laplace", "epsilon": "0.05", "sensitivity": 1}]}
    assert Fraction(row["noise_scale"]) == Fraction(20, 9) and Fraction(row["selection_scale"]) == 20
    assert "sealed_seed" not in row and "noisy_counts" not in row and "seed" not in row


def replay_token(release) -> str:
    from telemetry.models import RollupEpoch

    return RollupEpoch.objects.get(id=release.data_epoch).token


# --- the management command --------------------------------------------------------------


def test_verify_release_management_command(q, analyst, color):
    user, _ = analyst
    release, expected, _ = _krr_release(q, user, color)
    out = StringIO()
    call_command("verify_release", str(release.id), stdout=out)
    assert str(release.id) in out.getvalue() and "false" not in out.getvalue().lower(), out.getvalue()
    cells = StringIO()
    call_command("verify_release", str(release.id), "--cells", stdout=cells)  # the operator sees the raw counts
    assert f"raw={[*expected[0].tolist(), int(expected[0].sum())]}" in cells.getvalue()
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


def test_released_epochs_stay_recountable_while_unreleased_ones_are_merged(q, analyst, admin, color):
    """Compaction keeps one set of deltas per released epoch plus the newest, and every release verifies."""
    from telemetry.models import CountDelta, RollupEpoch

    user, _ = analyst
    release, _, _ = _krr_release(q, user, color)  # its roll-ups: four epochs, the last one released
    for counts in ([3, 0, 0], [0, 4, 0], [1, 1, 1]):  # three more roll-ups nobody queries
        q.add_krr(color, q.day(-1), "US", counts)
    later = q.run(user, {**release.query, "fresh": True})
    q.add_krr(color, q.day(-2), "DE", [2, 2, 2])  # and one more, unreleased: the newest
    epochs = set(CountDelta.objects.values_list("epoch", flat=True))
    later_epoch = Release.objects.get(id=later["release"]["id"]).data_epoch
    newest = RollupEpoch.objects.order_by("-id").first().id
    assert epochs == {release.data_epoch, later_epoch, newest}
    assert set(RollupEpoch.objects.values_list("id", flat=True)) >= epochs
    for release_id in (release.id, later["release"]["id"]):
        report = _verify(q, admin[1], release_id).json()
        assert report["noise_verified"] is True and report["postprocessing_verified"] is True
    # the raw counts at the later release's epoch: the first four roll-ups' [9, 9, 1] plus the next three's
    assert operator_cells(replay_release(later["release"]["id"]))[3 + q.axis.index("US")]["raw"][:3] == [13, 14, 2]
