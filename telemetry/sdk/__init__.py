"""Python client SDK for the telemetry service. Imports no Django.

Values are randomized on the device with the metric's local-DP oracle and the
longitudinal scheme (memo + instantaneous step) before anything is queued,
stored or sent; see :mod:`telemetry.sdk.client` for the privacy guarantees,
the client-side ceilings and the delivery (spool, retry) rules.

    from telemetry.sdk import TelemetryClient

    with TelemetryClient("https://telemetry.example", api_key, state_dir="~/.app/telemetry") as client:
        client.record("browser", "firefox", region="DE")
        client.flush()
"""

from .catalog import Catalog, Metric
from .client import DEFAULT_MAX_LOCAL_EPSILON, MAX_BATCH_SIZE, PrivacySpent, TelemetryClient
from .errors import FlushError, PrivacyRefused, TelemetryError
from .simulate import simulate_population
from .transport import HttpTransport

__all__ = [
    "DEFAULT_MAX_LOCAL_EPSILON",
    "MAX_BATCH_SIZE",
    "Catalog",
    "FlushError",
    "HttpTransport",
    "Metric",
    "PrivacyRefused",
    "PrivacySpent",
    "TelemetryClient",
    "TelemetryError",
    "simulate_population",
]
