"""Settings, read from the environment (cookiecutter-django style).

With no environment at all the service runs on embedded defaults: a SQLite
file and a filesystem Celery broker under ``VAR_DIR``, an in-process cache,
secrets generated into ``VAR_DIR``. That is for one process on a
laptop. On PostgreSQL, or with DEBUG off, the service fails closed: it refuses
to start without ``REDIS_URL``, ``SECRET_KEY``, ``AUDIT_KEY`` and ``LOG_SIGNING_KEY``, and the
HTTPS settings default to production values; see docs/operations.md.
"""

import os
import secrets
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))


def _env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _embedded_secret(filename: str, nbytes: int = 32) -> str:
    """A random secret kept in VAR_DIR, for the embedded default only."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    path = VAR_DIR / filename
    if not path.exists():
        path.write_text(secrets.token_hex(nbytes))
        path.chmod(0o600)
    return path.read_text().strip()


def _proxy_ssl_header(name: str) -> tuple[str, str] | None:
    """``"X-Forwarded-Proto: https"`` as Django's ``("HTTP_X_FORWARDED_PROTO", "https")``; unset: None."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    header, _, value = text.partition(":")
    if not header.strip() or not value.strip():
        raise ImproperlyConfigured(f"{name} must look like 'X-Forwarded-Proto: https', not {text!r}.")
    return "HTTP_" + header.strip().upper().replace("-", "_"), value.strip()


DEBUG = _env_bool("DEBUG", "DATABASE_URL" not in os.environ)
ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",  # the pages' login (frontend/); the JSON API stays token-authenticated
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "accounting",
    "telemetry",
    "federation",
    "frontend",
]

# A token- and key-authenticated JSON API: DRF's views and the ingest view are CSRF-exempt (no
# cookies authenticate them: REST_FRAMEWORK has no SessionAuthentication). The pages (frontend/) log in
# with a session cookie, and the CSRF middleware guards every form they post.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "deploy.api.middleware.EdgeGuardMiddleware",  # 413 / NUL refusals as JSON, before any view
    "deploy.api.middleware.OutageMiddleware",  # a database or Redis outage: JSON 503 + Retry-After
]

ROOT_URLCONF = "deploy.urls"
WSGI_APPLICATION = "deploy.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "frontend.context.navigation",
            ]
        },
    }
]

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60")),
        # A kept connection is checked (SELECT 1) before a request's first query, so a worker's
        # connection left over from before a PostgreSQL restart is replaced, not failed on.
        conn_health_checks=True,
    )
}
_on_postgresql = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
if _on_postgresql:
    # A server that does not answer (host down, network cut) fails the request within seconds,
    # as a 503, instead of holding the worker until gunicorn kills it.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", int(os.environ.get("DATABASE_CONNECT_TIMEOUT", "5")))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # IMMEDIATE: a writing transaction takes SQLite's write lock up front, so writers
    # (a batch's claim and counters, the roll-up, a query's charge) serialize.
    # WAL lets readers run beside the writer; synchronous=NORMAL survives a crash of the
    # service (not of the OS), which fits a laptop run. Production uses PostgreSQL.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Fail closed. Generated secrets are for one process on a laptop: several processes would each
# make their own audit key; and production needs a real broker for the roll-up and expiry tasks.
_required_in_production = ("REDIS_URL", "SECRET_KEY", "AUDIT_KEY", "LOG_SIGNING_KEY")
_embedded = DEBUG and not _on_postgresql
_missing = [name for name in _required_in_production if not os.environ.get(name, "").strip()]
if _missing and not _embedded:
    raise ImproperlyConfigured(
        f"Missing {', '.join(_missing)}: required on PostgreSQL or with DEBUG off (only the embedded "
        "default, SQLite with DEBUG on, generates its secrets and runs without Redis). "
        "See docs/operations.md, 'Required environment'.")

SECRET_KEY = os.environ.get("SECRET_KEY", "").strip() or _embedded_secret("secret_key")
REDIS_URL = os.environ.get("REDIS_URL", "").strip()
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# The pages (frontend/): session login, kept in the database; the session ends with the browser or after 8 hours.
LOGIN_URL = "frontend:login"
LOGIN_REDIRECT_URL = "frontend:dashboard"
LOGOUT_REDIRECT_URL = "frontend:login"
SESSION_COOKIE_AGE = 8 * 3600
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.TokenAuthentication",
                                       "deploy.api.auth.RejectIngestKeys"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["deploy.api.parsing.JSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "deploy.api.parsing.JSONOnlyNegotiation",
    "EXCEPTION_HANDLER": "deploy.api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

# Celery: Redis when configured, else a filesystem broker the embedded worker shares.
# A task acked late (the training task) whose worker died is redelivered by Redis after this many
# seconds; it must exceed the longest training job, or a running job is delivered twice. Workers look
# for such tasks every tenth of it (1 to 100 s; kombu's own default sweep is every 100 s).
CELERY_VISIBILITY_TIMEOUT_S = int(os.environ.get("CELERY_VISIBILITY_TIMEOUT_S", "3600"))
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": CELERY_VISIBILITY_TIMEOUT_S,
        "unacked_restore_interval": min(100, max(1, CELERY_VISIBILITY_TIMEOUT_S // 10)),
        "unacked_restore_throttle": 1,
    }
else:
    CELERY_BROKER_URL = "filesystem://"
    _broker_dir = VAR_DIR / "celery-broker"
    (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_DEFAULT_QUEUE = "default"
# Only the training task goes to the GPU hosts' queue; any other federation task stays on "default".
CELERY_TASK_ROUTES = {"federation.tasks.run_training_job": {"queue": "training"}}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_ALWAYS_EAGER = _env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# The roll-up folds staged reports into counts and deletes them: a staged batch is linkable to its
# batch record for at most this long (the staging window, docs/privacy.md), so it is bounded.
# Training datasets: uploads are stored here, and MNIST-style IDX directories may be registered from here.
TRAINING_DATA_DIR = Path(os.environ.get("TRAINING_DATA_DIR", VAR_DIR / "datasets"))

ROLLUP_INTERVAL_S = int(os.environ.get("ROLLUP_INTERVAL_S", "30"))
MAX_ROLLUP_INTERVAL_S = 300
if not 1 <= ROLLUP_INTERVAL_S <= MAX_ROLLUP_INTERVAL_S:
    raise ImproperlyConfigured(f"ROLLUP_INTERVAL_S must be in [1, {MAX_ROLLUP_INTERVAL_S}] seconds (the staging window).")
CELERY_BEAT_SCHEDULE = {
    "advance-rollup": {"task": "telemetry.tasks.advance_rollup", "schedule": timedelta(seconds=ROLLUP_INTERVAL_S)},
    "expire-limits": {"task": "telemetry.tasks.expire_limits", "schedule": timedelta(hours=1)},
    "clear-sessions": {"task": "frontend.tasks.clear_sessions", "schedule": timedelta(hours=1)},
}

# Privacy constants (the spec's PRIVACY block); see docs/privacy.md.
PRIVACY = {
    "MAX_BATCH_SIZE": 100,
    "MAX_DAILY_CONTRIBUTIONS": 100,
    "DEFAULT_CONTRIBUTION_BOUND": 1,
    "REPORT_MAX_AGE_DAYS": int(os.environ.get("REPORT_MAX_AGE_DAYS", "7")),
    "DEFAULT_CLIENT_EPSILON": 2.0,
    "DEFAULT_DOMAIN_SIZE": 20,
    "MAX_DAILY_EPSILON": "10",
    "DEFAULT_QUERY_EPSILON": "1.0",
    "MAX_QUERY_EPSILON": "10",
    "DEFAULT_PARTITION_CAP_EPSILON": os.environ.get("DEFAULT_PARTITION_CAP_EPSILON", "50"),
    "APPROXIMATE_DELTA": "1e-6",
    # A region is shown on its own only if its noisy selection count exceeds what an empty region's
    # noise exceeds with this probability; the others merge into "other" (docs/privacy.md, "Coarsening").
    "EMPTY_REGION_SURVIVAL": float(os.environ.get("EMPTY_REGION_SURVIVAL", "0.01")),
    # Share of a region-grouped query's ε spent on the selection counts that decide which regions are
    # shown (independent noise, so the merged "other" cell is unbiased); the grid gets the rest. Each
    # release stores what it used (docs/privacy.md, "Coarsening"). An exact decimal in (0, 1).
    "SELECTION_EPSILON_SHARE": os.environ.get("SELECTION_EPSILON_SHARE", "0.1"),
    "MAX_QUERY_DAYS": 90,
    # The region axis of query grids and of what ingest accepts; "" (no region) is always allowed.
    "REGIONS": [r for r in os.environ.get("PRIVACY_REGIONS", "").split(",") if r] or None,
}
try:
    if not 0 < Fraction(PRIVACY["SELECTION_EPSILON_SHARE"]) < 1:
        raise ValueError
except (ValueError, ZeroDivisionError):
    raise ImproperlyConfigured("SELECTION_EPSILON_SHARE must be a decimal strictly between 0 and 1.") from None

# AES-256 key (64 hex digits) that seals each release's noise seed for audits.
AUDIT_KEY = os.environ.get("AUDIT_KEY", "").strip() or _embedded_secret("audit_key")
try:
    if len(bytes.fromhex(AUDIT_KEY)) != 32:
        raise ValueError
except ValueError:
    raise ImproperlyConfigured("AUDIT_KEY must be 64 hex digits (an AES-256 key); see docs/operations.md.") from None

# Ed25519 seed (64 hex digits) the transparency log signs its tree heads with (docs/api.md, "Export
# registry"). Required in production (above); generated into VAR_DIR for the embedded default only.
LOG_SIGNING_KEY = os.environ.get("LOG_SIGNING_KEY", "").strip() or _embedded_secret("log_signing_key")
try:
    if len(bytes.fromhex(LOG_SIGNING_KEY)) != 32:
        raise ValueError
except ValueError:
    raise ImproperlyConfigured("LOG_SIGNING_KEY must be 64 hex digits (an Ed25519 seed); see docs/api.md.") from None

# HTTPS (manage.py check --deploy is clean with these defaults). On by default unless DEBUG is on;
# the test suite and the benchmarks serve plain HTTP on localhost and turn the redirect off.
SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^health$"]  # a load balancer's plain-HTTP health probe
SECURE_PROXY_SSL_HEADER = _proxy_ssl_header("SECURE_PROXY_SSL_HEADER")  # only behind a proxy that sets it
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0" if DEBUG else str(365 * 24 * 3600)))
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = _env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = _env_bool("SECURE_COOKIES", not DEBUG)
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS")
CSRF_FAILURE_VIEW = "deploy.urls.csrf_failure"
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    "loggers": {"django.server": {"handlers": ["console"], "level": "WARNING", "propagate": False}},
}
