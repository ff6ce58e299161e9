"""Register scikit-learn's digits (shipped with the package) as the default dataset, with the default cap.

Its 1797 examples split into 1438 training and 359 held-out ones (federation.selectors.holdout_sizes).
"""

from decimal import Decimal

from django.conf import settings
from django.db import migrations


def add_digits(apps, schema_editor):
    Dataset = apps.get_model("federation", "Dataset")
    PartitionCap = apps.get_model("accounting", "PartitionCap")
    digits, _ = Dataset.objects.get_or_create(name="digits", defaults={
        "kind": "digits", "num_examples": 1438, "num_test_examples": 359, "input_shape": [1, 8, 8], "num_classes": 10,
    })
    cap_micro = int(Decimal(settings.PRIVACY["DEFAULT_PARTITION_CAP_EPSILON"]) * 1_000_000)
    PartitionCap.objects.get_or_create(scope=f"dataset:{digits.pk}", defaults={"lifetime_epsilon_micro": cap_micro})


class Migration(migrations.Migration):
    dependencies = [("federation", "0001_initial"), ("accounting", "0003_generic_ledger")]
    operations = [migrations.RunPython(add_digits, migrations.RunPython.noop)]
