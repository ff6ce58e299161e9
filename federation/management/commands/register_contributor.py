from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from deploy.api.errors import ApiError
from deploy.api.parsing import parse_epsilon_micro
from federation import exports


class Command(BaseCommand):
    help = ("Register a contributor of the export registry: its Ed25519 public key (hex, base64, or a PEM/raw file) "
            "and its lifetime epsilon budget. Prints its id and pseudonym.")

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--public-key", required=True, help="64 hex digits, base64, or the path of a key file")
        parser.add_argument("--epsilon", required=True, help="lifetime epsilon budget (the partition cap)")

    def handle(self, *args, name, public_key, epsilon, **options):
        path = Path(public_key)
        material = path.read_bytes() if len(public_key) < 4096 and path.is_file() else public_key
        try:
            contributor = exports.register_contributor(name=name, public_key=material,
                                                       lifetime_epsilon_micro=parse_epsilon_micro(epsilon))
        except ApiError as error:
            raise CommandError(f"{error.code}: {error.message}")
        self.stdout.write(f"registered contributor {contributor.pk} {contributor.name}\n"
                          f"pseudonym: {contributor.pseudonym}")
