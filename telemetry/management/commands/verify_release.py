from django.core.management.base import BaseCommand, CommandError

from deploy.api.errors import ApiError
from telemetry.release.audit import operator_cells, replay_release


class Command(BaseCommand):
    help = ("Replay a release: re-derive its noise from the sealed seed and recount its raw data. "
            "The operator's tool: it needs the audit key and the database, and shows raw counts with --cells.")

    def add_arguments(self, parser):
        parser.add_argument("release_id")
        parser.add_argument("--cells", action="store_true", help="Print every cell's raw, noise and noisy counts.")

    def handle(self, *args, release_id, cells, **options):
        try:
            replay = replay_release(release_id)
        except ApiError as error:
            raise CommandError(f"{error.code}: {error.message}")
        if cells:
            for cell in operator_cells(replay):
                self.stdout.write(
                    f"day={cell['day']} region={cell['region']!r} raw={cell['raw']} noise={cell['noise']}"
                    f" noisy={cell['noisy']} ok={cell['verified']}"
                )
        noise_verified = bool(replay.cell_verified.all())
        self.stdout.write(
            f"release {replay.release.id}: {replay.cell_verified.size} cells, epoch {replay.release.data_epoch},"
            f" scale {replay.release.noise_scale}, noise_verified={noise_verified},"
            f" postprocessing_verified={replay.postprocessing_verified}"
        )
        if not (noise_verified and replay.postprocessing_verified):
            raise CommandError("verification FAILED")
