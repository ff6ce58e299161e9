"""The insert-only triggers of ``accounting_ledgerentry`` (migration 0002), for migrations that rebuild it."""

POSTGRES_UP = """
CREATE OR REPLACE FUNCTION accounting_ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'accounting_ledgerentry is insert-only';
END $$;
CREATE TRIGGER accounting_ledger_insert_only BEFORE UPDATE OR DELETE ON accounting_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION accounting_ledger_refuse_change();
"""
POSTGRES_DOWN = "DROP TRIGGER IF EXISTS accounting_ledger_insert_only ON accounting_ledgerentry;"
SQLITE_UP = [
    "CREATE TRIGGER accounting_ledger_no_update BEFORE UPDATE ON accounting_ledgerentry"
    " BEGIN SELECT RAISE(ABORT, 'accounting_ledgerentry is insert-only'); END;",
    "CREATE TRIGGER accounting_ledger_no_delete BEFORE DELETE ON accounting_ledgerentry"
    " BEGIN SELECT RAISE(ABORT, 'accounting_ledgerentry is insert-only'); END;",
]
SQLITE_DOWN = ["DROP TRIGGER IF EXISTS accounting_ledger_no_update;", "DROP TRIGGER IF EXISTS accounting_ledger_no_delete;"]

_UP = {"postgresql": [POSTGRES_UP], "sqlite": SQLITE_UP}
_DOWN = {"postgresql": [POSTGRES_DOWN], "sqlite": SQLITE_DOWN}


def _run(statements_by_vendor, schema_editor) -> None:
    for statement in statements_by_vendor.get(schema_editor.connection.vendor, []):
        schema_editor.execute(statement)


def create(apps, schema_editor) -> None:
    _run(_UP, schema_editor)


def drop(apps, schema_editor) -> None:
    _run(_DOWN, schema_editor)
