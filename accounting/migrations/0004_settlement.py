"""Settlements: a reservation replaced by the event that ran, insert-only like the ledger."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

POSTGRES_UP = """
CREATE TRIGGER accounting_settlement_insert_only BEFORE UPDATE OR DELETE ON accounting_settlement
    FOR EACH ROW EXECUTE FUNCTION accounting_ledger_refuse_change();
"""
POSTGRES_DOWN = "DROP TRIGGER IF EXISTS accounting_settlement_insert_only ON accounting_settlement;"
SQLITE_UP = [
    "CREATE TRIGGER accounting_settlement_no_update BEFORE UPDATE ON accounting_settlement"
    " BEGIN SELECT RAISE(ABORT, 'accounting_settlement is insert-only'); END;",
    "CREATE TRIGGER accounting_settlement_no_delete BEFORE DELETE ON accounting_settlement"
    " BEGIN SELECT RAISE(ABORT, 'accounting_settlement is insert-only'); END;",
]
SQLITE_DOWN = ["DROP TRIGGER IF EXISTS accounting_settlement_no_update;",
               "DROP TRIGGER IF EXISTS accounting_settlement_no_delete;"]


def _run(statements, schema_editor):
    for statement in statements.get(schema_editor.connection.vendor, []):
        schema_editor.execute(statement)


def create_triggers(apps, schema_editor):
    _run({"postgresql": [POSTGRES_UP], "sqlite": SQLITE_UP}, schema_editor)


def drop_triggers(apps, schema_editor):
    _run({"postgresql": [POSTGRES_DOWN], "sqlite": SQLITE_DOWN}, schema_editor)


class Migration(migrations.Migration):
    dependencies = [("accounting", "0003_generic_ledger")]

    operations = [
        migrations.CreateModel(
            name="Settlement",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("refunded_micro", models.BigIntegerField()),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("entry", models.OneToOneField(null=True, on_delete=django.db.models.deletion.PROTECT,
                                               related_name="settles", to="accounting.ledgerentry")),
                ("reservation", models.OneToOneField(on_delete=django.db.models.deletion.PROTECT,
                                                     related_name="settlement", to="accounting.ledgerentry")),
            ],
            options={"constraints": [models.CheckConstraint(condition=models.Q(refunded_micro__gte=0),
                                                            name="settlement_refund_non_negative")]},
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
