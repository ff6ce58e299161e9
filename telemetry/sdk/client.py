"""The telemetry client: randomize on the device, then queue, spool and send.

Privacy model
-------------
``record()`` maps the true label to its domain index and randomizes it at once;
only the randomized report is queued, spooled and sent. The true value never
leaves the call. The randomization is the longitudinal scheme of
:mod:`privacy.ldp.longitudinal` (RAPPOR's permanent + instantaneous randomized
response):

* with ``memoize=True`` (the default) the metric's ε-LDP report of a true value
  is drawn once per (metric, version, value) and kept (the memo); each report
  then sends the memo with the metric's keep probability λ, and otherwise a
  fresh report of a value outside the domain;
* with ``memoize=False`` every report is an independent draw of that same
  composed channel (a new memo each time), so the server's estimates are the same.

Guarantees (``privacy_spent`` returns them for a metric and day): one report
alone is ``report_epsilon``-LDP; with memoization every report of one value,
over the client's lifetime, is ``epsilon``-LDP together; two histories that
differ in one report's value differ by at most the per-change ε. Without
memoization a value reported n times loses n × report_epsilon. A cap on reports
per metric and UTC day, ``min(max_reports_per_metric_per_day,
metric.contribution_bound)``, bounds how many reports a day can add.

The client refuses, before spending anything, a metric whose ``epsilon`` is
above ``max_local_epsilon`` (default 4) or whose per-change ε is above
``max_change_epsilon`` (when given), and a metric whose ``epsilon`` or
``report_epsilon`` rose above what this client accepted before for that name,
until the app calls :meth:`TelemetryClient.accept_epsilon`. It also refuses a
region outside the server's list and a day the server would not accept (older
than its ``report_max_age_days``, or after today, UTC), when the catalog came
from the server.

The counts, the memo table and the accepted ε persist in ``state_dir`` (when
given), read and written under a file lock, so the guarantees hold across
restarts and for several clients, threads or processes, on one ``state_dir``;
without a ``state_dir`` they hold for the life of the object only.

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

import math
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from privacy.csprng import bernoulli
from privacy.ldp import make_oracle
from privacy.ldp.longitudinal import null_reports

from .catalog import Catalog, Metric, parse_catalog
from .errors import FlushError, PrivacyRefused, TelemetryError
from .storage import ClientState, Spool, value_key
from .transport import HttpTransport, Response

MAX_BATCH_SIZE = 100
#: The default ceiling on a metric's local ε that a client accepts from the server.
DEFAULT_MAX_LOCAL_EPSILON = 4.0
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
        max_local_epsilon: float = DEFAULT_MAX_LOCAL_EPSILON,
        max_change_epsilon: float | None = None,
        batch_size: int = MAX_BATCH_SIZE,
        timeout: float = 10.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        catalog: Iterable[Metric | dict] | dict | None = None,
        transport: HttpTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``max_local_epsilon`` and ``max_change_epsilon`` are this client's own ceilings on what a
        metric definition from the server may cost (see the module docstring). ``transport`` lets
        several clients share one keep-alive connection (used sequentially); ``sleep`` is the
        backoff's wait, replaceable in tests."""
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be in [1, {MAX_BATCH_SIZE}]")
        if max_reports_per_metric_per_day < 1 or max_retries < 0:
            raise ValueError("max_reports_per_metric_per_day must be >= 1 and max_retries >= 0")
        if not max_local_epsilon > 0 or (max_change_epsilon is not None and not max_change_epsilon > 0):
            raise ValueError("max_local_epsilon and max_change_epsilon must be > 0")
        directory = Path(state_dir).expanduser() if state_dir is not None else None
        if directory:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._state = ClientState(directory, client_id)
        self._spool = Spool(directory)
        self._transport = transport or HttpTransport(base_url, api_key, timeout)
        self._memoize = memoize
        self._max_local_epsilon = float(max_local_epsilon)
        self._max_change_epsilon = max_change_epsilon
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

        Returns True when a report was queued, False (spending nothing) when the
        metric's daily cap is already reached for that day. Everything else is
        refused before any privacy is spent: ValueError for an unknown metric, a
        value outside its domain, a malformed region or day, a region the server
        does not accept, or a day it would not accept; :class:`PrivacyRefused` for
        a metric whose ε is above this client's ceilings or above what it
        accepted before; TelemetryError when the catalog is needed and cannot be
        fetched.
        """
        spec = self.metric(metric)
        index = spec.index_of(value)
        day_str = _day_string(day)
        region = _region_code(region)
        self._check_ingest_accepts(day_str, region)
        self._check_ceilings(spec)
        with self._record_lock, self._state.locked() as state:
            self._check_not_raised(spec, state)
            if state.reports(spec.name, day_str) >= self._daily_cap(spec):
                return False
            wire = self._randomize(spec, index, state)
            state.accept(spec.name, spec.epsilon, spec.report_epsilon)
            state.count(spec.name, day_str, spec.version, index,
                        self._day_figures(spec, state.day_entry(spec.name, day_str), value_key(spec.version, index)))
            self._queue.append(_report(spec, wire, day_str, region))
        return True

    def accept_epsilon(self, metric: str, epsilon: float, report_epsilon: float | None = None) -> None:
        """Accept, for ``metric``, definitions up to ``epsilon`` (and ``report_epsilon``, default
        ``epsilon``): the explicit consent that a raised ε needs. Still bounded by the ceilings."""
        report_epsilon = epsilon if report_epsilon is None else report_epsilon
        if not 0 < report_epsilon <= epsilon <= self._max_local_epsilon:
            raise ValueError(f"need 0 < report_epsilon <= epsilon <= max_local_epsilon ({self._max_local_epsilon})")
        with self._record_lock, self._state.locked() as state:
            state.accept(metric, float(epsilon), float(report_epsilon))

    def privacy_spent(self, metric: str, day: date | str | None = None) -> PrivacySpent:
        """What this client's reports of ``metric`` on that UTC day cost (see :class:`PrivacySpent`)."""
        day_str = _day_string(day)
        with self._record_lock, self._state.locked(write=False) as state:
            entry = state.day_entry(metric, day_str)
        return PrivacySpent.from_entry(metric, day_str, entry, self._memoize)

    def pending_reports(self) -> int:
        """Randomized reports queued and not yet flushed to the spool."""
        return len(self._queue)

    def _daily_cap(self, spec: Metric) -> int:
        # Reports beyond the server's contribution bound would be rejected there
        # after having spent privacy here, so the bound caps the client too.
        return min(self._max_per_day, spec.contribution_bound)

    def _check_ingest_accepts(self, day: str, region: str | None) -> None:
        """Refuse what the server would reject, so that no day's cap is spent on it."""
        today = datetime.now(timezone.utc).date()
        if date.fromisoformat(day) > today:
            raise ValueError(f"day {day} is after today ({today}, UTC); the server rejects it")
        max_age = self._catalog.report_max_age_days if self._catalog else None
        if max_age is not None and date.fromisoformat(day) < today - timedelta(days=max_age):
            raise ValueError(f"day {day} is more than {max_age} days old; the server rejects it")
        regions = self._catalog.regions if self._catalog else None
        if region is not None and regions is not None and region not in regions:
            raise ValueError(f"region {region!r} is not one the server accepts")

    def _check_ceilings(self, spec: Metric) -> None:
        if spec.epsilon > self._max_local_epsilon:
            raise PrivacyRefused(
                "epsilon_above_ceiling",
                f"metric {spec.name!r} v{spec.version} has local epsilon {spec.epsilon}, above this client's "
                f"max_local_epsilon {self._max_local_epsilon}; nothing was recorded",
            )
        per_change = spec.guarantees.per_change if self._memoize else spec.guarantees.per_report
        if self._max_change_epsilon is not None and per_change > self._max_change_epsilon:
            raise PrivacyRefused(
                "change_epsilon_above_ceiling",
                f"metric {spec.name!r} v{spec.version} has per-change epsilon {per_change}, above this client's "
                f"max_change_epsilon {self._max_change_epsilon}; nothing was recorded",
            )

    @staticmethod
    def _check_not_raised(spec: Metric, state: ClientState) -> None:
        accepted = state.accepted(spec.name)
        if accepted and (spec.epsilon > accepted["epsilon"] or spec.report_epsilon > accepted["report_epsilon"]):
            raise PrivacyRefused(
                "epsilon_raised",
                f"metric {spec.name!r} v{spec.version} raised its local epsilon to {spec.epsilon} (per report "
                f"{spec.report_epsilon}) from the {accepted['epsilon']} ({accepted['report_epsilon']}) this client "
                "accepted; nothing was recorded. Call accept_epsilon() to accept it.",
            )

    def _randomize(self, spec: Metric, index: int, state: ClientState) -> Any:
        """The wire value of one report: the (memoized) permanent report, then the instantaneous step."""
        memo = state.memo_get(spec.name, spec.version, index) if self._memoize else None
        if memo is None:
            oracle = _oracle(spec.protocol, len(spec.domain), spec.epsilon)
            memo = oracle.to_wire(oracle.randomize(np.array([index])))[0]
            if self._memoize:
                state.memo_put(spec.name, spec.version, index, memo)
        keep = spec.guarantees.keep
        if keep >= 1.0 or bernoulli(keep, 1)[0]:
            return memo
        oracle = _oracle(spec.protocol, len(spec.domain), spec.epsilon)
        return oracle.to_wire(null_reports(oracle, 1))[0]

    def _day_figures(self, spec: Metric, entry: dict, value: str) -> dict[str, float | None]:
        """The day's guarantees once this report is counted (the worst over the day's versions)."""
        g = spec.guarantees
        reports = entry.get("reports", 0) + 1
        if self._memoize:
            figures = {"per_report": g.per_report, "per_value": g.per_value, "per_change": g.per_change,
                       "day": reports * g.per_change}
        else:
            repeats = entry.get("values", {}).get(value, 0) + 1
            figures = {"per_report": g.per_report, "per_value": repeats * g.per_report,
                       "per_change": g.per_report, "day": reports * g.per_report}
        previous = entry.get("figures") or {}
        return {name: _json_epsilon(max(value, _from_json_epsilon(previous.get(name, 0.0))))
                for name, value in figures.items()}

    # -- catalog -------------------------------------------------------------

    def metric(self, name: str) -> Metric:
        """The current definition of ``name``; refetches the catalog once if unknown."""
        if self._catalog is None or (name not in self._catalog.metrics and self._may_refetch()):
            self.refresh_catalog()
        try:
            return self._catalog.metrics[name]
        except KeyError:
            raise ValueError(f"unknown metric {name!r}") from None

    def refresh_catalog(self) -> Catalog:
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


@dataclass(frozen=True)
class PrivacySpent:
    """One metric's local guarantees for one UTC day, from this client's state.

    ``per_report``: ε of any one of these reports alone. ``per_value``: ε of every report of
    one true value together (memoized: over the client's lifetime for that metric version;
    otherwise: that day, n × report ε for n reports of the value). ``per_change``: ε between
    two histories that differ in one report's true value, whatever else is observed.
    ``day``: ε of that day's reports together against any other values for them, also when
    they are linked to this client's other reports (reports × per-change; n × report ε
    without memoization). An unbounded figure is None; with no reports, all are 0.
    """

    metric: str
    day: str
    reports: int
    distinct_values: int
    memoized: bool
    per_report: float | None
    per_value: float | None
    per_change: float | None
    day_epsilon: float | None

    @classmethod
    def from_entry(cls, metric: str, day: str, entry: dict, memoized: bool) -> "PrivacySpent":
        figures = entry.get("figures") or {"per_report": 0.0, "per_value": 0.0, "per_change": 0.0, "day": 0.0}
        return cls(metric, day, entry.get("reports", 0), len(entry.get("values", [])), memoized,
                   figures.get("per_report"), figures.get("per_value"), figures.get("per_change"), figures.get("day"))


def _json_epsilon(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _from_json_epsilon(value: float | None) -> float:
    return math.inf if value is None else value


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
