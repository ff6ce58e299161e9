"""Every PostgreSQL-only statement and every ``connection.vendor`` branch of the apps.

The service runs on PostgreSQL in production and on SQLite for the embedded
default. SQLite serializes writers with ``transaction_mode=IMMEDIATE``, so the
advisory locks that PostgreSQL needs are no-ops there.

:class:`LibpqSession` drives Django's PostgreSQL connection straight on libpq,
for a hot path that sends a whole transaction in one round trip: as one simple query, or as one prepared
statement that is its own transaction.
"""

from __future__ import annotations

import select

import psycopg
from django.db import connection
from psycopg import pq


def is_postgresql() -> bool:
    return connection.vendor == "postgresql"


def advisory_xact_lock_call(key: int, *, shared: bool = False) -> str:
    """The SQL call that takes a transaction-scoped advisory lock, for a statement of its own or a CTE."""
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    return f"{function}({int(key)})"


def advisory_xact_lock(key: int, *, shared: bool = False) -> None:
    """Take a transaction-scoped advisory lock (PostgreSQL); nothing on SQLite."""
    if not is_postgresql():
        return
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {advisory_xact_lock_call(key, shared=shared)}")


_IDLE, _ACTIVE = pq.TransactionStatus.IDLE, pq.TransactionStatus.ACTIVE
_OPEN = (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)
_ERRORS = (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.NONFATAL_ERROR, pq.ExecStatus.BAD_RESPONSE)
OK, TUPLES, COPY_IN = pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COPY_IN
_UNDEFINED_STATEMENT = "26000"  # SQLSTATE invalid_sql_statement_name: not prepared on this connection


class LibpqSession:
    """A Django connection's libpq handle, driven without psycopg's or Django's per-statement machinery.

    Blocking calls are PQexec and poll(), which release the GIL, so other
    threads run while one waits on the server. Errors are psycopg's
    exceptions under Django's ``wrap_database_errors``; :meth:`abort` leaves
    the connection idle (rolled back) or closed, never inside a transaction.
    """

    def __init__(self, db) -> None:
        self._db = db
        self._pgconn = db.connection.pgconn

    @staticmethod
    def usable(db) -> bool:
        """True when ``db`` is PostgreSQL, connected, and idle in autocommit (no caller's transaction)."""
        if db.vendor != "postgresql" or db.in_atomic_block or not db.get_autocommit():
            return False
        return db.connection.pgconn.transaction_status == _IDLE

    def reconnect_if_broken(self) -> bool:
        """After a failure: if the connection is dead (the server restarted since it was opened), open a
        new one and say so. Django's per-request health check does not cover this raw use of it."""
        if self._pgconn.status == pq.ConnStatus.OK:
            return False
        self._db.close()
        self._db.ensure_connection()
        self._pgconn = self._db.connection.pgconn
        return True

    def literal(self, text: bytes) -> str:
        """``text`` as an SQL string literal, escaped by libpq."""
        return pq.Escaping(self._pgconn).escape_literal(text).decode()

    def _wait(self, events: int) -> None:
        poller = select.poll()
        poller.register(self._pgconn.socket, events)
        poller.poll()  # releases the GIL

    def _flush(self) -> None:
        pgconn = self._pgconn
        while pgconn.flush():  # 1: more to send (nonblocking connection)
            self._wait(select.POLLOUT | select.POLLIN)
            pgconn.consume_input()

    def _results(self) -> list:
        """The results of the query in flight, up to its end or to a COPY waiting for rows."""
        pgconn, results = self._pgconn, []
        while True:
            while pgconn.is_busy():
                self._wait(select.POLLIN)
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                return results
            results.append(result)
            if result.status == COPY_IN:
                return results

    @staticmethod
    def _check(results: list, expected: tuple) -> list:
        statuses = [result.status for result in results]
        if statuses != list(expected):
            failed = next((r for r in results if r.status in _ERRORS), None)
            if failed is not None:
                raise psycopg.errors.error_from_result(failed, encoding="utf-8")
            raise psycopg.OperationalError(f"unexpected results {[pq.ExecStatus(s).name for s in statuses]}")
        return results

    def send(self, sql: str, *expected: int, reads: int = 1) -> list:
        """Send ``sql`` (statements joined by ';') and read ``reads`` result runs: they must have ``expected``
        statuses. A query ending in ``COPY ... FROM STDIN`` stops there, the server waiting for rows."""
        with self._db.wrap_database_errors:
            self._pgconn.send_query(sql.encode())
            self._flush()
            results = []
            for _ in range(reads):
                results += self._results()
            return self._check(results, expected)

    def commit_prepared(self, name: bytes, sql: str, params: list[bytes], formats: list[int]) -> pq.PGresult:
        """Run the prepared statement ``name`` with ``params`` (``formats``: 0 text, 1 binary) as a transaction
        of its own, in one round trip with no SQL text to parse or plan on the server; ``sql`` is prepared on
        this connection the first time the server does not know ``name``. Its result (TUPLES) is returned
        only once committed.

        Outside a transaction block, PostgreSQL runs an extended-protocol Execute in an implicit transaction
        that it commits on reaching the Sync, before it answers ReadyForQuery; libpq's last result (None)
        comes after that answer. So a result returned here, on an idle connection, is a committed one, as a
        COMMIT's result would say; a failed statement rolls the whole transaction back.
        """
        with self._db.wrap_database_errors:
            results = self._execute_prepared(name, params, formats)
            failed = next((r for r in results if r.status in _ERRORS), None)
            if failed is not None and failed.error_field(pq.DiagnosticField.SQLSTATE) == _UNDEFINED_STATEMENT.encode():
                self._check([self._pgconn.prepare(name, sql.encode())], (OK,))
                results = self._execute_prepared(name, params, formats)
            self._check(results, (TUPLES,))
            if self._pgconn.transaction_status != _IDLE:
                raise psycopg.OperationalError("the statement's transaction did not end")
            return results[0]

    def _execute_prepared(self, name: bytes, params: list[bytes], formats: list[int]) -> list:
        self._pgconn.send_query_prepared(name, params, formats)  # Bind, Describe, Execute, Sync
        self._flush()
        return self._results()

    def copy(self, data: bytes, *expected: int, reads: int = 2) -> list:
        """Send the rows of the COPY the server waits in, end it, and read ``reads`` result runs (COPY's own
        result ends a run): they must have ``expected`` statuses."""
        pgconn = self._pgconn
        with self._db.wrap_database_errors:
            while not pgconn.put_copy_data(data):  # 0: libpq's buffer is full
                self._wait(select.POLLOUT)
                pgconn.flush()
            while not pgconn.put_copy_end(None):
                self._wait(select.POLLOUT)
                pgconn.flush()
            self._flush()
            results = []
            for _ in range(reads):
                results += self._results()
            return self._check(results, expected)

    def execute(self, sql: str, *expected: int) -> list:
        """Run ``sql`` and wait for it (PQexec): one statement, or the last statement's result."""
        with self._db.wrap_database_errors:
            return self._check([self._pgconn.exec_(sql.encode())], expected)

    def require_commit(self, results: list) -> None:
        """Raise unless the last of a query's results is its COMMIT's (a failed transaction answers ROLLBACK)."""
        if results[-1].command_status != b"COMMIT":
            with self._db.wrap_database_errors:
                raise psycopg.OperationalError("the transaction did not commit")

    def abort(self) -> None:
        """Whatever state the query is in, leave the connection idle or closed."""
        pgconn = self._pgconn
        try:
            if pgconn.transaction_status == _ACTIVE:  # the server waits in a COPY, or is still working
                if self._results() and pgconn.transaction_status == _ACTIVE:
                    pgconn.put_copy_end(b"aborted")
                    self._flush()
                    self._results()
            if pgconn.transaction_status in _OPEN:
                pgconn.exec_(b"ROLLBACK")
        except Exception:  # noqa: BLE001 - the connection is closed below instead
            pass
        if pgconn.transaction_status != _IDLE:
            self._db.close()


def insert_binary(instance) -> None:
    """``instance.save(force_insert=True)``, but on PostgreSQL with the values bound server-side,
    so binary fields travel as raw bytes rather than as hex-escaped SQL text (3x faster for a
    release's noisy counts). Like save(), it fills each field's value with ``pre_save``; it
    sends no model signals."""
    if not is_postgresql():
        instance.save(force_insert=True)
        return
    fields = instance._meta.concrete_fields
    values = [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]
    quote = connection.ops.quote_name
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(f"INSERT INTO {quote(instance._meta.db_table)} ({', '.join(quote(f.column) for f in fields)})"
                       f" VALUES ({', '.join(['%s'] * len(fields))})", values, prepare=False)
    instance._state.adding, instance._state.db = False, connection.alias


def fetch_binary(sql: str, params: list) -> list[tuple]:
    """Rows of a statement on Django's PostgreSQL connection (inside its transaction, if any),
    bound server-side and returned in binary: bytea as bytes, no hex escaping."""
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=False, binary=True)
        return cursor.fetchall()
