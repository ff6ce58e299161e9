#!/usr/bin/env bash
# The whole test suite, on a fresh machine: makes .venv, installs pinned
# dependencies, then runs pytest against the local PostgreSQL and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c deploy/constraints.txt -e ".[test,bench,train]"
export DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/privtel}"
export REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"
# PostgreSQL makes these required (docs/operations.md, "Required environment"): fresh ones per run.
export AUDIT_KEY="${AUDIT_KEY:-$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(32))')}"
export SECRET_KEY="${SECRET_KEY:-$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(32))')}"
export LOG_SIGNING_KEY="${LOG_SIGNING_KEY:-$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(32))')}"
# The tests talk plain HTTP to Django's test client and to servers on localhost.
export SECURE_SSL_REDIRECT="${SECURE_SSL_REDIRECT:-false}"
exec .venv/bin/python -m pytest "$@"
