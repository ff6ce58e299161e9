from celery import shared_task

from telemetry import rollup


@shared_task(name="telemetry.tasks.advance_rollup")
def advance_rollup() -> int:
    return rollup.advance_rollup()
