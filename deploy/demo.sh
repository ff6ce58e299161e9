#!/usr/bin/env bash
# Runs the service on embedded defaults (SQLite, no Redis) with demo data:
# migrates, loads a demo catalog, starts a Celery worker and the web server,
# and feeds simulated clients through the real SDK over HTTP. The region axis is the
# demo's six regions unless PRIVACY_REGIONS is set (telemetry/management/commands/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c deploy/constraints.txt -e .
exec .venv/bin/python manage.py demo "$@"
