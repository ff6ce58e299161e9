"""API tokens are stored as SHA-256 digests only, found by one indexed lookup of the digest.

A token works; the database holds no token (searched column by column in the token table, and row by
row in every table); unknown, revoked and rotated tokens, and a deactivated user's, are refused with
``401 authentication_failed`` (tests/deploy/test_users.py has the API flows). Migration
``users.0002_carry_over_drf_tokens`` turns DRF's plaintext tokens into digests, so the tokens of a
deployed service keep working, and drops DRF's table.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder
from django.test.utils import CaptureQueriesContext, override_settings

from deploy.api.auth import hash_key
from deploy.api.users import services
from deploy.api.users.authentication import TokenAuthentication
from deploy.api.users.models import ApiToken
from helpers import client, user

TOKEN_TABLE = ApiToken._meta.db_table
TEXT_TYPES = ("char", "text")


def _text_columns(table: str) -> list[str]:
    """The table's columns whose PostgreSQL type is a string type (varchar, text)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s",
                       [table])
        return [name for name, kind in cursor.fetchall() if any(t in kind for t in TEXT_TYPES)]


def _token_table_values() -> list[str]:
    columns = _text_columns(TOKEN_TABLE)
    assert {"digest", "prefix"} <= set(columns)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(columns)} FROM {TOKEN_TABLE}")
        return [value for row in cursor.fetchall() for value in row if value is not None]


def _tables_holding(text: str) -> list[str]:
    """Every table with a row whose text form (all columns) contains ``text``."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f'SELECT 1 FROM "{table}" AS t WHERE strpos(t::text, %s) > 0 LIMIT 1', [text])
            if cursor.fetchone():
                found.append(table)
    return found


def assert_refused(response) -> None:
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token", response.content[:300]
    body = response.json()
    assert body["code"] == "authentication_failed" and body["message"], body


@pytest.mark.django_db
def test_a_token_works_and_the_database_holds_only_its_digest_and_first_characters():
    ana, token = user("ana", "analyst")
    _, rotated = services.rotate_token(username="ana")
    _, root_token = user("root", "admin")
    assert len(rotated) == 64 and set(rotated) <= set("0123456789abcdef")  # 256 random bits, in hex
    assert client(rotated).get("/api/v1/metrics").status_code == 200
    stored = ApiToken.objects.get(user=ana)
    assert (stored.digest, stored.prefix) == (hash_key(rotated), rotated[:8])
    values = _token_table_values()
    assert len(values) == 4  # two rows: digest and prefix
    for plaintext in (token, rotated, root_token):
        assert not [value for value in values if plaintext in value]
        assert _tables_holding(plaintext) == []
    assert "authtoken_token" not in connection.introspection.table_names()


@pytest.mark.django_db
def test_a_token_is_found_by_one_indexed_lookup_of_its_digest():
    ana, token = user("ana", "analyst")
    with CaptureQueriesContext(connection) as queries:
        found, row = TokenAuthentication().authenticate_credentials(token)
    assert (found, row.user_id) == (ana, ana.pk)
    assert len(queries) == 1 and hash_key(token) in queries[0]["sql"] and token not in queries[0]["sql"]
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, TOKEN_TABLE).values()
    assert any(c["columns"] == ["digest"] and c["unique"] for c in constraints)  # a unique index on the digest


@pytest.mark.django_db
@pytest.mark.parametrize("header", ["Token " + "0" * 64, "Token " + "0" * 40, "Token x", "Token",
                                    "Token a b", "token " + "f" * 64])
def test_unknown_and_malformed_tokens_are_refused_with_the_error_shape(header):
    user("ana", "analyst")
    api = client()
    api.credentials(HTTP_AUTHORIZATION=header)
    assert_refused(api.get("/api/v1/metrics"))


@pytest.mark.django_db
def test_revoked_and_rotated_tokens_stop_at_once_and_a_deactivated_users_token_is_refused(q):
    root, _ = user("root", "admin")
    ana, first = user("ana", "analyst")
    _, second = services.rotate_token(username="ana")
    assert_refused(client(first).get("/api/v1/metrics"))
    assert client(second).get("/api/v1/metrics").status_code == 200
    services.revoke_token(username="ana")
    assert_refused(client(second).get("/api/v1/metrics"))
    third = q.token_for(ana)
    services.change_user(actor=root, username="ana", active=False)
    assert_refused(client(third).get("/api/v1/metrics"))
    stray = q.token_for(ana)  # a row left behind (made by hand): the user is inactive, so still refused
    assert_refused(client(stray).get("/api/v1/metrics"))


# --------------------------------------------------------------------------- the migration from DRF's tokens

WITH_DRF_TOKENS = ["rest_framework.authtoken"]  # added to INSTALLED_APPS: the old schema, from DRF's own migrations
DRF_LEAF = ("authtoken", "0004_alter_tokenproxy_options")
CARRY_OVER = ("users", "0002_carry_over_drf_tokens")


def _migrate(targets):
    """Migrate to ``targets``; the models as they are at the targets that name a migration."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state([target for target in targets if target[1] is not None]).apps


@pytest.mark.django_db(transaction=True)
def test_drf_plaintext_tokens_are_carried_over_as_digests_and_their_table_dropped():
    from django.conf import settings

    _, _ = user("ana", "analyst")
    _, _ = user("root", "admin")
    gone, _ = user("gone", "analyst")
    type(gone).objects.filter(pk=gone.pk).update(is_active=False)
    old_keys = {name: secrets.token_hex(20) for name in ("ana", "root", "gone")}  # as DRF's Token.generate_key
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    try:
        _migrate([("users", None)])  # back to before the digests: no users_apitoken
        with override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, *WITH_DRF_TOKENS]):
            old = _migrate([DRF_LEAF])
            Token, User = old.get_model("authtoken", "Token"), old.get_model("auth", "User")
            for name, key in old_keys.items():
                Token.objects.create(key=key, user=User.objects.get(username=name))
            Token.objects.update(created=created)  # past auto_now_add: the time carried over is the row's own
            assert Token.objects.count() == 3
            _migrate([CARRY_OVER])
        assert "authtoken_token" not in connection.introspection.table_names()
        assert not MigrationRecorder(connection).migration_qs.filter(app="authtoken").exists()
        rows = {row.user.username: row for row in ApiToken.objects.select_related("user")}
        assert sorted(rows) == ["ana", "gone", "root"]
        for name, key in old_keys.items():
            assert (rows[name].digest, rows[name].prefix, rows[name].created) == (hash_key(key), key[:8], created)
            assert not [value for value in _token_table_values() if key in value] and _tables_holding(key) == []
        assert client(old_keys["ana"]).get("/api/v1/metrics").status_code == 200
        assert client(old_keys["root"]).get("/api/v1/ingest-keys").status_code == 200
        assert_refused(client(old_keys["gone"]).get("/api/v1/metrics"))  # carried over, and still inactive
        _, rotated = services.rotate_token(username="ana")  # the services work on carried-over rows
        assert_refused(client(old_keys["ana"]).get("/api/v1/metrics"))
        assert client(rotated).get("/api/v1/metrics").status_code == 200
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_the_carry_over_does_nothing_on_a_database_that_never_had_drf_tokens():
    ana, token = user("ana", "analyst")
    try:
        _migrate([("users", "0001_api_token")])
        _migrate([CARRY_OVER])
        assert not ApiToken.objects.exclude(user=ana).exists()
        assert client(token).get("/api/v1/metrics").status_code == 200
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
