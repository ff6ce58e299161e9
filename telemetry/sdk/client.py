"""The telemetry client: randomize on the device, then queue, spool and send.

Privacy model
-------------
``record()`` maps the true label to its domain index and randomizes it at once
with the metric's local-DP frequency oracle (``privacy.ldp``, CSPRNG noise).
Only the randomized report is queued, spooled and sent; the true value never
leaves the call.

Each randomized report is ε-LDP on its own, but repeated reports of the same
true value compose: the mode of ten fresh k-RR reports at k=20, ε=2 reveals
the true value about 59% of the time. Two rules bound that loss:

* a cap on reports per metric per day: ``min(max_reports_per_metric_per_day,
  metric.contribution_bound)``; ``record()`` returns False beyond it;
* with ``memoize=True`` (the default), RAPPOR-style permanent memoization: the
  randomized answer for (metric, version, true value) is drawn once and reused,
  so a repeat reveals nothing new.

Guarantee, per metric and UTC day, for this client's local loss:

* without memoization: ≤ ε × (reports sent that day) ≤ ε × cap;
* with memoization: ≤ ε × (distinct true values reported that day), and over
  the client's lifetime ≤ ε × (distinct true values ever reported for that
  metric version).

``privacy_spent(metric, day)`` returns the day's figure under these rules. The
counts and the memo table persist in ``state_dir`` (when given), so the
guarantee holds across restarts; without a ``state_dir`` it holds for the life
of the object only.

Delivery
--------
``flush()`` cuts the queue into batches of at most ``batch_size`` reports, each
with a fresh uuid4 ``batch_id``, writes every batch to the spool, then sends
the spool oldest first:

* 2xx: the batch is removed from the spool and the response collected;
* network error, 5xx or 429: retried with capped exponential backoff and
  jitter, with the same ``batch_id`` and body; once ``max_retries`` are spent
  the batch stays spooled, the remaining batches are left for a later flush;
* 401/403: the key is wrong, not the batch: it stays spooled, sending stops;
* any other 4xx: the batch can never succeed, so it is dropped from the spool.

Any failure raises :class:`FlushError` after the other batches are handled;
its ``responses`` holds the delivered batches' answers. A new client on the
same ``state_dir`` resends what an earlier process left spooled.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from datetime import date, datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from privacy.ldp import make_oracle

from .catalog import Metric, parse_catalog
from .errors import FlushError, TelemetryError
from .storage import ClientState, Spool
from .transport import HttpTransport, Response

MAX_BATCH_SIZE = 100
_AUTH_STATUSES = (401, 403)
_CATALOG_REFRESH_INTERVAL = 60.0  # seconds between refetches caused by unknown metrics
_JITTER = secrets.SystemRandom()


@lru_cache(maxsize=256)
def _oracle(protocol: str, k: int, epsilon: float):
    """Oracles hold only their parameters, so clients can share them."""
    return make_oracle(protocol, k, epsilon)


class TelemetryClient:
    """Records local-DP reports and delivers them to the telemetry server."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        client_id: str | None = None,
        state_dir: str | Path | None = None,
        memoize: bool = True,
        max_reports_per_metric_per_day: int = 1,
        batch_size: int = MAX_BATCH_SIZE,
        timeout: float = 10.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        catalog: Iterable[Metric | dict] | dict | None = None,
        transport: HttpTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``transport`` lets several clients share one keep-alive connection
        (used sequentially); ``sleep`` is the backoff's wait, replaceable in tests."""
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be in [1, {MAX_BATCH_SIZE}]")
        if max_reports_per_metric_per_day < 1 or max_retries < 0:
            raise ValueError("max_reports_per_metric_per_day must be >= 1 and max_retries >= 0")
        directory = Path(state_dir).expanduser() if state_dir is not None else None
        if directory:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._state = ClientState(directory, client_id)
        self._state.save()
        self._spool = Spool(directory)
        self._transport = transport or HttpTransport(base_url, api_key, timeout)
        self._memoize = memoize
        self._max_per_day = max_reports_per_metric_per_day
        self._batch_size = batch_size
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._sleep = sleep
        self._catalog = parse_catalog(catalog) if catalog is not None else None
        self._fixed_catalog = catalog is not None
        self._catalog_fetched_at = float("-inf")
        self._queue: list[dict] = []
        self._record_lock = threading.Lock()
        self._send_lock = threading.Lock()

    @property
    def client_id(self) -> str:
        return self._state.client_id

    # -- recording -----------------------------------------------------------

    def record(
        self, metric: str, value: Any, *, day: date | str | None = None, region: str | None = None
    ) -> bool:
        """Randomize ``value`` for ``metric`` and queue the randomized report.

        Returns False, sending nothing, when the metric's daily cap is reached.
        Raises ValueError for an unknown metric or a value outside its domain,
        TelemetryError when the catalog is needed and cannot be fetched.
        """
        spec = self.metric(metric)
        index = spec.index_of(value)
        day_str = _day_string(day)
        region = _region_code(region)
        with self._record_lock:
            if self._state.reports(spec.name, day_str) >= self._daily_cap(spec):
                return False
            wire, charge_key = self._randomize(spec, index, day_str)
            self._state.charge(spec.name, day_str, charge_key, spec.epsilon)
            self._state.save()
            self._queue.append(_report(spec, wire, day_str, region))
        return True

    def privacy_spent(self, metric: str, day: date | str | None = None) -> float:
        """Local ε this client has spent on ``metric`` that UTC day (see module docstring)."""
        return self._state.spent(metric, _day_string(day))

    def pending_reports(self) -> int:
        """Randomized reports queued and not yet flushed to the spool."""
        return len(self._queue)

    def _daily_cap(self, spec: Metric) -> int:
        # Reports beyond the server's contribution bound would be rejected there
        # after having spent privacy here, so the bound caps the client too.
        return min(self._max_per_day, spec.contribution_bound)

    def _randomize(self, spec: Metric, index: int, day: str) -> tuple[Any, str]:
        """The wire value for a true index and the key it is charged under."""
        if not self._memoize:
            return self._fresh_wire(spec, index), f"report:{self._state.reports(spec.name, day)}"
        wire = self._state.memo_get(spec.name, spec.version, index)
        if wire is None:
            wire = self._fresh_wire(spec, index)
            self._state.memo_put(spec.name, spec.version, index, wire)
        return wire, f"value:{spec.version}:{index}"

    @staticmethod
    def _fresh_wire(spec: Metric, index: int) -> Any:
        oracle = _oracle(spec.protocol, len(spec.domain), spec.epsilon)
        return oracle.to_wire(oracle.randomize(np.array([index])))[0]

    # -- catalog -------------------------------------------------------------

    def metric(self, name: str) -> Metric:
        """The current definition of ``name``; refetches the catalog once if unknown."""
        if self._catalog is None or (name not in self._catalog and self._may_refetch()):
            self.refresh_catalog()
        try:
            return self._catalog[name]
        except KeyError:
            raise ValueError(f"unknown metric {name!r}") from None

    def refresh_catalog(self) -> dict[str, Metric]:
        """Fetch the current metric versions from the server."""
        with self._send_lock:
            response = self._exchange("GET", "/api/v1/metrics")
        if response.status != 200:
            raise _error_from(response, "GET /api/v1/metrics")
        try:
            self._catalog = parse_catalog(response.data)
        except (KeyError, TypeError, ValueError) as exc:
            raise TelemetryError("bad_response", f"unusable metric catalog: {exc!r}") from exc
        self._catalog_fetched_at = time.monotonic()
        return self._catalog

    def _may_refetch(self) -> bool:
        elapsed = time.monotonic() - self._catalog_fetched_at
        return not self._fixed_catalog and elapsed >= _CATALOG_REFRESH_INTERVAL

    # -- delivery ------------------------------------------------------------

    def flush(self) -> list[dict]:
        """Spool the queue as batches and send everything spooled (see module docstring)."""
        with self._record_lock:
            reports, self._queue = self._queue, []
            for start in range(0, len(reports), self._batch_size):
                self._spool.put(self._batch_body(reports[start : start + self._batch_size]))
        return self.resend_spooled()

    def resend_spooled(self) -> list[dict]:
        """Send the batches in the spool, including those left by an earlier process."""
        responses: list[dict] = []
        errors: list[TelemetryError] = []
        with self._send_lock:
            for body in self._spool.pending():
                try:
                    responses.append(self._deliver(body))
                except TelemetryError as error:
                    errors.append(error)
                    if error.retained:
                        break
        if errors:
            raise FlushError(responses, errors)
        return responses

    def close(self) -> None:
        """Close the HTTP connection; queued reports that were not flushed are lost."""
        self._transport.close()

    def __enter__(self) -> "TelemetryClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _batch_body(self, reports: list[dict]) -> dict:
        return {"batch_id": str(uuid.uuid4()), "client_id": self.client_id, "reports": reports}

    def _deliver(self, body: dict) -> dict:
        batch_id = body["batch_id"]
        try:
            response = self._exchange("POST", "/api/v1/reports", body)
        except TelemetryError as error:
            error.batch_id, error.retained = batch_id, True
            raise
        if 200 <= response.status < 300:
            self._spool.remove(batch_id)
            return response.data
        error = _error_from(response, f"batch {batch_id}")
        error.batch_id = batch_id
        error.retained = response.status in _AUTH_STATUSES
        if not error.retained:
            self._spool.remove(batch_id)
        raise error

    def _exchange(self, method: str, path: str, body: Any = None) -> Response:
        """A request, retried on network errors, 5xx and 429 with backoff.

        Returns the first other response; raises TelemetryError
        (``retries_exhausted``) when every attempt failed.
        """
        for attempt in range(self._max_retries + 1):
            if attempt:
                self._sleep(self._backoff_delay(attempt - 1))
            try:
                response = self._transport.request(method, path, body)
            except TelemetryError as error:
                last = error.message
                continue
            if not _retryable(response.status):
                return response
            last = f"HTTP {response.status}"
        raise TelemetryError(
            "retries_exhausted", f"{method} {path}: {self._max_retries + 1} attempts failed; last: {last}"
        )

    def _backoff_delay(self, retry: int) -> float:
        """Exponential, capped at backoff_max, with jitter in its upper half."""
        delay = min(self._backoff_max, self._backoff_base * 2**retry)
        return delay * (0.5 + 0.5 * _JITTER.random())


def _retryable(status: int) -> bool:
    return status >= 500 or status == 429


def _error_from(response: Response, what: str) -> TelemetryError:
    data = response.data if isinstance(response.data, dict) else {}
    code = str(data.get("code") or f"http_{response.status}")
    message = str(data.get("message") or f"{what}: HTTP {response.status}")
    return TelemetryError(code, message, status=response.status)


def _report(spec: Metric, wire: Any, day: str, region: str | None) -> dict:
    report: dict[str, Any] = {"metric": spec.name, "version": spec.version, "day": day}
    if spec.protocol == "krr":
        report["value"] = spec.domain[int(wire)]
    else:
        report["payload"] = wire
    if region is not None:
        report["region"] = region
    return report


def _day_string(day: date | str | None) -> str:
    """A UTC calendar day as YYYY-MM-DD; aware datetimes are converted to UTC."""
    if day is None:
        return datetime.now(timezone.utc).date().isoformat()
    if isinstance(day, datetime):
        return (day.astimezone(timezone.utc) if day.tzinfo else day).date().isoformat()
    if isinstance(day, date):
        return day.isoformat()
    parsed = date.fromisoformat(day)
    if parsed.isoformat() != day:
        raise ValueError(f"day must be YYYY-MM-DD, got {day!r}")
    return day


def _region_code(region: str | None) -> str | None:
    if region is None:
        return None
    if len(region) != 2 or not (region.isascii() and region.isalpha()):
        raise ValueError(f"region must be an ISO 3166 alpha-2 code, got {region!r}")
    return region.upper()
