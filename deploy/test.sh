#!/usr/bin/env bash
# The whole test suite, on a fresh machine: makes .venv, installs pinned
# dependencies, then runs pytest against the local PostgreSQL and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c deploy/constraints.txt -e ".[test,bench,train]"
# The browser tests (tests/frontend) drive Debian's Chromium through Playwright: install it when missing.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
  else
    echo "deploy/test.sh: no /usr/bin/chromium and not root: browser tests skip (they fail under CI=true)" >&2
  fi
fi
export DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/privtel}"
export REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"
# PostgreSQL makes these required (docs/operations.md, "Required environment"): fresh ones per run.
export AUDIT_KEY="${AUDIT_KEY:-$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(32))')}"
export SECRET_KEY="${SECRET_KEY:-$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(32))')}"
export LOG_SIGNING_KEY="${LOG_SIGNING_KEY:-$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(32))')}"
# The tests talk plain HTTP to Django's test client and to servers on localhost.
export SECURE_SSL_REDIRECT="${SECURE_SSL_REDIRECT:-false}"
exec .venv/bin/python -m pytest "$@"
