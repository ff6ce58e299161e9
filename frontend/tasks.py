from celery import shared_task
from django.contrib.sessions.models import Session
from django.utils import timezone


@shared_task(name="frontend.tasks.clear_sessions")
def clear_sessions() -> int:
    """Delete the expired logins of the pages (hourly): a session row outlives its use by at most an hour."""
    return Session.objects.filter(expire_date__lt=timezone.now()).delete()[0]
