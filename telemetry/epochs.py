"""Compaction of roll-up epochs: keep the counts of every released epoch recountable, and no more.

An audit recounts a release's raw grid as the sum of the ``CountDelta`` rows of
epochs up to the release's ``data_epoch``. Epochs that no release counted need not
stay apart: after each roll-up, the deltas of every epoch after the last released
one are merged into the newest epoch, and those epochs are forgotten. The deltas
then hold one set of rows per released epoch plus the newest, instead of one per
roll-up (a roll-up every 30 s would otherwise keep 2,880 sets a day), and no delta
of a single unreleased interval stays behind for a database reader to isolate.

Queries hold ``COMPACTION_LOCK`` shared from reading the newest epoch until their
release commits; compaction takes it exclusively, for a step whose cost depends on
the number of cells, not of reports. So no epoch is merged away while a release
that counted it is being written.
"""

from __future__ import annotations

import numpy as np
from django.db.models import Max

from deploy.api.db import advisory_xact_lock
from telemetry.models import CountDelta, Release, RollupEpoch

COMPACTION_LOCK = 0x7E1E_0003


def hold_epochs() -> None:
    """Called by a query before it reads the newest epoch: its epoch stays recountable."""
    advisory_xact_lock(COMPACTION_LOCK, shared=True)


def compact(newest: int) -> int:
    """Merge the deltas of the unreleased epochs before ``newest`` (after the last released one) into
    ``newest``, and forget those epochs; the number of epochs merged. Inside the roll-up's transaction."""
    advisory_xact_lock(COMPACTION_LOCK)
    released = Release.objects.aggregate(last=Max("data_epoch"))["last"] or 0
    merged = list(RollupEpoch.objects.filter(id__gt=released, id__lt=newest).values_list("id", flat=True))
    if not merged:
        return 0
    rows = CountDelta.objects.filter(epoch__in=[*merged, newest])
    totals: dict[tuple, list] = {}
    for metric_id, day, region, reports, support in rows.values_list("metric_id", "day", "region", "reports",
                                                                     "support"):
        counts = np.frombuffer(bytes(support), dtype="<i8")
        cell = totals.setdefault((metric_id, day, region), [0, np.zeros_like(counts)])
        cell[0] += reports
        cell[1] = cell[1] + counts
    rows.delete()
    CountDelta.objects.bulk_create(
        CountDelta(epoch=newest, metric_id=metric_id, day=day, region=region, reports=reports,
                   support=support.astype("<i8").tobytes())
        for (metric_id, day, region), (reports, support) in totals.items())
    RollupEpoch.objects.filter(id__in=merged).delete()
    return len(merged)
