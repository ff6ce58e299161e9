from celery import shared_task
from django.utils import timezone

from telemetry import limits, rollup
from telemetry.ingest.retention import expire_batch_records


@shared_task(name="telemetry.tasks.advance_rollup")
def advance_rollup() -> int:
    """Fold staged reports into counts (every ROLLUP_INTERVAL_S); the new epoch."""
    return rollup.advance_rollup().id


@shared_task(name="telemetry.tasks.expire_limits")
def expire_limits() -> int:
    """Delete the limit secrets, counters and batch records of days that can no longer receive reports."""
    now = timezone.now()
    return limits.expire(now.date()) + expire_batch_records(now)
