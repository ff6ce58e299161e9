from django.core.management.base import BaseCommand, CommandError

from federation import log
from privacy.federated import signing


class Command(BaseCommand):
    help = ("Check the stored transparency log against every signed tree head the server has served: any edited, "
            "reordered, inserted or removed entry, or a log shorter than a signed head, fails (exit status 1).")

    def add_arguments(self, parser):
        parser.add_argument("--trusted-key", action="append", default=[],
                            help="a log public key to trust (hex/base64/PEM; repeat across a rotation). "
                                 "Default: the public half of LOG_SIGNING_KEY")

    def handle(self, *args, trusted_key, **options):
        try:
            keys = [signing.load_public_key(material) for material in trusted_key]
        except signing.KeyFormatError as exc:
            raise CommandError(f"--trusted-key: {exc}")
        report = log.audit(keys or None)
        self.stdout.write(f"{report.entries} entries, {report.heads_checked} signed heads checked, verified up to "
                          f"{report.verified_size}, {report.unsigned_entries} entries after the newest head")
        if not report.ok:
            raise CommandError("transparency log FAILED verification:\n" + "\n".join(report.problems))
        self.stdout.write("transparency log OK")
