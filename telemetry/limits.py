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

A batch is admitted in one round trip: the items are grouped by (day, metric),
each group's counter keys are derived once, and one Lua script decides every
item in order and bumps each counter once by its total.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import lru_cache

from django.conf import settings

ACCEPTED, DAILY_LIMIT, METRIC_LIMIT = 0, 1, 2

# One run decides a whole batch, item by item in order, so concurrent batches of
# one client can never overshoot either bound. ARGV: cap, ttl, D, D daily keys,
# then per (day, metric) group: its daily key's position (1-based), its counter
# key and its bound; last, the items as a string of 2-byte big-endian group
# numbers (0-based). Every counter is read once (MGET) and written once.
# Returns one decision digit per item.
_ADMIT_LUA = """
local cap, ttl, nd = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local dkeys, dcount, dadd = {}, {}, {}
for d = 1, nd do dkeys[d] = ARGV[3 + d] end
local values = redis.call('MGET', unpack(dkeys))
for d = 1, nd do dcount[d] = tonumber(values[d]) or 0; dadd[d] = 0 end
local pos, last = 4 + nd, #ARGV
local mday, mkeys, mbound, mcount, madd = {}, {}, {}, {}, {}
local nm = 0
while pos < last do
  nm = nm + 1
  mday[nm], mkeys[nm], mbound[nm] = tonumber(ARGV[pos]), ARGV[pos + 1], tonumber(ARGV[pos + 2])
  pos = pos + 3
end
values = redis.call('MGET', unpack(mkeys))
for m = 1, nm do mcount[m] = tonumber(values[m]) or 0; madd[m] = 0 end
local items, out = ARGV[last], {}
for i = 1, #items, 2 do
  local hi, lo = string.byte(items, i, i + 1)
  local m = hi * 256 + lo + 1
  local d = mday[m]
  if dcount[d] >= cap then
    out[#out + 1] = '1'
  elseif mcount[m] >= mbound[m] then
    out[#out + 1] = '2'
  else
    dcount[d], dadd[d] = dcount[d] + 1, dadd[d] + 1
    mcount[m], madd[m] = mcount[m] + 1, madd[m] + 1
    out[#out + 1] = '0'
  end
end
for d = 1, nd do
  if dadd[d] > 0 then redis.call('INCRBY', dkeys[d], dadd[d]); redis.call('EXPIRE', dkeys[d], ttl) end
end
for m = 1, nm do
  if madd[m] > 0 then redis.call('INCRBY', mkeys[m], madd[m]); redis.call('EXPIRE', mkeys[m], ttl) end
end
return table.concat(out)
"""

# ARGV: key, count, key, count, ...: take back up to count, never below zero.
_REFUND_LUA = """
for i = 1, #ARGV, 2 do
  local current = tonumber(redis.call('GET', ARGV[i]) or '0')
  if current > 0 then redis.call('DECRBY', ARGV[i], math.min(current, tonumber(ARGV[i + 1]))) end
end
return 1
"""


@dataclass(frozen=True)
class Contribution:
    """A (data day, metric) group of a batch's items, with the metric's bound m."""

    day: date
    metric_id: int
    bound: int


def _ttl_seconds() -> int:
    # A day's counters matter while reports for it are accepted, plus a margin.
    return (settings.PRIVACY["REPORT_MAX_AGE_DAYS"] + 2) * 86400


def _daily_key(secret: bytes, client_id: str, day: date) -> str:
    """The counter key of a client's reports on ``day``; ``<daily key>:<metric id>`` counts one metric."""
    pseudonym = hmac.new(secret, client_id.encode(), hashlib.sha256).hexdigest()[:32]
    return f"lim:{day.isoformat()}:{pseudonym}"


def _decisions(out: bytes, count: int) -> list[int]:
    if out == b"0" * count:
        return [ACCEPTED] * count
    return [digit - 48 for digit in out]


class RedisLimiter:
    """The bounds in Redis, shared by every worker: one script run per batch."""

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url)
        self._admit = self._redis.register_script(_ADMIT_LUA)
        self._refund = self._redis.register_script(_REFUND_LUA)
        self._secrets: dict[date, bytes] = {}
        self._local = threading.local()

    def _run_admit(self, args: list) -> bytes:
        """EVALSHA on this thread's own connection: one send, one read, none of the pool's per-command checks.

        Never retried: the script is not idempotent. Any failure drops the
        connection, so no half-read answer can be taken for the next one.
        """
        from redis.exceptions import NoScriptError

        connection = getattr(self._local, "connection", None)
        if connection is None:
            pool = self._redis.connection_pool
            connection = self._local.connection = pool.connection_class(**pool.connection_kwargs)
        try:
            try:
                connection.send_command("EVALSHA", self._admit.sha, 0, *args)
                return connection.read_response()
            except NoScriptError:  # a restarted or flushed Redis: load it, then run it once
                connection.send_command("SCRIPT", "LOAD", _ADMIT_LUA)
                connection.read_response()
                connection.send_command("EVALSHA", self._admit.sha, 0, *args)
                return connection.read_response()
        except BaseException:
            connection.disconnect()
            raise

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

    def _group_keys(self, client_id: str, groups: list[Contribution]) -> tuple[list[str], list[int], list[str]]:
        """Daily keys (one per day), each group's daily key position, each group's metric key."""
        daily_keys: list[str] = []
        day_position: dict[date, int] = {}
        group_days, metric_keys = [], []
        for group in groups:
            position = day_position.get(group.day)
            if position is None:
                position = day_position[group.day] = len(daily_keys)
                daily_keys.append(_daily_key(self._secret(group.day), client_id, group.day))
            group_days.append(position)
            metric_keys.append(f"{daily_keys[position]}:{group.metric_id}")
        return daily_keys, group_days, metric_keys

    def admit_groups(self, client_id: str, groups: list[Contribution], item_groups: list[int]) -> list[int]:
        """Decide items in order; ``item_groups[i]`` is item i's position in ``groups``."""
        if not item_groups:
            return []
        daily_keys, group_days, metric_keys = self._group_keys(client_id, groups)
        args: list = [settings.PRIVACY["MAX_DAILY_CONTRIBUTIONS"], _ttl_seconds(), len(daily_keys), *daily_keys]
        for group, day_position, metric_key in zip(groups, group_days, metric_keys):
            args += [day_position + 1, metric_key, group.bound]
        args.append(struct.pack(f">{len(item_groups)}H", *item_groups))
        return _decisions(self._run_admit(args), len(item_groups))

    def refund_groups(self, client_id: str, groups: list[Contribution], counts: list[int]) -> None:
        """Give back ``counts[g]`` admitted items of each group."""
        daily_totals: dict[str, int] = {}
        args: list = []
        daily_keys, group_days, metric_keys = self._group_keys(client_id, groups)
        for day_position, metric_key, count in zip(group_days, metric_keys, counts):
            if count:
                daily_key = daily_keys[day_position]
                daily_totals[daily_key] = daily_totals.get(daily_key, 0) + count
                args += [metric_key, count]
        for daily_key, count in daily_totals.items():
            args += [daily_key, count]
        if args:
            self._refund(args=args)


class LocalLimiter:
    """The same bounds and decisions in this process's memory: for the single-process embedded default."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, float]] = {}  # key -> (count, expiry time)
        self._secrets: dict[date, bytes] = {}

    def _secret(self, day: date) -> bytes:
        secret = self._secrets.get(day)
        if secret is None:
            self._forget_expired()
            secret = self._secrets[day] = os.urandom(32)
        return secret

    def _forget_expired(self) -> None:
        """Drop the secrets and counters of days that can no longer receive reports (as Redis expires them)."""
        now = time.time()
        oldest = datetime.fromtimestamp(now - _ttl_seconds(), timezone.utc).date()
        self._secrets = {day: secret for day, secret in self._secrets.items() if day >= oldest}
        self._counts = {key: entry for key, entry in self._counts.items() if entry[1] > now}

    def _group_keys(self, client_id: str, group: Contribution) -> tuple[str, str]:
        daily_key = _daily_key(self._secret(group.day), client_id, group.day)
        return daily_key, f"{daily_key}:{group.metric_id}"

    def _get(self, key: str, now: float) -> int:
        count, expires = self._counts.get(key, (0, 0.0))
        return count if expires > now else 0

    def admit_groups(self, client_id: str, groups: list[Contribution], item_groups: list[int]) -> list[int]:
        """Decide items in order, as RedisLimiter's script does."""
        cap, now, ttl = settings.PRIVACY["MAX_DAILY_CONTRIBUTIONS"], time.time(), _ttl_seconds()
        decisions = []
        with self._lock:
            keys = [self._group_keys(client_id, group) for group in groups]
            for group in item_groups:
                daily_key, metric_key = keys[group]
                if self._get(daily_key, now) >= cap:
                    decisions.append(DAILY_LIMIT)
                elif self._get(metric_key, now) >= groups[group].bound:
                    decisions.append(METRIC_LIMIT)
                else:
                    for key in (daily_key, metric_key):
                        self._counts[key] = (self._get(key, now) + 1, now + ttl)
                    decisions.append(ACCEPTED)
        return decisions

    def refund_groups(self, client_id: str, groups: list[Contribution], counts: list[int]) -> None:
        """Give back ``counts[g]`` admitted items of each group, never below zero."""
        with self._lock:
            for group, count in zip(groups, counts):
                if count:
                    for key in self._group_keys(client_id, group):
                        current, expires = self._counts.get(key, (0, 0.0))
                        if current > 0:
                            self._counts[key] = (max(0, current - count), expires)


@lru_cache(maxsize=1)
def get_limiter() -> RedisLimiter | LocalLimiter:
    return RedisLimiter(settings.REDIS_URL) if settings.REDIS_URL else LocalLimiter()
