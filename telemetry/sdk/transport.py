"""A keep-alive JSON-over-HTTP connection built on ``http.client``.

One :class:`HttpTransport` holds one connection and is not thread-safe: give
each thread its own.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import TelemetryError

# A keep-alive connection the server has meanwhile closed fails with one of these
# on the next request; it is worth one immediate retry on a fresh connection.
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True)
class Response:
    status: int
    data: Any  # the parsed JSON body, or None when the body is not JSON


class HttpTransport:
    """Sends JSON requests to one server over a reused connection."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._headers = {
            "Authorization": f"Api-Key {api_key}",
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        self._conn: http.client.HTTPConnection | None = None
        self._reused = False

    def request(self, method: str, path: str, body: Any = None) -> Response:
        """One request; raises TelemetryError(code='network_error') when no response came."""
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        try:
            try:
                return self._exchange(method, path, payload)
            except _STALE_CONNECTION:
                if not self._reused:
                    raise
                self.close()
                return self._exchange(method, path, payload)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise TelemetryError("network_error", f"{method} {path}: {exc!r}") from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._reused = False

    def _exchange(self, method: str, path: str, payload: bytes | None) -> Response:
        conn = self._connection()
        conn.request(method, self._prefix + path, body=payload, headers=self._headers)
        raw = conn.getresponse()
        content = raw.read()
        self._reused = not raw.will_close
        if raw.will_close:
            self.close()
        return Response(raw.status, _parse_json(content))

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout)
        return self._conn


def _parse_json(content: bytes) -> Any:
    try:
        return json.loads(content) if content else None
    except ValueError:
        return None
