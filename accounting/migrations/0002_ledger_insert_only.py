"""The ledger is insert-only: the database itself refuses UPDATE and DELETE."""

from django.db import migrations

POSTGRES_UP = """
CREATE FUNCTION accounting_ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'accounting_ledgerentry is insert-only';
END $$;
CREATE TRIGGER accounting_ledger_insert_only BEFORE UPDATE OR DELETE ON accounting_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION accounting_ledger_refuse_change();
"""
POSTGRES_DOWN = """
DROP TRIGGER accounting_ledger_insert_only ON accounting_ledgerentry;
DROP FUNCTION accounting_ledger_refuse_change();
"""
SQLITE_UP = [
    "CREATE TRIGGER accounting_ledger_no_update BEFORE UPDATE ON accounting_ledgerentry"
    " BEGIN SELECT RAISE(ABORT, 'accounting_ledgerentry is insert-only'); END;",
    "CREATE TRIGGER accounting_ledger_no_delete BEFORE DELETE ON accounting_ledgerentry"
    " BEGIN SELECT RAISE(ABORT, 'accounting_ledgerentry is insert-only'); END;",
]
SQLITE_DOWN = ["DROP TRIGGER accounting_ledger_no_update;", "DROP TRIGGER accounting_ledger_no_delete;"]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        for statement in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("accounting", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"postgresql": [POSTGRES_UP], "sqlite": SQLITE_UP}),
            _run({"postgresql": [POSTGRES_DOWN], "sqlite": SQLITE_DOWN}),
        )
    ]
