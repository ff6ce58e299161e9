"""The client's on-device state and its spool of unsent batches.

Both live under ``state_dir`` when one is given, and in memory otherwise.
Every file is written atomically (temporary file, fsync, ``os.replace``), so a
crash leaves either the old or the new version, never a torn one. Files are
created with mode 0600: the memo table maps true values to their randomized
answers and is as sensitive as the true values themselves.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

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


class ClientState:
    """client_id, per-day report counts and privacy charges, and the memo table.

    Layout of the JSON file::

        {"client_id": str,
         "days": {day: {metric: {"reports": int, "charges": {charge_key: epsilon}}}},
         "memo": {metric: {version: {true_index: wire_value}}}}

    A corrupt state file raises rather than being reset: starting over would
    forget the caps and the memo table, and so spend privacy a second time.
    """

    def __init__(self, directory: Path | None, client_id: str | None) -> None:
        self._path = directory / "state.json" if directory else None
        data = read_json(self._path) if self._path and self._path.exists() else {}
        self.client_id: str = client_id or data.get("client_id") or str(uuid.uuid4())
        self._days: dict[str, dict[str, dict]] = data.get("days", {})
        self._memo: dict[str, dict[str, dict[str, Any]]] = data.get("memo", {})

    def reports(self, metric: str, day: str) -> int:
        return self._day_entry(metric, day).get("reports", 0)

    def spent(self, metric: str, day: str) -> float:
        return sum(self._day_entry(metric, day).get("charges", {}).values())

    def charge(self, metric: str, day: str, charge_key: str, epsilon: float) -> None:
        """Count one report; ``charge_key`` already charged that day costs nothing more."""
        entry = self._days.setdefault(day, {}).setdefault(metric, {"reports": 0, "charges": {}})
        entry["reports"] += 1
        entry["charges"][charge_key] = epsilon

    def memo_get(self, metric: str, version: int, index: int) -> Any:
        return self._memo.get(metric, {}).get(str(version), {}).get(str(index))

    def memo_put(self, metric: str, version: int, index: int, wire: Any) -> None:
        self._memo.setdefault(metric, {}).setdefault(str(version), {})[str(index)] = wire

    def save(self) -> None:
        if self._path:
            data = {"client_id": self.client_id, "days": self._days, "memo": self._memo}
            write_json_atomic(self._path, data)

    def _day_entry(self, metric: str, day: str) -> dict:
        return self._days.get(day, {}).get(metric, {})


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
