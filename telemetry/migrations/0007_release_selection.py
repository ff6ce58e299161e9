from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("telemetry", "0006_metric_report_epsilon"),
    ]

    operations = [
        migrations.AddField(
            model_name="release",
            name="selection_scale",
            field=models.CharField(help_text="Discrete Laplace scale m/ε_sel of the selection counts as 'num/den'; "
                                   "null when the release selects no regions.", max_length=64, null=True),
        ),
        migrations.AddField(
            model_name="release",
            name="selection_counts",
            field=models.BinaryField(help_text="Each grid cell's report count plus its selection noise, packed like "
                                     "noisy_counts; null with selection_scale.", null=True),
        ),
    ]
