from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("federation", "0003_export_registry")]
    operations = [migrations.AddField(model_name="trainingjob", name="canaries", field=models.IntegerField(default=0))]
