import json

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from deploy.api.errors import ApiError
from deploy.api.parsing import reject_nul
from privacy.ldp import PROTOCOLS
from telemetry import serializers, services


class Command(BaseCommand):
    help = "Define metrics from arguments or from a JSON file (an object or a list of objects)."

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?")
        parser.add_argument("--domain", help="Comma-separated value labels, in order.")
        parser.add_argument("--epsilon", type=float, default=2.0)
        parser.add_argument("--report-epsilon", type=float, default=None,
                            help="The ε of one report (at most --epsilon; default epsilon/2), docs/privacy.md.")
        parser.add_argument("--protocol", default="auto", choices=["auto", *PROTOCOLS])
        parser.add_argument("--contribution-bound", type=int, default=None)
        parser.add_argument("--description", default="")
        parser.add_argument("--file", help="JSON file with metric definitions.")

    def handle(self, *args, **options):
        definitions = self._definitions(options)
        with transaction.atomic():  # all of the file's metrics, or none
            created = [self._create(definition) for definition in definitions]
        for metric in created:
            self.stdout.write(
                f"created metric {metric.name} v{metric.version}: k={metric.k} epsilon={metric.epsilon}"
                f" protocol={metric.protocol} contribution_bound={metric.contribution_bound}"
            )

    def _create(self, definition: dict):
        try:
            return services.create_metric(**definition)
        except ApiError as error:
            raise CommandError(f"{definition.get('name')}: {error.code}: {error.message}")

    def _definitions(self, options) -> list[dict]:
        if options["file"]:
            try:
                with open(options["file"]) as handle:
                    loaded = json.load(handle)
            except (OSError, json.JSONDecodeError) as error:
                raise CommandError(f"cannot read {options['file']}: {error}")
            definitions = loaded if isinstance(loaded, list) else [loaded]
            try:  # the API's own checks: the same definition is accepted here and by POST /metrics
                reject_nul(definitions, where=f"file {options['file']}")
                return [serializers.metric_create_input(definition) for definition in definitions]
            except ApiError as error:
                raise CommandError(f"{options['file']}: {error.code}: {error.message}")
        if not options["name"] or not options["domain"]:
            raise CommandError("give NAME and --domain, or --file")
        return [{
            "name": options["name"],
            "domain": [label.strip() for label in options["domain"].split(",")],
            "epsilon": options["epsilon"],
            "report_epsilon": options["report_epsilon"],
            "protocol": options["protocol"],
            "contribution_bound": options["contribution_bound"],
            "description": options["description"],
        }]
