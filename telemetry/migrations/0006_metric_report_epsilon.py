from django.db import migrations, models


def _memo_only(apps, schema_editor):
    """Existing metrics' reports were all memoized answers (λ = 1): their per-report ε is their ε."""
    Metric = apps.get_model("telemetry", "Metric")
    Metric.objects.update(report_epsilon=models.F("epsilon"))


class Migration(migrations.Migration):

    dependencies = [
        ("telemetry", "0005_staged_storage"),
    ]

    operations = [
        migrations.AddField(
            model_name="metric",
            name="report_epsilon",
            field=models.FloatField(null=True),
        ),
        migrations.RunPython(_memo_only, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="metric",
            name="epsilon",
            field=models.FloatField(help_text="Local ε of the client-side randomizer: the per-value ε of the memo."),
        ),
        migrations.AlterField(
            model_name="metric",
            name="report_epsilon",
            field=models.FloatField(
                help_text="ε of one report alone (<= epsilon), which sets the instantaneous step's keep probability "
                "(privacy.ldp.longitudinal). Equal to epsilon: every report is the memo (metrics made before 0005)."
            ),
        ),
    ]
