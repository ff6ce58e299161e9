"""Per-client contribution limits, enforced atomically.

Two bounds per client and *data day* (the report's ``day``, which is also the
privacy unit of central DP, docs/privacy.md):

* at most ``MAX_DAILY_CONTRIBUTIONS`` reports over all metrics;
* at most ``m`` = ``Metric.contribution_bound`` reports per metric.

Counters are keyed by ``HMAC-SHA256(secret_day, client_id)``. ``secret_day`` is
32 random bytes made on first use and kept only in the limiter's store
(Redis, or this process for the embedded default) with the counters; both
expire once the day can no longer receive reports, after which nobody can link
a counter to a client id (ARCHITECTURE.md, invariant 1).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from django.conf import settings

ACCEPTED, DAILY_LIMIT, METRIC_LIMIT = 0, 1, 2

# Both counters of an item are checked and bumped in one script run, so
# concurrent batches of one client can never overshoot either bound.
_ADMIT_LUA = """
local cap, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 3 do
  local daily_key, metric_key, bound = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if tonumber(redis.call('GET', daily_key) or '0') >= cap then
    out[#out + 1] = 1
  elseif tonumber(redis.call('GET', metric_key) or '0') >= bound then
    out[#out + 1] = 2
  else
    redis.call('INCR', daily_key); redis.call('EXPIRE', daily_key, ttl)
    redis.call('INCR', metric_key); redis.call('EXPIRE', metric_key, ttl)
    out[#out + 1] = 0
  end
end
return out
"""

_REFUND_LUA = """
for i = 1, #ARGV do
  if tonumber(redis.call('GET', ARGV[i]) or '0') > 0 then redis.call('DECR', ARGV[i]) end
end
return 1
"""


@dataclass(frozen=True)
class Contribution:
    day: date
    metric_id: int
    bound: int


def _ttl_seconds() -> int:
    # A day's counters matter while reports for it are accepted, plus a margin.
    return (settings.PRIVACY["REPORT_MAX_AGE_DAYS"] + 2) * 86400


def _counter_keys(secret: bytes, client_id: str, item: Contribution) -> tuple[str, str]:
    pseudonym = hmac.new(secret, client_id.encode(), hashlib.sha256).hexdigest()[:32]
    daily_key = f"lim:{item.day.isoformat()}:{pseudonym}"
    return daily_key, f"{daily_key}:{item.metric_id}"


class RedisLimiter:
    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url)
        self._admit = self._redis.register_script(_ADMIT_LUA)
        self._refund = self._redis.register_script(_REFUND_LUA)
        self._secrets: dict[date, bytes] = {}

    def _secret(self, day: date) -> bytes:
        secret = self._secrets.get(day)
        if secret is None:
            key = f"lim:secret:{day.isoformat()}"
            self._redis.set(key, os.urandom(32), nx=True, ex=_ttl_seconds())
            secret = self._redis.get(key)
            if len(self._secrets) > 64:  # bounded memory in long-lived workers
                self._secrets.clear()
            self._secrets[day] = secret
        return secret

    def _keys(self, client_id: str, items: list[Contribution]) -> list[tuple[str, str]]:
        return [_counter_keys(self._secret(item.day), client_id, item) for item in items]

    def admit(self, client_id: str, items: list[Contribution]) -> list[int]:
        if not items:
            return []
        args: list = [settings.PRIVACY["MAX_DAILY_CONTRIBUTIONS"], _ttl_seconds()]
        for (daily_key, metric_key), item in zip(self._keys(client_id, items), items):
            args += [daily_key, metric_key, item.bound]
        return [int(v) for v in self._admit(args=args)]

    def refund(self, client_id: str, items: list[Contribution]) -> None:
        if items:
            self._refund(args=[key for pair in self._keys(client_id, items) for key in pair])


class LocalLimiter:
    """The same bounds in this process's memory: for the single-process embedded default."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, float]] = {}
        self._secrets: dict[date, bytes] = {}

    def _secret(self, day: date) -> bytes:
        return self._secrets.setdefault(day, os.urandom(32))

    def _get(self, key: str, now: float) -> int:
        count, expires = self._counts.get(key, (0, 0.0))
        return count if expires > now else 0

    def admit(self, client_id: str, items: list[Contribution]) -> list[int]:
        cap, now, ttl = settings.PRIVACY["MAX_DAILY_CONTRIBUTIONS"], time.time(), _ttl_seconds()
        decisions = []
        with self._lock:
            for item in items:
                daily_key, metric_key = _counter_keys(self._secret(item.day), client_id, item)
                if self._get(daily_key, now) >= cap:
                    decisions.append(DAILY_LIMIT)
                elif self._get(metric_key, now) >= item.bound:
                    decisions.append(METRIC_LIMIT)
                else:
                    for key in (daily_key, metric_key):
                        self._counts[key] = (self._get(key, now) + 1, now + ttl)
                    decisions.append(ACCEPTED)
        return decisions

    def refund(self, client_id: str, items: list[Contribution]) -> None:
        now = time.time()
        with self._lock:
            for item in items:
                for key in _counter_keys(self._secret(item.day), client_id, item):
                    count, expires = self._counts.get(key, (0, 0.0))
                    if count > 0:
                        self._counts[key] = (count - 1, expires)


@lru_cache(maxsize=1)
def get_limiter() -> RedisLimiter | LocalLimiter:
    return RedisLimiter(settings.REDIS_URL) if settings.REDIS_URL else LocalLimiter()
