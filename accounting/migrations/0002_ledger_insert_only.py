"""The ledger is insert-only: the database itself refuses UPDATE and DELETE."""

from django.db import migrations

from accounting.migrations import _ledger_triggers as triggers


class Migration(migrations.Migration):
    dependencies = [("accounting", "0001_initial")]

    operations = [migrations.RunPython(triggers.create, triggers.drop)]
