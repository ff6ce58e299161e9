from django.core.management.base import BaseCommand, CommandError

from deploy.api.users import services
from deploy.api.errors import ApiError


class Command(BaseCommand):
    help = "Create an analyst or admin and print their API token."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=["analyst", "admin"])

    def handle(self, *args, username, role, **options):
        try:
            user, token = services.create_user(username=username, role=role)
        except ApiError as error:
            raise CommandError(f"{error.code}: {error.message}")
        self.stdout.write(f"created {role} {user.username}\ntoken: {token}")
