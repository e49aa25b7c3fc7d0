"""Mesh security under ``--mesh envoy`` with real Envoys and real TLS handshakes: the
AuthorizationPolicies of a scenario enforced by the callee's RBAC filter, PeerAuthentication
DISABLE as plaintext on both ends of the edge, and the paths Envoy normalizes (istiod's
default ``pathNormalization: BASE``: ``normalize_path`` on, ``merge_slashes`` off, ``%2F``
kept) checked against the real proxy rather than assumed.

One deployment for the module (the shop app, one instance per service).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from meshkit import access_entries, deployed

from harness.kube.render import run_namespace
from harness.mesh.rbac import policy_name
from harness.platforms.local import LocalDeployment

pytestmark = pytest.mark.integration

SCENARIO: dict[str, Any] = {
    "metadata": {"name": "authz-envoy-test"},
    "app": {"replicas": {"catalog": 1, "inventory": 1}},
    "mesh": {
        "peerAuthentication": {"services": {"pricing": "DISABLE"}},
        "authorizationPolicies": [
            # Only the frontend may call the catalog.
            {
                "name": "catalog-callers",
                "service": "catalog",
                "rules": [{"from": [{"services": ["frontend"]}]}],
            },
            # Nobody reaches /admin anywhere.
            {"name": "no-admin", "action": "DENY", "rules": [{"to": [{"paths": ["/admin*"]}]}]},
            # Logged, never enforced.
            {"name": "audit-inventory", "service": "inventory", "action": "AUDIT", "rules": [{}]},
        ],
    },
    "load": {"rate": 1},
    "phases": [{"name": "only", "duration": "1s"}],
    "slos": [{"kind": "errorRate", "name": "errors", "max": "1%"}],
}

# A GET over TLS (Python's ssl, the app's interpreter) with a proxy's mesh certificate, or
# plaintext without one; prints JSON: the status, the body's start, the server's URI SANs.
_PROBE = """
import http.client, json, socket, ssl, sys
host, port, path, cert, key, ca, sni, tls = sys.argv[1:]
out = {"status": 0, "body": "", "peer": []}
try:
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    if tls == "1":
        context = ssl.create_default_context(cafile=ca)
        context.check_hostname = False  # the SPIFFE id is a URI SAN; the CA is the run's own
        context.load_cert_chain(cert, key)
        conn.sock = context.wrap_socket(
            socket.create_connection((host, int(port)), 10), server_hostname=sni
        )
        names = conn.sock.getpeercert().get("subjectAltName", ())
        out["peer"] = [value for kind, value in names if kind == "URI"]
    conn.request("GET", path)
    response = conn.getresponse()
    out["status"] = response.status
    out["body"] = response.read(200).decode(errors="replace")
except Exception as exc:
    out["error"] = str(exc)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    run_dir = tmp_path_factory.mktemp("authz") / f"authz-envoy-test-run-{os.getpid()}"
    with deployed(SCENARIO, run_dir) as deployment:
        yield deployment


def probe(
    deployment: LocalDeployment, service: str, path: str, *, as_proxy: str | None
) -> dict[str, Any]:
    """GET ``path`` from ``service``'s sidecar inbound port as ``as_proxy``'s identity (its
    mesh certificate), or as a plaintext client (None)."""
    inst = deployment.instances_of(service)[0]
    tls_dir = deployment.scratch_dir / "mtls"
    argv = [
        sys.executable,
        "-c",
        _PROBE,
        inst.ip,
        str(inst.inbound_port),
        path,
        str(tls_dir / f"{as_proxy}.crt"),
        str(tls_dir / f"{as_proxy}.key"),
        str(tls_dir / "root-cert.pem"),
        f"outbound_.8080_._.{service}.example.svc.cluster.local",
        "1" if as_proxy else "0",
    ]
    code, out, err = deployment.sandbox.run(argv, timeout=15)
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def details_of(deployment: LocalDeployment, proxy: str, path: str) -> list[str]:
    """The response code details of ``proxy``'s inbound access-log entries for ``path``."""
    entries = access_entries(
        deployment.run_dir, proxy, lambda e: e.get("dir") == "inbound" and e["path"] == path
    )
    return [entry["details"] for entry in entries]


def spiffe(deployment: LocalDeployment, service: str) -> str:
    return f"spiffe://cluster.local/ns/{run_namespace(deployment.sandbox.run_id)}/sa/{service}"


def test_allowed_callers_pass_through_the_whole_chain(deployment: LocalDeployment) -> None:
    # ingress → frontend (no ALLOW policy) → catalog (frontend allowed) → inventory (only
    # audited), and frontend → pricing over plaintext (DISABLE): the shop still answers.
    status, body = deployment.sandbox.http_get(deployment.ingress_url + "/product/3", timeout=10)
    assert status == 200, body
    frontend = deployment.admin("frontend-0").counters()
    # auto-mTLS: no TLS towards the DISABLE service, TLS towards the others.
    assert frontend.get("cluster.outbound|8080||pricing.ssl.handshake", 0) == 0
    assert frontend.get("cluster.outbound|8080||catalog.ssl.handshake", 0) > 0
    catalog = deployment.admin("catalog-0").counters()
    assert catalog.get("http.inbound_catalog.rbac.allowed", 0) > 0
    inventory = deployment.admin("inventory-0").counters()
    # AUDIT (Envoy's LOG action) counts what it would log and never denies.
    assert inventory.get("http.inbound_inventory.rbac.denied", 0) == 0
    assert inventory.get("http.inbound_inventory.rbac.allowed", 0) > 0


def test_an_identity_the_policy_does_not_name_is_denied(deployment: LocalDeployment) -> None:
    # The ingress gateway's certificate is a valid mesh identity, but not the frontend's.
    denied = probe(deployment, "catalog", "/product/11", as_proxy="ingress")
    assert denied["status"] == 403 and denied["body"] == "RBAC: access denied", denied
    # The handshake was real: the callee presented its own SPIFFE id.
    assert denied["peer"] == [spiffe(deployment, "catalog")]
    assert details_of(deployment, "catalog-0", "/product/11") == [
        "rbac_access_denied_matched_policy[none]"
    ]
    allowed = probe(deployment, "catalog", "/product/12", as_proxy="frontend-0")
    assert allowed["status"] == 200, allowed


def test_deny_policy_names_the_rule_that_matched(deployment: LocalDeployment) -> None:
    denied = probe(deployment, "catalog", "/admin/users", as_proxy="frontend-0")
    assert denied["status"] == 403, denied
    namespace = run_namespace(deployment.sandbox.run_id)
    rule = policy_name(namespace, "no-admin", 0)
    assert details_of(deployment, "catalog-0", "/admin/users") == [
        f"rbac_access_denied_matched_policy[{rule}]"
    ]
    # Namespace-wide: the frontend's sidecar (no ALLOW policy) refuses it as well.
    assert probe(deployment, "frontend", "/admin", as_proxy="ingress")["status"] == 403


@pytest.mark.parametrize(
    ("path", "denied"),
    [
        ("/./admin", True),  # dot segments are removed (normalize_path)
        ("/product/../admin", True),
        ("//admin", False),  # merge_slashes is off under BASE: "//admin" is not "/admin*"
        ("/%2Fadmin", False),  # an escaped slash is kept (Envoy's default KEEP_UNCHANGED)
        ("/%61dmin", True),  # an escaped unreserved character is decoded
    ],
)
def test_path_normalization_is_what_the_real_envoy_does(
    deployment: LocalDeployment, path: str, denied: bool
) -> None:
    # The DENY rule sees the path after Envoy's normalization; what gets through under
    # istiod's default (BASE) is exactly what Istio's security docs warn about.
    result = probe(deployment, "catalog", path, as_proxy="frontend-0")
    assert result["status"] == (403 if denied else 200), result


def test_disable_takes_plaintext_and_strict_refuses_it(deployment: LocalDeployment) -> None:
    plain = probe(deployment, "pricing", "/price/1", as_proxy=None)
    assert plain["status"] == 200, plain
    # STRICT (the translation's default): a plaintext client gets no HTTP answer at all.
    refused = probe(deployment, "catalog", "/product/1", as_proxy=None)
    assert refused["status"] == 0 and "error" in refused, refused


def test_no_key_or_certificate_lands_in_the_run_directory(deployment: LocalDeployment) -> None:
    probe(deployment, "catalog", "/product/5", as_proxy="frontend-0")
    secrets = [deployment.scratch_dir / "mtls" / "frontend-0.key"]
    assert all(path.is_file() for path in secrets)
    for path in Path(deployment.run_dir).rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"PRIVATE KEY-----" not in data and b"BEGIN CERTIFICATE" not in data, path
