"""Scenario probes sent inside the run's namespace (``Deployment.send_probes``).

One short-lived Python process per batch (the app's interpreter, standard library only)
sends every request of the batch: over mutual TLS with a proxy's mesh certificate (files in
the run's scratch directory, read by that process, never by the harness's logs), or plain
HTTP. Paths are sent exactly as written (``http.client`` does not normalize them), so a
``//admin`` or ``/%2Fadmin`` reaches the sidecar as the scenario spells it. What it prints
back holds statuses, the first bytes of each body and error texts: never key material.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Final

from harness.platforms.base import ProbeReply
from harness.platforms.local.sandbox import Sandbox

__all__ = ["ProbeTarget", "send_batch"]

BODY_CHARS: Final = 64  # the script reads as many bytes
PROBE_TIMEOUT_S: Final = 5.0

_SCRIPT: Final = """
import http.client, json, socket, ssl, sys
out = []
for t in json.load(sys.stdin):
    reply = {"status": 0, "body": "", "error": None}
    try:
        conn = http.client.HTTPConnection(t["host"], t["port"], timeout=t["timeout"])
        if t["cert"]:
            context = ssl.create_default_context(cafile=t["ca"])
            context.check_hostname = False  # a SPIFFE id is a URI SAN; the CA is the run's
            context.load_cert_chain(t["cert"], t["key"])
            context.set_alpn_protocols(["istio"])  # what a mesh client offers (auto-mTLS)
            raw = socket.create_connection((t["host"], t["port"]), t["timeout"])
            conn.sock = context.wrap_socket(raw, server_hostname=t["sni"])
        headers = {"x-request-id": t["rid"]}
        if t["authority"]:
            headers["Host"] = t["authority"]
        conn.request(t["method"], t["path"], headers=headers)
        response = conn.getresponse()
        reply["status"] = response.status
        reply["body"] = response.read(64).decode(errors="replace")
        conn.close()
    except Exception as exc:
        reply["error"] = type(exc).__name__ + ": " + str(exc)[:160]
    out.append(reply)
print(json.dumps(out))
"""


@dataclass(frozen=True)
class ProbeTarget:
    """Where and how one probe request goes: ``cert`` empty for plain HTTP."""

    host: str
    port: int
    method: str
    path: str
    rid: str
    authority: str = ""
    cert: str = ""
    key: str = ""
    ca: str = ""
    sni: str = ""
    timeout: float = PROBE_TIMEOUT_S


def send_batch(sandbox: Sandbox, targets: Sequence[ProbeTarget]) -> list[ProbeReply]:
    """Send ``targets`` from inside ``sandbox``, in order; one reply each."""
    if not targets:
        return []
    payload = json.dumps([asdict(target) for target in targets])
    budget = PROBE_TIMEOUT_S * 2 * len(targets) + 5.0
    code, out, err = sandbox.run(
        [sys.executable, "-c", _SCRIPT], timeout=budget, input_text=payload
    )
    try:
        replies = json.loads(out) if code == 0 else None
    except json.JSONDecodeError:
        replies = None
    if not isinstance(replies, list) or len(replies) != len(targets):
        why = f"the probe process failed (exit {code}): {err.strip()[-200:]}"
        return [ProbeReply(0, "", why) for _ in targets]
    return [ProbeReply(int(r["status"]), str(r["body"])[:BODY_CHARS], r["error"]) for r in replies]
