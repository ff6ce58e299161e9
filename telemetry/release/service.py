"""Answering a query: the released-answer cache (free), else a new release paid in the ledger.

One transaction: charge the query's mechanism event -> raw counts of the latest roll-up
on the data-independent grid -> exact discrete Laplace from a fresh DRBG seed at the
event's scale (for a query grouped by region, then each cell's report count with its own
noise at the selection scale: one composed event) -> Release row with the sealed seed, the
roll-up epoch and the ledger entry.
Then post-processing of the noisy counts only. Queries never run or wait for a roll-up,
so their latency does not depend on how much data is waiting to be rolled up.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction

from accounting.events import MechanismEvent
from accounting.selectors import budget_status, charges_for, resets_at, user_spender, utc_today
from accounting.services import ledger
from accounting.types import Partition, Subject
from deploy.api.db import advisory_xact_lock, insert_binary
from deploy.api.errors import ApiError
from privacy import central
from privacy.drbg import DRBG, new_seed
from privacy.sealing import parse_key, seal
from telemetry import epochs, selectors
from telemetry.catalog import MetricSpec, catalog, partition_scope
from telemetry.models import Release
from telemetry.regions import region_axis
from telemetry.release.codec import pack_counts
from telemetry.release.grid import build_grid
from telemetry.release.postprocess import released_data
from telemetry.release.request import CanonicalQuery, Presentation, QueryRequest, grid_and_selection
from telemetry.release.responses import privacy_json, query_response


def _lock_query(query: CanonicalQuery) -> None:
    """Identical non-fresh queries wait for each other, so only the first one pays."""
    advisory_xact_lock(int(query.key[:15], 16))


def query_partitions(query: CanonicalQuery, metric_id: int) -> list[Partition]:
    """The lifetime-capped partitions a query is charged on: every data-day of its window."""
    return [Partition(partition_scope(metric_id), day.isoformat()) for day in query.days()]


def _partitions(request: QueryRequest) -> list[Partition]:
    return query_partitions(request.query, request.spec.id)


def _charge(user, request: QueryRequest, event: MechanismEvent, release_id: uuid.UUID) -> ledger.Charge:
    try:
        return ledger.charge(spender=user_spender(user), event=event, partitions=_partitions(request),
                             subject=Subject("release", str(release_id)))
    except ledger.PartitionCapReached as refused:
        raise ApiError("partition_cap_reached", "Some data-days of this metric have reached their lifetime "
                       "epsilon cap.", http_status=403, capped_days=[p.key for p in refused.partitions])


def _new_release(user, request: QueryRequest) -> tuple[Release, ledger.Charge]:
    """Charge, count, noise and store a release; inside the caller's transaction."""
    query, spec = request.query, request.spec
    release_id = uuid.uuid4()
    event = query.mechanism(spec)  # the one event: what is charged is what sets the noise scales
    grid, selection = grid_and_selection(event)
    paid = _charge(user, request, event, release_id)
    regions = region_axis()
    epochs.hold_epochs()  # the epoch read below stays recountable until this release commits
    observed = selectors.observed_rows(spec, query.start, query.end)  # the latest roll-up, in one snapshot
    raw = build_grid(spec, query, regions, observed)
    seed = new_seed()
    selection_scale = None if selection is None else selection.scale
    noise, selection_noise = central.release_noise(raw.shape, grid.scale, selection_scale, DRBG(seed))
    selection_counts = None if selection is None else \
        pack_counts(central.report_counts(spec.oracle, raw) + selection_noise)
    release = Release(
        id=release_id, analyst=user, metric_id=spec.id, query=query.as_json(), query_key=query.key,
        epsilon_micro=query.epsilon_micro, sensitivity=grid.sensitivity, noise_scale=str(grid.scale),
        selection_scale=None if selection is None else str(selection_scale), selection_counts=selection_counts,
        regions=list(regions), data_epoch=observed.epoch, noisy_counts=pack_counts(raw + noise),
        confidence=request.presentation.confidence, simultaneous=request.presentation.simultaneous,
        sealed_seed=seal(parse_key(settings.AUDIT_KEY), seed, release_id.bytes),
    )
    return release, paid


def _paid_answer(user, request: QueryRequest) -> tuple[Release, dict | None]:
    """(release, data and privacy) of a new paid release, or (release, None) for the one an
    identical concurrent query just made (then answered as cached)."""
    with transaction.atomic():
        if not request.fresh:
            _lock_query(request.query)
            if (released := selectors.latest_release(request.query.key)) is not None:
                return released, None
        release, paid = _new_release(user, request)
        data = released_data(release, request.spec, request.presentation)
        release.released_digest = data.digest()
        insert_binary(release)
    privacy = privacy_json(release, paid.remaining_after, resets_at(paid.budget_day), paid.entry.delta, cached=False)
    return release, {"data": data.cells(), "privacy": privacy}


def _cached_answer(user, release: Release, spec: MetricSpec, presentation: Presentation) -> dict:
    status = budget_status(user)
    entries = charges_for("release", [str(release.id)]).get(str(release.id), [])
    privacy = privacy_json(release, status["remaining"], status["resets_at"], entries[0].delta if entries else 0,
                           cached=True)
    return {"data": released_data(release, spec, presentation).cells(), "privacy": privacy}


def run_query(*, user, request: QueryRequest) -> dict:
    """The answer to a parsed query: cached if this query was released before (free), else paid."""
    release = None if request.fresh else selectors.latest_release(request.query.key)
    answer = None
    if release is None:
        release, answer = _paid_answer(user, request)
    if answer is None:
        answer = _cached_answer(user, release, request.spec, request.presentation)
    return query_response(release, request.spec, answer, request.presentation,
                          selectors.data_versions([release])[release.id])


def reopen_release(*, user, release: Release, presentation: Presentation) -> dict:
    """The answer of a stored release, re-rendered with ``presentation``, as a cached answer: free."""
    spec = catalog.by_id(release.metric_id)
    return query_response(release, spec, _cached_answer(user, release, spec, presentation), presentation,
                          selectors.data_versions([release])[release.id])


@dataclass(frozen=True)
class QueryPreview:
    """What a query would cost now, read without charging: free when its answer was released before."""

    released: Release | None  # the release that would be served again, for free (None: a new, paid one)
    charge: ledger.ChargePreview  # what the ledger would charge for a new release, and what would be left
    resets_at: datetime


def preview_query(*, user, request: QueryRequest) -> QueryPreview:
    released = None if request.fresh else selectors.latest_release(request.query.key)
    charge = ledger.preview(spender=user_spender(user), event=request.query.mechanism(request.spec),
                            partitions=_partitions(request))
    return QueryPreview(released, charge, resets_at(utc_today()))
