"""The ledger composes mechanism events for any spender, partition and subject.

Existing rows are carried over: a query's spend becomes a ``discrete_laplace``
event of its ε and sensitivity, spent by ``user:<id>`` on the partitions
``metric:<id>``/<day> of its data window, for subject ``release``/<id>. The
insert-only triggers are dropped for the move and put back after it.
"""

from datetime import date, timedelta
from decimal import Decimal

from django.db import migrations, models

from accounting.migrations import _ledger_triggers as triggers


def _days(start: date, end: date) -> list[str]:
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def carry_over(apps, schema_editor):
    LedgerEntry = apps.get_model("accounting", "LedgerEntry")
    DailySpend = apps.get_model("accounting", "DailySpend")
    PartitionSpend = apps.get_model("accounting", "PartitionSpend")
    PartitionCap = apps.get_model("accounting", "PartitionCap")
    Release = apps.get_model("telemetry", "Release")
    sensitivities = dict(Release.objects.values_list("id", "sensitivity"))
    for entry in LedgerEntry.objects.all():
        epsilon = Decimal(entry.epsilon_micro) / 1_000_000
        LedgerEntry.objects.filter(pk=entry.pk).update(
            spender=f"user:{entry.user_id}",
            event={"kind": "discrete_laplace", "epsilon": str(epsilon.normalize()),
                   "sensitivity": sensitivities.get(entry.release_id, 1)},
            partitions=[[f"metric:{entry.metric_id}", day] for day in _days(entry.data_start, entry.data_end)],
            subject_kind="release",
            subject_id=str(entry.release_id),
        )
    for row in DailySpend.objects.all():
        DailySpend.objects.filter(pk=row.pk).update(spender=f"user:{row.user_id}")
    for row in PartitionSpend.objects.all():
        PartitionSpend.objects.filter(pk=row.pk).update(scope=f"metric:{row.metric_id}", key=row.data_day.isoformat())
    for row in PartitionCap.objects.all():
        PartitionCap.objects.filter(pk=row.pk).update(scope=f"metric:{row.metric_id}")


class Migration(migrations.Migration):
    dependencies = [("accounting", "0002_ledger_insert_only"), ("telemetry", "0004_ingest_hot_path")]

    operations = [
        migrations.RunPython(triggers.drop, triggers.create),
        migrations.AddField("ledgerentry", "spender", models.CharField(max_length=100, default="")),
        migrations.AddField("ledgerentry", "event", models.JSONField(null=True)),
        migrations.AddField("ledgerentry", "partitions", models.JSONField(default=list)),
        migrations.AddField("ledgerentry", "subject_kind", models.CharField(max_length=32, default="")),
        migrations.AddField("ledgerentry", "subject_id", models.CharField(max_length=64, default="")),
        migrations.AddField("dailyspend", "spender", models.CharField(max_length=100, default="")),
        migrations.AddField("partitionspend", "scope", models.CharField(max_length=100, default="")),
        migrations.AddField("partitionspend", "key", models.CharField(max_length=100, blank=True, default="")),
        migrations.AddField("partitioncap", "scope", models.CharField(max_length=100, null=True)),
        migrations.RunPython(carry_over, migrations.RunPython.noop),
        migrations.RemoveIndex("ledgerentry", "ledger_user_day"),
        migrations.RemoveConstraint("dailyspend", "daily_spend_user_day"),
        migrations.RemoveConstraint("partitionspend", "partition_spend_metric_day"),
        migrations.RemoveField("ledgerentry", "user"),
        migrations.RemoveField("ledgerentry", "metric"),
        migrations.RemoveField("ledgerentry", "release"),
        migrations.RemoveField("ledgerentry", "data_start"),
        migrations.RemoveField("ledgerentry", "data_end"),
        migrations.RemoveField("dailyspend", "user"),
        migrations.RemoveField("partitionspend", "metric"),
        migrations.RemoveField("partitionspend", "data_day"),
        migrations.RemoveField("partitioncap", "metric"),
        migrations.AlterField("ledgerentry", "spender", models.CharField(max_length=100)),
        migrations.AlterField("ledgerentry", "event", models.JSONField()),
        migrations.AlterField("ledgerentry", "subject_kind", models.CharField(max_length=32)),
        migrations.AlterField("ledgerentry", "subject_id", models.CharField(max_length=64)),
        migrations.AlterField("dailyspend", "spender", models.CharField(max_length=100)),
        migrations.AlterField("partitionspend", "scope", models.CharField(max_length=100)),
        migrations.AlterField("partitionspend", "key", models.CharField(max_length=100, blank=True)),
        migrations.AlterField("partitioncap", "scope", models.CharField(max_length=100, unique=True)),
        migrations.AddIndex("ledgerentry", models.Index(fields=["spender", "budget_day"], name="ledger_spender_day")),
        migrations.AddIndex("ledgerentry", models.Index(fields=["subject_kind", "subject_id"], name="ledger_subject")),
        migrations.AddConstraint("dailyspend", models.UniqueConstraint(fields=["spender", "day"],
                                                                       name="daily_spend_spender_day")),
        migrations.AddConstraint("partitionspend", models.UniqueConstraint(fields=["scope", "key"],
                                                                           name="partition_spend_scope_key")),
        migrations.RunPython(triggers.create, triggers.drop),
    ]
