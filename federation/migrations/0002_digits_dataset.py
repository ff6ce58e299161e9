"""Register scikit-learn's digits (shipped with the package) as the default dataset.

Its 1797 examples split into 1438 training and 359 held-out ones (federation.selectors.holdout_sizes).
It gets no PartitionCap row: the default cap (DEFAULT_PARTITION_CAP_EPSILON) applies until an
admin sets one for its scope, ``dataset:<id>``.
"""

from django.db import migrations


def add_digits(apps, schema_editor):
    apps.get_model("federation", "Dataset").objects.get_or_create(name="digits", defaults={
        "kind": "digits", "num_examples": 1438, "num_test_examples": 359, "input_shape": [1, 8, 8], "num_classes": 10,
    })


class Migration(migrations.Migration):
    dependencies = [("federation", "0001_initial")]
    operations = [migrations.RunPython(add_digits, migrations.RunPython.noop)]
