"""The service fails closed: on PostgreSQL, or with DEBUG off, it refuses to start without
REDIS_URL, SECRET_KEY and AUDIT_KEY, and ``check --deploy`` is clean with production settings.

Settings are read once per process, so every case starts a fresh interpreter with an
environment of its own (nothing inherited from the test run's), and asserts its exit
status and what it printed. None of them connects to a database.
"""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Never connected to: neither `django.setup()` nor `check --deploy` opens a connection.
POSTGRES_URL = "postgres://privtel@db.invalid:5432/privtel"
REQUIRED = ("REDIS_URL", "SECRET_KEY", "AUDIT_KEY", "LOG_SIGNING_KEY")


def _production_env() -> dict[str, str]:
    return {"DATABASE_URL": POSTGRES_URL, "REDIS_URL": "redis://redis.invalid:6379/0",
            "SECRET_KEY": secrets.token_urlsafe(50), "AUDIT_KEY": secrets.token_hex(32),
            "LOG_SIGNING_KEY": secrets.token_hex(32),
            "ALLOWED_HOSTS": "telemetry.example.org"}


def _run(args: list[str], env: dict[str, str], var_dir: Path) -> subprocess.CompletedProcess:
    clean = {"PATH": os.environ["PATH"], "VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "deploy.settings", **env}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=clean, capture_output=True, text=True, timeout=120)


def _setup(env: dict[str, str], var_dir: Path, show: str = "settings.DEBUG") -> subprocess.CompletedProcess:
    """``django.setup()``, then print the settings named in ``show`` as a JSON list."""
    code = f"import django, json; django.setup(); from django.conf import settings; print(json.dumps([{show}]))"
    return _run(["-c", code], env, var_dir)


def _refusal(result: subprocess.CompletedProcess) -> str:
    """The ImproperlyConfigured line the process died with."""
    assert result.returncode != 0, result.stdout
    prefix = "django.core.exceptions.ImproperlyConfigured"
    lines = [line for line in result.stderr.splitlines() if line.startswith(prefix)]
    assert lines, result.stderr
    return lines[-1]


def test_the_embedded_default_starts_with_secrets_it_generates(tmp_path):
    shown = "settings.DEBUG, settings.REDIS_URL == '', settings.SECRET_KEY, settings.AUDIT_KEY"
    first = _setup({}, tmp_path, show=shown)
    assert first.returncode == 0, first.stderr
    debug, no_redis, secret_key, audit_key = json.loads(first.stdout)
    assert debug and no_redis
    assert (tmp_path / "secret_key").read_text() == secret_key and len(secret_key) == 64
    assert (tmp_path / "audit_key").read_text() == audit_key and len(bytes.fromhex(audit_key)) == 32
    assert {(tmp_path / name).stat().st_mode & 0o777 for name in ("secret_key", "audit_key")} == {0o600}
    again = _setup({}, tmp_path, show=shown)
    assert json.loads(again.stdout) == [True, True, secret_key, audit_key]  # kept across restarts


@pytest.mark.parametrize("missing", [*[(name,) for name in REQUIRED], REQUIRED])
def test_postgresql_refuses_to_start_without_each_required_variable(tmp_path, missing):
    env = {name: value for name, value in _production_env().items() if name not in missing}
    message = _refusal(_setup(env, tmp_path))
    named = message.split(":", 2)[1]
    assert [name for name in REQUIRED if name in named] == [name for name in REQUIRED if name in missing]
    assert "docs/operations.md" in message
    assert not (tmp_path / "secret_key").exists() and not (tmp_path / "audit_key").exists()


@pytest.mark.parametrize("env", [
    {"DATABASE_URL": POSTGRES_URL, "DEBUG": "true"},  # DEBUG on does not excuse PostgreSQL
    {"DEBUG": "false"},  # nor does SQLite excuse DEBUG off
    {"DATABASE_URL": POSTGRES_URL, "REDIS_URL": " ", "SECRET_KEY": "", "AUDIT_KEY": "", "LOG_SIGNING_KEY": ""},  # blank is missing
], ids=["postgresql-debug-on", "sqlite-debug-off", "blank-values"])
def test_only_the_embedded_default_may_run_without_them(tmp_path, env):
    message = _refusal(_setup(env, tmp_path))
    assert "Missing REDIS_URL, SECRET_KEY, AUDIT_KEY, LOG_SIGNING_KEY" in message


def test_production_starts_with_them_and_writes_no_secret(tmp_path):
    env = _production_env()
    result = _setup(env, tmp_path, show="settings.DEBUG, settings.SECRET_KEY, settings.AUDIT_KEY, settings.REDIS_URL")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [False, env["SECRET_KEY"], env["AUDIT_KEY"], env["REDIS_URL"]]
    assert list(tmp_path.iterdir()) == []


def test_an_audit_key_that_is_not_64_hex_digits_is_refused(tmp_path):
    for bad in ("ab" * 31, "zz" * 32):
        message = _refusal(_setup({**_production_env(), "AUDIT_KEY": bad}, tmp_path))
        assert "AUDIT_KEY must be 64 hex digits" in message


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], _production_env(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("override, warning", [
    ({"SECURE_SSL_REDIRECT": "false"}, "security.W008"),
    ({"SECURE_HSTS_SECONDS": "0"}, "security.W004"),
    ({"SECURE_COOKIES": "false"}, "security.W016"),
    ({"DEBUG": "true"}, "security.W018"),
])
def test_check_deploy_flags_each_production_default_turned_off(tmp_path, override, warning):
    """The check above can fail: each variable reaches the setting Django checks."""
    result = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], {**_production_env(), **override},
                  tmp_path)
    assert result.returncode != 0
    assert warning in result.stderr


def test_https_settings_follow_the_environment(tmp_path):
    shown = ("settings.SECURE_SSL_REDIRECT, settings.SECURE_PROXY_SSL_HEADER, settings.SECURE_HSTS_SECONDS, "
             "settings.CSRF_COOKIE_SECURE, settings.CSRF_TRUSTED_ORIGINS")
    embedded = _setup({}, tmp_path, show=shown)
    assert json.loads(embedded.stdout) == [False, None, 0, False, []]
    behind_proxy = _setup({**_production_env(), "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https",
                           "CSRF_TRUSTED_ORIGINS": "https://telemetry.example.org"}, tmp_path, show=shown)
    assert json.loads(behind_proxy.stdout) == [
        True, ["HTTP_X_FORWARDED_PROTO", "https"], 365 * 24 * 3600, True, ["https://telemetry.example.org"]]
    message = _refusal(_setup({**_production_env(), "SECURE_PROXY_SSL_HEADER": "https"}, tmp_path))
    assert "SECURE_PROXY_SSL_HEADER must look like 'X-Forwarded-Proto: https'" in message
