"""The client's on-device state and its spool of unsent batches.

Both live under ``state_dir`` when one is given, and in memory otherwise.
The state is read, changed and written under a file lock (POSIX ``flock``), so
several clients, in threads or processes, can share one ``state_dir``.
Every file is written atomically (temporary file, fsync, ``os.replace``), so a
crash leaves either the old or the new version, never a torn one. Files are
created with mode 0600: the memo table maps true values to their randomized
answers and is as sensitive as the true values themselves.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import TelemetryError


def write_json_atomic(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise TelemetryError("state_corrupt", f"{path} is not valid JSON: {exc}") from exc


def value_key(version: int, index: int) -> str:
    return f"{version}:{index}"


class ClientState:
    """client_id, per-day report counts and guarantees, the memo table and the accepted ε of each metric.

    Layout of the JSON file::

        {"client_id": str,
         "days": {day: {metric: {"reports": int, "values": {"<version>:<true_index>": reports},
                                 "figures": {"per_report": ε, "per_value": ε, "per_change": ε | null,
                                             "day": ε | null}}}},
         "memo": {metric: {version: {true_index: wire_value}}},
         "accepted": {metric: {"epsilon": ε, "report_epsilon": ε}}}

    Every read-modify-write goes through :meth:`locked`, which holds a thread lock and an
    exclusive ``flock`` on ``state.lock`` (so clients in other processes on the same
    ``state_dir`` wait), re-reads the file, and writes it back before releasing. Two
    clients can therefore never both pass a daily cap, nor draw two memos for one value.

    A corrupt state file raises rather than being reset: starting over would
    forget the caps and the memo table, and so spend privacy a second time.
    """

    def __init__(self, directory: Path | None, client_id: str | None) -> None:
        self._path = directory / "state.json" if directory else None
        self._lock_path = directory / "state.lock" if directory else None
        self._thread_lock = threading.RLock()
        self._data: dict[str, Any] = {}
        with self.locked():
            if client_id:
                self._data["client_id"] = client_id
            elif not self._data.get("client_id"):
                self._data["client_id"] = secrets.token_hex(16)  # a 128-bit per-install secret
        self.client_id: str = self._data["client_id"]

    @contextmanager
    def locked(self, write: bool = True) -> Iterator["ClientState"]:
        """Exclusive access to the freshest state; saved on a normal exit (when ``write``), discarded
        on an exception."""
        with self._thread_lock:
            if self._lock_path is None:
                yield self
                return
            # One open file description per acquisition: flock excludes other threads' too.
            lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                self._data = read_json(self._path) if self._path.exists() else {}
                yield self
                if write:
                    write_json_atomic(self._path, self._data)
            finally:
                os.close(lock_fd)  # releases the lock

    # -- per day -------------------------------------------------------------

    def day_entry(self, metric: str, day: str) -> dict:
        return self._data.get("days", {}).get(day, {}).get(metric, {})

    def reports(self, metric: str, day: str) -> int:
        return self.day_entry(metric, day).get("reports", 0)

    def count(self, metric: str, day: str, version: int, index: int, figures: dict[str, float | None]) -> None:
        """Count one report of true value ``index``; ``figures`` are the day's guarantees after it."""
        days = self._data.setdefault("days", {})
        entry = days.setdefault(day, {}).setdefault(metric, {"reports": 0})
        entry["reports"] += 1
        values = entry.setdefault("values", {})
        key = value_key(version, index)
        values[key] = values.get(key, 0) + 1
        entry["figures"] = figures

    # -- memo ----------------------------------------------------------------

    def memo_get(self, metric: str, version: int, index: int) -> Any:
        return self._data.get("memo", {}).get(metric, {}).get(str(version), {}).get(str(index))

    def memo_put(self, metric: str, version: int, index: int, wire: Any) -> None:
        memo = self._data.setdefault("memo", {})
        memo.setdefault(metric, {}).setdefault(str(version), {})[str(index)] = wire

    # -- accepted definitions ------------------------------------------------

    def accepted(self, metric: str) -> dict[str, float] | None:
        return self._data.get("accepted", {}).get(metric)

    def accept(self, metric: str, epsilon: float, report_epsilon: float) -> None:
        """Remember the highest ε and per-report ε the app has accepted for ``metric``."""
        accepted = self._data.setdefault("accepted", {})
        previous = accepted.get(metric, {"epsilon": 0.0, "report_epsilon": 0.0})
        accepted[metric] = {"epsilon": max(previous["epsilon"], epsilon),
                            "report_epsilon": max(previous["report_epsilon"], report_epsilon)}


class Spool:
    """Batches written before they are sent and deleted once the server has answered.

    On disk each batch is ``spool/<batch_id>.json`` holding the exact request
    body, so a resend after a crash repeats the same ``batch_id`` with the same
    body and the server's idempotency applies.
    """

    def __init__(self, directory: Path | None) -> None:
        self._dir = directory / "spool" if directory else None
        self._memory: dict[str, dict] = {}
        if self._dir:
            self._dir.mkdir(parents=True, exist_ok=True)

    def put(self, body: dict) -> None:
        if self._dir:
            write_json_atomic(self._dir / f"{body['batch_id']}.json", body)
        else:
            self._memory[body["batch_id"]] = body

    def remove(self, batch_id: str) -> None:
        if self._dir:
            (self._dir / f"{batch_id}.json").unlink(missing_ok=True)
        else:
            self._memory.pop(batch_id, None)

    def pending(self) -> list[dict]:
        """Spooled bodies, oldest first."""
        if not self._dir:
            return list(self._memory.values())
        files = sorted(self._dir.glob("*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [read_json(path) for path in files]
