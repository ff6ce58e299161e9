#!/usr/bin/env bash
# The whole test suite, on a fresh machine: makes .venv, installs pinned
# dependencies, then runs pytest against the local PostgreSQL and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c deploy/constraints.txt -e ".[test,bench]"
export DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/privtel}"
export REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"
export AUDIT_KEY="${AUDIT_KEY:-$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(32))')}"
exec .venv/bin/python -m pytest "$@"
