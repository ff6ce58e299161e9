from django.core.management.base import BaseCommand, CommandError

from telemetry import services
from deploy.api.errors import ApiError


class Command(BaseCommand):
    help = "Create an ingest key for an app and print it. It is shown once and stored hashed."

    def add_arguments(self, parser):
        parser.add_argument("app")

    def handle(self, *args, app, **options):
        try:
            key, plaintext = services.create_ingest_key(app=app)
        except ApiError as error:
            raise CommandError(f"{error.code}: {error.message}")
        self.stdout.write(f"created ingest key {key.id} for {key.app}\nkey: {plaintext}")
