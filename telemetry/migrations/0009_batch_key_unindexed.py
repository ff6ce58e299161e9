import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [("telemetry", "0008_staging_slots")]

    operations = [
        migrations.AlterField(
            model_name="batch",
            name="ingest_key",
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT,
                                    related_name="batches", to="telemetry.ingestkey"),
        ),
    ]
