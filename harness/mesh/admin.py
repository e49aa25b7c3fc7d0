"""A small client for Envoy's admin API on a Unix socket.

Every sidecar's admin listener is a Unix socket in the run directory, so the harness reaches
it from outside the run's network namespace without any port. Every failure (unreachable,
a non-200 answer, a body that is not JSON) is raised as one
:class:`~harness.errors.PlatformError` here, at the seam, so callers catch one type.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from typing import Any, Protocol

from harness.errors import PlatformError


class AdminApi(Protocol):
    """What the harness asks of a proxy's admin API (:class:`EnvoyAdmin` is the real one)."""

    def ready(self) -> bool: ...

    def counters(self, pattern: str | None = None) -> dict[str, int]: ...

    def clusters(self) -> dict[str, Any]: ...

    def runtime(self) -> dict[str, str]: ...

    def runtime_modify(self, values: dict[str, int | str]) -> None: ...


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class EnvoyAdmin:
    """Admin API of one Envoy, e.g. ``EnvoyAdmin(sock).counters("upstream_rq_retry")``."""

    def __init__(self, socket_path: str, *, name: str = "", timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.name = name or socket_path
        self.timeout = timeout

    def request(self, method: str, path: str) -> tuple[int, str]:
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        except OSError as exc:
            raise PlatformError(f"Envoy admin of {self.name} unreachable: {exc}") from exc
        finally:
            conn.close()

    def _ok(self, method: str, path: str) -> str:
        status, body = self.request(method, path)
        if status != 200:
            raise PlatformError(
                f"Envoy admin {method} {path} on {self.name}: {status} {body.strip()}"
            )
        return body

    def _json(self, method: str, path: str) -> dict[str, Any]:
        body = self._ok(method, path)
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            raise PlatformError(
                f"Envoy admin {method} {path} on {self.name}: not JSON ({exc}): {body[:200]!r}"
            ) from exc
        if not isinstance(data, dict):
            raise PlatformError(f"Envoy admin {method} {path} on {self.name}: not an object")
        return data

    def ready(self) -> bool:
        try:
            status, body = self.request("GET", "/ready")
        except PlatformError:
            return False
        return status == 200 and body.strip() == "LIVE"

    def counters(self, pattern: str | None = None) -> dict[str, int]:
        """Counters and gauges (``/stats``), optionally filtered by a regex."""
        query = "/stats?usedonly"
        if pattern:
            query += "&filter=" + urllib.parse.quote(pattern)
        values: dict[str, int] = {}
        for line in self._ok("GET", query).splitlines():
            name, sep, value = line.rpartition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                values[name] = int(value)
        return values

    def runtime(self) -> dict[str, str]:
        """Current runtime values that some layer sets (``/runtime``)."""
        data = self._json("GET", "/runtime")
        entries: dict[str, Any] = data.get("entries", {})
        return {key: str(entry.get("final_value", "")) for key, entry in entries.items()}

    def runtime_modify(self, values: dict[str, int | str]) -> None:
        """Set (or, with an empty string, remove) admin-layer runtime overrides."""
        if not values:
            return
        query = urllib.parse.urlencode({k: str(v) for k, v in values.items()})
        self._ok("POST", f"/runtime_modify?{query}")

    def clusters(self) -> dict[str, Any]:
        return self._json("GET", "/clusters?format=json")
