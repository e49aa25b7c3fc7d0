"""Test helpers shared by the integration tests: a deployment that must leave nothing
behind, and reading a proxy's JSON access log while Envoy is still writing it."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.platforms.local import LocalDeployment, LocalPlatform
from harness.platforms.local.processes import namespace_members, run_processes
from harness.scenario.models import Scenario

Entry = dict[str, Any]


def access_entries(
    run_dir: Path | str,
    proxy: str,
    match: Callable[[Entry], bool],
    *,
    expected: int = 1,
    within: float = 10.0,
) -> list[Entry]:
    """``proxy``'s access-log entries that ``match``, once ``expected`` of them are there or
    after ``within`` seconds (Envoy flushes every 250 ms; a torn last line is skipped)."""
    path = Path(run_dir) / "access" / f"{proxy}.jsonl"
    deadline = time.monotonic() + within
    found: list[Entry] = []
    while True:
        entries: list[Entry] = []
        with contextlib.suppress(FileNotFoundError):
            for line in path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    entries.append(json.loads(line))
        found = [entry for entry in entries if match(entry)]
        if len(found) >= expected or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


@contextlib.contextmanager
def deployed(spec: dict[str, Any], run_dir: Path) -> Iterator[LocalDeployment]:
    """Deploy ``spec`` (a scenario as a dict); afterwards prove nothing of the run survives."""
    with LocalPlatform().deploy(Scenario.model_validate(spec), run_dir) as deployment:
        yield deployment
    assert run_processes(run_dir.name) == []
    for namespace in deployment.sandbox.namespaces.values():
        assert namespace_members(namespace, run_dir.name) == []


# A GET over mutual TLS from inside the sandbox, with a proxy's own mesh certificate (Python's
# ssl module: the sample app's interpreter, nothing to install). Prints the status, or
# "error: <reason>" when the handshake or the request fails.
_MTLS_GET = """
import http.client, socket, ssl, sys
host, port, path, cert, key, ca, sni = sys.argv[1:]
context = ssl.create_default_context(cafile=ca)
context.check_hostname = False  # the SPIFFE id is a URI SAN; the CA is the run's own
if cert:
    context.load_cert_chain(cert, key)
try:
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.sock = context.wrap_socket(
        socket.create_connection((host, int(port)), 10), server_hostname=sni
    )
    conn.request("GET", path)
    print(conn.getresponse().status)
except Exception as exc:
    print(f"error: {exc}")
"""


def mtls_get(deployment: LocalDeployment, instance: str, path: str, *, as_proxy: str | None) -> str:
    """GET ``path`` from ``instance``'s inbound listener over TLS with ``as_proxy``'s mesh
    certificate (from the run's scratch directory; None: no client certificate): the
    status, or ``error: ...``."""
    inst = deployment.instance(instance)
    tls_dir = deployment.scratch_dir / "mtls"
    code, out, err = deployment.sandbox.run(
        [
            sys.executable,
            "-c",
            _MTLS_GET,
            inst.ip,
            str(inst.inbound_port),
            path,
            str(tls_dir / f"{as_proxy}.crt") if as_proxy else "",
            str(tls_dir / f"{as_proxy}.key") if as_proxy else "",
            str(tls_dir / "root-cert.pem"),
            f"outbound_.8080_._.{inst.service}.example.svc.cluster.local",
        ],
        timeout=15,
    )
    assert code == 0, err
    return out.strip()
