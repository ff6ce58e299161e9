"""How long batch records are kept: as long as a retry of the batch could still store reports."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings

from telemetry.models import Batch


def expire_batch_records(now: datetime) -> int:
    """Delete the records of batches older than the oldest day ingest accepts (a retry of one would
    be refused as too old anyway); the number deleted."""
    oldest = now - timedelta(days=settings.PRIVACY["REPORT_MAX_AGE_DAYS"] + 1)
    deleted, _ = Batch.objects.filter(received_at__lt=oldest).delete()
    return deleted
