from django.core.management.base import BaseCommand, CommandError

from telemetry.release.audit import verify_release
from deploy.api.errors import ApiError


class Command(BaseCommand):
    help = "Replay a release: re-derive its noise from the sealed seed and recount the raw data."

    def add_arguments(self, parser):
        parser.add_argument("release_id")
        parser.add_argument("--cells", action="store_true", help="Print every cell's raw, noise and noisy counts.")

    def handle(self, *args, release_id, cells, **options):
        try:
            result = verify_release(release_id)
        except ApiError as error:
            raise CommandError(f"{error.code}: {error.message}")
        if cells:
            for cell in result["cells"]:
                self.stdout.write(
                    f"day={cell['day']} region={cell['region']!r} raw={cell['raw']} noise={cell['noise']}"
                    f" noisy={cell['noisy']} ok={cell['noisy_equals_raw_plus_noise']}"
                )
        self.stdout.write(
            f"release {result['release_id']}: {result['cells_checked']} cells, watermark {result['watermark']},"
            f" scale {result['noise_scale']}, noise_verified={result['noise_verified']},"
            f" postprocessing_verified={result['postprocessing_verified']}"
        )
        if not (result["noise_verified"] and result["postprocessing_verified"]):
            raise CommandError("verification FAILED")
