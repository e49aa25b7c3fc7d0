"""The harness's seam to toxiproxy: find the server binary, and a small typed API client.

Toxiproxy (Shopify) is a TCP proxy whose "toxics" — latency, bandwidth, slow close, timeout,
reset peer, slicer, limit data — act on the bytes of each connection. The server is a Go
program: ``go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0`` puts it at
``$(go env GOPATH)/bin/server``.

The client speaks toxiproxy's JSON API through a :data:`Transport` function, because the
API listens on TCP *inside* the run's network namespace, where the harness process cannot
connect: the local platform passes one that calls through the sandbox's supervisor.
(The ``toxiproxy-python`` package installs on Python 3.11, but it calls ``requests`` against
a class-global host and port, so it cannot take such a transport, and it cannot update a
toxic; hence this client of a few lines.)

::

    api = Toxiproxy("http://127.10.0.2:8474", transport=sandbox_transport(sandbox))
    api.create_proxy("frontend->catalog-0", listen="127.10.0.2:20000", upstream="127.10.2.1:15006")
    api.add_toxic("frontend->catalog-0", Toxic("slow", "latency", attributes={"latency": 200}))
    api.toxics("frontend->catalog-0")          # read back
    api.remove_toxic("frontend->catalog-0", "slow")
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError, ToolMissingError

if TYPE_CHECKING:
    from harness.platforms.local.sandbox import Sandbox

TOXIPROXY_VERSION = "v2.12.0"
TOXIPROXY_INSTALL = f"go install github.com/Shopify/toxiproxy/v2/cmd/server@{TOXIPROXY_VERSION}"
TOXIPROXY_ENV = "HARNESS_TOXIPROXY"

# (method, url, JSON body or None) → (HTTP status, body); status 0: transport error (body says).
Transport = Callable[[str, str, str | None], tuple[int, str]]


class ToxiproxyError(HarnessError):
    """The toxiproxy API refused a call or could not be reached (``status`` 0)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- the binary


def _is_toxiproxy(path: str) -> bool:
    """``<path> -version`` prints ``toxiproxy-server version ...`` (the Go binary is just
    called ``server`` after ``go install``, so the name proves nothing)."""
    try:
        done = subprocess.run(
            [path, "-version"], capture_output=True, text=True, timeout=5.0, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.startswith("toxiproxy-server version")


def go_bin_dirs() -> list[Path]:
    """Where `go install` puts binaries ($GOBIN, each GOPATH's bin, ~/go/bin), for the tools
    .ci/run installs that way (toxiproxy here, CoreDNS for the local cluster)."""
    dirs: list[Path] = []
    if gobin := os.environ.get("GOBIN"):
        dirs.append(Path(gobin))
    go = shutil.which("go")
    if go is not None:
        try:
            done = subprocess.run(
                [go, "env", "GOPATH"], capture_output=True, text=True, timeout=10.0, check=False
            )
            dirs += [Path(p) / "bin" for p in done.stdout.strip().split(os.pathsep) if p]
        except (OSError, subprocess.TimeoutExpired):
            pass
    dirs.append(Path.home() / "go" / "bin")
    return list(dict.fromkeys(dirs))


def find_toxiproxy() -> str:
    """The toxiproxy server: ``$HARNESS_TOXIPROXY``, ``toxiproxy-server`` on PATH, or the
    ``server`` binary that ``go install`` leaves in ``$GOBIN`` / ``$(go env GOPATH)/bin`` /
    ``~/go/bin`` (checked with ``-version`` to really be toxiproxy)."""
    explicit = os.environ.get(TOXIPROXY_ENV)
    if explicit:
        if _is_toxiproxy(explicit):
            return explicit
        raise ToolMissingError(
            f"{TOXIPROXY_ENV}={explicit} is not a toxiproxy server "
            f"('{explicit} -version' does not print 'toxiproxy-server version'); "
            f"install it with: {TOXIPROXY_INSTALL}"
        )
    on_path = shutil.which("toxiproxy-server")
    if on_path is not None and _is_toxiproxy(on_path):
        return on_path
    for directory in go_bin_dirs():
        candidate = directory / "server"
        if candidate.is_file() and _is_toxiproxy(str(candidate)):
            return str(candidate)
    raise ToolMissingError(
        "toxiproxy is not installed (needed for 'kind: toxic' faults): "
        f"{TOXIPROXY_INSTALL} — it lands in $(go env GOPATH)/bin/server; "
        f"or point {TOXIPROXY_ENV} at a toxiproxy-server binary"
    )


# --------------------------------------------------------------------------- transports


def direct_transport(timeout: float = 5.0) -> Transport:
    """Plain HTTP from this process (the API is reachable here, e.g. on the host)."""

    def call(method: str, url: str, body: str | None) -> tuple[int, str]:
        request = urllib.request.Request(
            url,
            data=None if body is None else body.encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")
        except OSError as exc:
            return 0, str(exc)

    return call


def sandbox_transport(sandbox: Sandbox, timeout: float = 5.0) -> Transport:
    """HTTP from inside the run's sandbox (the API listens in its network namespace)."""

    def call(method: str, url: str, body: str | None) -> tuple[int, str]:
        return sandbox.http(
            method, url, body=body, headers={"Content-Type": "application/json"}, timeout=timeout
        )

    return call


# --------------------------------------------------------------------------- the API


@dataclass(frozen=True)
class Toxic:
    """One toxic on a proxy. ``attributes`` are toxiproxy's integers (ms, KB/s, bytes, µs)."""

    name: str
    type: str
    stream: str = "downstream"
    toxicity: float = 1.0
    attributes: dict[str, int] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Toxic:
        return cls(
            name=str(data["name"]),
            type=str(data["type"]),
            stream=str(data.get("stream", "downstream")),
            toxicity=float(data.get("toxicity", 1.0)),
            attributes={str(k): int(v) for k, v in (data.get("attributes") or {}).items()},
        )

    def matches(self, other: Toxic) -> bool:
        """Same toxic as ``other`` asked for: toxiproxy echoes every attribute of the type
        (defaults too) and keeps toxicity as a float32."""
        return (
            self.name == other.name
            and self.type == other.type
            and self.stream == other.stream
            and abs(self.toxicity - other.toxicity) < 1e-6
            and all(self.attributes.get(k) == v for k, v in other.attributes.items())
        )


@dataclass(frozen=True)
class Proxy:
    """A toxiproxy proxy as the API reports it."""

    name: str
    listen: str
    upstream: str
    enabled: bool
    toxics: tuple[Toxic, ...] = ()

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Proxy:
        return cls(
            name=str(data["name"]),
            listen=str(data["listen"]),
            upstream=str(data["upstream"]),
            enabled=bool(data.get("enabled", True)),
            toxics=tuple(Toxic.parse(t) for t in data.get("toxics") or ()),
        )


class Toxiproxy:
    """A toxiproxy server's API at ``api_url`` (e.g. ``http://127.10.0.2:8474``)."""

    def __init__(self, api_url: str, transport: Transport | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.transport = transport or direct_transport()

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        body = None if payload is None else json.dumps(payload)
        status, text = self.transport(method, self.api_url + path, body)
        if status == 0:
            raise ToxiproxyError(f"toxiproxy API at {self.api_url} unreachable: {text}", 0)
        if status >= 400:
            try:
                reason = json.loads(text).get("error", text)
            except (json.JSONDecodeError, AttributeError):
                reason = text.strip()
            raise ToxiproxyError(f"toxiproxy {method} {path}: {status} {reason}", status)
        return json.loads(text) if text.strip() else None

    @staticmethod
    def _path(proxy: str, *rest: str) -> str:
        parts = [urllib.parse.quote(p, safe="") for p in (proxy, *rest)]
        return "/proxies/" + "/".join(parts)

    def version(self) -> str:
        data = self._call("GET", "/version")
        return str(data.get("version", "")) if isinstance(data, dict) else str(data)

    def proxies(self) -> dict[str, Proxy]:
        data: dict[str, Any] = self._call("GET", "/proxies")
        return {name: Proxy.parse(value) for name, value in data.items()}

    def proxy(self, name: str) -> Proxy:
        return Proxy.parse(self._call("GET", self._path(name)))

    def create_proxy(self, name: str, *, listen: str, upstream: str) -> Proxy:
        payload = {"name": name, "listen": listen, "upstream": upstream, "enabled": True}
        return Proxy.parse(self._call("POST", "/proxies", payload))

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", self._path(name))

    def toxics(self, proxy: str) -> tuple[Toxic, ...]:
        return tuple(Toxic.parse(t) for t in self._call("GET", self._path(proxy, "toxics")))

    def toxic(self, proxy: str, name: str) -> Toxic | None:
        try:
            return Toxic.parse(self._call("GET", self._path(proxy, "toxics", name)))
        except ToxiproxyError as exc:
            if exc.status == 404:
                return None
            raise

    def add_toxic(self, proxy: str, toxic: Toxic) -> Toxic:
        return Toxic.parse(self._call("POST", self._path(proxy, "toxics"), toxic.json()))

    def update_toxic(
        self,
        proxy: str,
        name: str,
        *,
        toxicity: float | None = None,
        attributes: dict[str, int] | None = None,
    ) -> Toxic:
        payload: dict[str, Any] = {}
        if toxicity is not None:
            payload["toxicity"] = toxicity
        if attributes is not None:
            payload["attributes"] = attributes
        return Toxic.parse(self._call("PATCH", self._path(proxy, "toxics", name), payload))

    def remove_toxic(self, proxy: str, name: str) -> bool:
        """Remove a toxic; False when it was not there (removal is idempotent)."""
        try:
            self._call("DELETE", self._path(proxy, "toxics", name))
        except ToxiproxyError as exc:
            if exc.status == 404:
                return False
            raise
        return True
