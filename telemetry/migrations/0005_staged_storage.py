"""Aggregate, then discard: staged batches, epoch count deltas, limits in the database.

Existing data is carried over: reports not yet rolled up are folded into the
counts, the counts become the deltas of epoch 1, and per-report rows are
dropped. Releases that counted every report (watermark at the last report)
replay against epoch 1; older ones keep no replayable data (their verify
answers ``audit_data_unavailable``).
"""

import secrets

import django.db.models.deletion
import django.utils.timezone
import numpy as np
from django.db import migrations, models

from privacy.ldp import make_oracle


def _fold_unrolled_reports(apps, max_rolled: int) -> None:
    Metric = apps.get_model("telemetry", "Metric")
    Report = apps.get_model("telemetry", "Report")
    ObservedCounts = apps.get_model("telemetry", "ObservedCounts")
    increments: dict[tuple, list] = {}
    for report in Report.objects.filter(id__gt=max_rolled).iterator():
        metric = Metric.objects.get(pk=report.metric_id)
        oracle = make_oracle(metric.protocol, len(metric.domain), metric.epsilon)
        support = np.zeros(oracle.k, dtype=np.int64)
        if report.value is not None:
            support[report.value] = 1
        else:
            support += oracle.support_counts(oracle.unpack([bytes(report.payload)]))
        cell = increments.setdefault((report.metric_id, report.day, report.region), [0, 0])
        cell[0] += 1
        cell[1] = cell[1] + support
    for (metric_id, day, region), (reports, support) in increments.items():
        row, _ = ObservedCounts.objects.get_or_create(
            metric_id=metric_id, day=day, region=region,
            defaults={"reports": 0, "support": np.zeros(len(support), dtype="<i8").tobytes()})
        row.reports += reports
        row.support = (np.frombuffer(bytes(row.support), dtype="<i8") + support).astype("<i8").tobytes()
        row.save()


def carry_over(apps, schema_editor):
    Report = apps.get_model("telemetry", "Report")
    RollupWatermark = apps.get_model("telemetry", "RollupWatermark")
    ObservedCounts = apps.get_model("telemetry", "ObservedCounts")
    Release = apps.get_model("telemetry", "Release")
    watermark = RollupWatermark.objects.filter(pk=1).values_list("report_id", flat=True).first() or 0
    last_report = Report.objects.order_by("-id").values_list("id", flat=True).first() or 0
    _fold_unrolled_reports(apps, watermark)
    if not (ObservedCounts.objects.exists() or Release.objects.exists()):
        return
    epoch = apps.get_model("telemetry", "RollupEpoch").objects.create(token=secrets.token_urlsafe(16))
    apps.get_model("telemetry", "CountDelta").objects.bulk_create(
        apps.get_model("telemetry", "CountDelta")(epoch=epoch.id, metric_id=row.metric_id, day=row.day,
                                                  region=row.region, reports=row.reports, support=row.support)
        for row in ObservedCounts.objects.all()
    )
    Release.objects.filter(watermark__gte=last_report).update(data_epoch=epoch.id)


class Migration(migrations.Migration):

    dependencies = [("telemetry", "0004_ingest_hot_path")]

    operations = [
        migrations.CreateModel(
            name="StagedReports",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("payload", models.BinaryField()),
                ("metric", models.ForeignKey(db_constraint=False, db_index=False,
                                             on_delete=django.db.models.deletion.DO_NOTHING, to="telemetry.metric")),
            ],
        ),
        migrations.CreateModel(
            name="RollupEpoch",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("token", models.CharField(max_length=32, unique=True)),
                ("completed_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
        ),
        migrations.CreateModel(
            name="CountDelta",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("epoch", models.BigIntegerField()),
                ("day", models.DateField()),
                ("region", models.CharField(blank=True, default="", max_length=2)),
                ("reports", models.BigIntegerField()),
                ("support", models.BinaryField()),
                ("metric", models.ForeignKey(db_constraint=False, db_index=False,
                                             on_delete=django.db.models.deletion.DO_NOTHING, to="telemetry.metric")),
            ],
            options={"indexes": [models.Index(fields=["metric", "day", "epoch"], name="countdelta_metric_day_epoch")]},
        ),
        migrations.CreateModel(
            name="DailySecret",
            fields=[
                ("day", models.DateField(primary_key=True, serialize=False)),
                ("secret", models.BinaryField()),
            ],
        ),
        migrations.CreateModel(
            name="ClientCounter",
            fields=[
                ("key", models.BigIntegerField(primary_key=True, serialize=False)),
                ("day", models.DateField()),
                ("count", models.PositiveIntegerField(default=0)),
            ],
        ),
        migrations.AddField(
            model_name="release",
            name="data_epoch",
            field=models.BigIntegerField(null=True, help_text="The roll-up epoch whose counts were noised; "
                                                              "null for releases made before epochs existed."),
        ),
        migrations.RunPython(carry_over, migrations.RunPython.noop),
        migrations.RemoveField(model_name="release", name="watermark"),
        migrations.DeleteModel(name="Report"),
        migrations.DeleteModel(name="RollupWatermark"),
    ]
