"""Settings for the ingest benchmark: production settings plus a bare view.

``tests/benchmarks/bench_ingest.py`` serves this with the production gunicorn
config (deploy/gunicorn.conf.py), so the bare view and the ingest endpoint run
through exactly the same server, middleware and settings.
"""

from deploy.settings import *  # noqa: F401,F403

ROOT_URLCONF = "tests.benchmarks.bench_urls"
# The benchmark talks plain HTTP to gunicorn on localhost; in production TLS ends before it.
SECURE_SSL_REDIRECT = False
