from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("federation", "0005_aggregate_rounds")]

    operations = [
        migrations.AddField("trainingjob", "steps_leased", models.IntegerField(default=0)),
        migrations.AddField("trainingjob", "leases", models.JSONField(default=dict)),
        migrations.AddField("trainingjob", "steps_charged", models.IntegerField(blank=True, null=True)),
        migrations.AddField("trainingjob", "epsilon_refunded_micro", models.BigIntegerField(default=0)),
        migrations.AddField("trainingjob", "history", models.JSONField(default=list)),
    ]
