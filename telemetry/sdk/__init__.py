"""Python client SDK for the telemetry service. Imports no Django.

Values are randomized on the device with the metric's local-DP oracle before
anything is queued, stored or sent; see :mod:`telemetry.sdk.client` for the
privacy guarantee and the delivery (spool, retry) rules.

    from telemetry.sdk import TelemetryClient

    with TelemetryClient("https://telemetry.example", api_key, state_dir="~/.app/telemetry") as client:
        client.record("browser", "firefox", region="DE")
        client.flush()
"""

from .catalog import Metric
from .client import MAX_BATCH_SIZE, TelemetryClient
from .errors import FlushError, TelemetryError
from .simulate import simulate_population
from .transport import HttpTransport

__all__ = [
    "MAX_BATCH_SIZE",
    "FlushError",
    "HttpTransport",
    "Metric",
    "TelemetryClient",
    "TelemetryError",
    "simulate_population",
]
