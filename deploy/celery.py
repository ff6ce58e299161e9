"""The Celery app (cookiecutter-django wiring).

Queues: ``default`` for housekeeping (roll-ups), ``training`` for GPU hosts
(``celery -A deploy worker -Q training -c 1``).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "deploy.settings")

app = Celery("deploy")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
