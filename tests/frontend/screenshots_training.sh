#!/bin/sh
# Saves the training pages at 1280 and 390 pixels wide as docs/screenshots/training-*.png: runs the
# browser test that takes them, with a real worker, on the test database (the test env as for pytest).
set -e
cd "$(dirname "$0")/../.."
TRAINING_SCREENSHOTS_DIR="$PWD/docs/screenshots" exec "${PYTHON:-.venv/bin/python}" -m pytest -q -p no:cacheprovider \
    tests/frontend/test_training_browser.py -k screenshots "$@"
