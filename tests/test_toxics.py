"""L4 toxics through a real toxiproxy server between real Envoy sidecars and the real app.

CI installs toxiproxy (``go install github.com/Shopify/toxiproxy/v2/cmd/server@<pinned>``);
a machine without it fails these tests with that install line instead of skipping them.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from meshkit import deployed

from harness.errors import ExitCode, FaultError, ToolMissingError
from harness.faults.toxic import ToxicInjector, from_scenario, toxic_attributes
from harness.platforms.local import LocalDeployment, LocalPlatform
from harness.platforms.local.processes import run_processes
from harness.platforms.local.sandbox import Isolation
from harness.platforms.local.toxiproxy import (
    TOXIPROXY_INSTALL,
    Toxic,
    Toxiproxy,
    ToxiproxyError,
    direct_transport,
    find_toxiproxy,
)
from harness.pytest_plugin import ScenarioOutcome
from harness.scenario.models import Scenario, ToxicFault

pytestmark = pytest.mark.integration

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
PRICING_TIMEOUT_MS = 600


def toxic_fault(**spec: object) -> dict[str, object]:
    return {"kind": "toxic", "phase": "only", **spec}


# The faults only make the platform plan the toxic proxies of these edges; each test injects
# its own toxic on one of them.
SCENARIO = {
    "metadata": {"name": "toxics-test"},
    "app": {"replicas": {"catalog": 2, "inventory": 1}},
    "mesh": {
        "destinations": {
            "pricing": {"timeout": f"{PRICING_TIMEOUT_MS}ms", "retries": {"attempts": 0}},
            "inventory": {"retries": {"attempts": 0}},
        }
    },
    "load": {"rate": 1},
    "phases": [{"name": "only", "duration": "1s"}],
    "faults": [
        toxic_fault(
            name="pricing-slow",
            toxic="latency",
            source="frontend",
            target={"service": "pricing"},
            latency="200ms",
        ),
        toxic_fault(
            name="inventory-resets",
            toxic="reset_peer",
            source="catalog",
            target={"service": "inventory"},
        ),
        toxic_fault(
            name="catalog-0-slow",
            toxic="latency",
            source="frontend",
            target={"service": "catalog", "instances": 1},
            latency="100ms",
        ),
    ],
    "slos": [{"kind": "errorRate", "name": "errors", "max": "1%"}],
}


@pytest.fixture(scope="session")
def toxiproxy_server() -> str:
    try:
        return find_toxiproxy()
    except ToolMissingError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def deployment(
    toxiproxy_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalDeployment]:
    with deployed(SCENARIO, tmp_path_factory.mktemp("toxics") / "toxics-test-run") as deployment:
        yield deployment


def injector(deployment: LocalDeployment, **spec: object) -> ToxicInjector:
    fault = ToxicFault.model_validate(toxic_fault(name="under-test", **spec))
    return from_scenario(fault, "under-test", deployment)


def api(deployment: LocalDeployment) -> Toxiproxy:
    assert deployment.toxiproxy is not None
    return deployment.toxiproxy


def get(deployment: LocalDeployment, product: int) -> tuple[int, dict[str, object]]:
    status, body = deployment.sandbox.http_get(
        f"{deployment.ingress_url}/product/{product}", timeout=10
    )
    return status, json.loads(body) if body.startswith("{") else {"raw": body}


def edge_log(
    deployment: LocalDeployment,
    callers: list[str],
    callee: str,
    products: range,
) -> list[dict[str, Any]]:
    """The callers' outbound access-log entries for ``callee`` on these product ids (Envoy
    flushes every 250 ms, so this waits until one entry per product is there)."""
    paths = {f"/{callee}/{product}" for product in products}
    deadline = time.monotonic() + 10
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = []
        for caller in callers:
            path = Path(deployment.run_dir) / "access" / f"{caller}.jsonl"
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # Envoy is still writing the last line
                if entry["dir"] == "outbound" and entry["path"] in paths:
                    found.append(entry)
        if len(found) >= len(paths):
            return found
        time.sleep(0.1)
    return found


def edge_ms(deployment: LocalDeployment, callee: str, products: range) -> list[int]:
    """Durations (ms) frontend's sidecar logged for its calls to ``callee``."""
    for product in products:
        assert get(deployment, product)[0] in (200, 502)
    return [int(e["ms"]) for e in edge_log(deployment, ["frontend-0"], callee, products)]


def reverted_clean(deployment: LocalDeployment, toxic: ToxicInjector) -> None:
    assert toxic.revert()
    for edge in toxic.edges:
        assert api(deployment).toxics(edge.name) == ()


# --------------------------------------------------------------------------- finding it


def test_missing_toxiproxy_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.delenv("HARNESS_TOXIPROXY", raising=False)
    monkeypatch.delenv("GOBIN", raising=False)
    monkeypatch.setenv("PATH", str(empty))  # no toxiproxy-server and no go
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/go/bin/server
    with pytest.raises(ToolMissingError) as missing:
        find_toxiproxy()
    assert TOXIPROXY_INSTALL in str(missing.value)


def test_a_binary_called_server_must_really_be_toxiproxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    impostor = tmp_path / "go" / "bin" / "server"
    impostor.parent.mkdir(parents=True)
    impostor.write_text("#!/bin/sh\necho 'some other server 1.0'\n")
    impostor.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GOBIN", raising=False)
    monkeypatch.setenv("HARNESS_TOXIPROXY", str(impostor))
    with pytest.raises(ToolMissingError, match="is not a toxiproxy server"):
        find_toxiproxy()
    monkeypatch.delenv("HARNESS_TOXIPROXY")
    with pytest.raises(ToolMissingError) as missing:
        find_toxiproxy()
    assert TOXIPROXY_INSTALL in str(missing.value)


def test_toxiproxy_is_installed_where_ci_puts_it(toxiproxy_server: str) -> None:
    version = subprocess.run(
        [toxiproxy_server, "-version"], capture_output=True, text=True, check=True, timeout=10
    )
    assert version.stdout.startswith("toxiproxy-server version")


def test_deploy_refuses_toxic_faults_without_toxiproxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_TOXIPROXY", "/bin/true")  # answers -version with nothing
    run_dir = tmp_path / "no-toxiproxy-run"
    with (
        pytest.raises(ToolMissingError, match="go install"),
        LocalPlatform().deploy(Scenario.model_validate(SCENARIO), run_dir),
    ):
        pass
    assert run_processes(run_dir.name) == []


# --------------------------------------------------------------------------- the adapter


@pytest.fixture
def host_toxiproxy(toxiproxy_server: str, tmp_path: Path) -> Iterator[Toxiproxy]:
    """A toxiproxy server on the host's loopback, reached directly."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with open(tmp_path / "toxiproxy.log", "wb") as log:
        server = subprocess.Popen(
            [toxiproxy_server, "-host", "127.0.0.1", "-port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    client = Toxiproxy(f"http://127.0.0.1:{port}", direct_transport(timeout=2.0))
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.version()
                break
            except ToxiproxyError:
                assert time.monotonic() < deadline, "toxiproxy did not answer within 10 s"
                time.sleep(0.05)
        yield client
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_adapter_round_trip_against_the_real_api(host_toxiproxy: Toxiproxy) -> None:
    api = host_toxiproxy
    created = api.create_proxy("a->b-0", listen="127.0.0.1:0", upstream="127.0.0.1:9")
    assert created.name == "a->b-0" and created.enabled and created.toxics == ()
    with pytest.raises(ToxiproxyError) as duplicate:
        api.create_proxy("a->b-0", listen="127.0.0.1:0", upstream="127.0.0.1:9")
    assert duplicate.value.status == 409

    slow = Toxic("slow", "latency", toxicity=0.5, attributes={"latency": 200})
    assert api.add_toxic("a->b-0", slow).matches(slow)
    read_back = api.proxy("a->b-0").toxics
    assert [t.name for t in read_back] == ["slow"]
    assert read_back[0].attributes == {"latency": 200, "jitter": 0}  # defaults echoed
    updated = api.update_toxic("a->b-0", "slow", toxicity=0.25)
    assert updated.toxicity == pytest.approx(0.25) and updated.attributes["latency"] == 200

    with pytest.raises(ToxiproxyError) as bad:
        api.add_toxic("a->b-0", Toxic("x", "no-such-toxic"))
    assert bad.value.status == 400
    assert api.remove_toxic("a->b-0", "slow") is True
    assert api.remove_toxic("a->b-0", "slow") is False  # idempotent
    assert api.toxics("a->b-0") == ()
    assert api.toxic("a->b-0", "slow") is None
    api.delete_proxy("a->b-0")
    assert api.proxies() == {}


def test_unreachable_api_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(ToxiproxyError, match="unreachable") as error:
        Toxiproxy(f"http://127.0.0.1:{port}", direct_transport(timeout=1.0)).version()
    assert error.value.status == 0


@pytest.mark.parametrize(
    ("spec", "attributes"),
    [
        (
            {"toxic": "latency", "latency": "200ms", "jitter": "20ms"},
            {"latency": 200, "jitter": 20},
        ),
        ({"toxic": "bandwidth", "rate": 64}, {"rate": 64}),
        ({"toxic": "slow_close", "delay": "1.5s"}, {"delay": 1500}),
        ({"toxic": "timeout"}, {"timeout": 0}),
        ({"toxic": "reset_peer", "timeout": "50ms"}, {"timeout": 50}),
        (
            {"toxic": "slicer", "averageSize": 16, "sizeVariation": 4, "delay": "2ms"},
            {"average_size": 16, "size_variation": 4, "delay": 2000},  # slicer: µs
        ),
        ({"toxic": "limit_data", "bytes": 100}, {"bytes": 100}),
    ],
)
def test_scenario_fields_become_toxiproxy_attributes(
    spec: dict[str, object], attributes: dict[str, int]
) -> None:
    fault = ToxicFault.model_validate(
        toxic_fault(source="frontend", target={"service": "pricing"}, **spec)
    )
    assert toxic_attributes(fault) == attributes


# --------------------------------------------------------------------------- placement


def test_only_the_sources_sidecars_go_through_the_edge_proxies(
    deployment: LocalDeployment,
) -> None:
    proxies = api(deployment).proxies()
    assert set(proxies) == {
        "frontend->pricing-0",
        "catalog->inventory-0",
        "frontend->catalog-0",
    }
    catalog_0 = deployment.instances_of("catalog")[0]
    assert proxies["frontend->catalog-0"].upstream == f"{catalog_0.ip}:{catalog_0.inbound_port}"

    def endpoints(proxy: str, callee: str) -> set[str]:
        config = json.loads((Path(deployment.run_dir) / "envoy" / f"{proxy}.json").read_text())
        (cluster,) = [
            c
            for c in config["static_resources"]["clusters"]
            if c["name"] == f"outbound|8080||{callee}"
        ]
        return {
            "{address}:{port_value}".format(**e["endpoint"]["address"]["socket_address"])
            for group in cluster["load_assignment"]["endpoints"]
            for e in group["lb_endpoints"]
        }

    catalog_1 = deployment.instances_of("catalog")[1]
    # frontend reaches catalog-0 (the only target) through its proxy, catalog-1 directly.
    assert endpoints("frontend-0", "catalog") == {
        proxies["frontend->catalog-0"].listen,
        f"{catalog_1.ip}:{catalog_1.inbound_port}",
    }
    assert endpoints("frontend-0", "pricing") == {proxies["frontend->pricing-0"].listen}
    for catalog in ("catalog-0", "catalog-1"):
        assert endpoints(catalog, "inventory") == {proxies["catalog->inventory-0"].listen}
    frontend = deployment.instances_of("frontend")[0]
    assert endpoints("ingress", "frontend") == {f"{frontend.ip}:{frontend.inbound_port}"}
    assert get(deployment, 1)[0] == 200


# --------------------------------------------------------------------------- the toxics


def test_latency_toxic_raises_the_edges_p50_by_its_latency(deployment: LocalDeployment) -> None:
    before = edge_ms(deployment, "pricing", range(1000, 1030))
    toxic = injector(
        deployment,
        toxic="latency",
        source="frontend",
        target={"service": "pricing"},
        latency="200ms",
    )
    toxic.inject()
    try:
        during = edge_ms(deployment, "pricing", range(2000, 2030))
        evidence = toxic.evidence()
    finally:
        reverted_clean(deployment, toxic)
    shift = statistics.median(during) - statistics.median(before)
    assert 180 <= shift <= 220, f"p50 {statistics.median(before)} → {statistics.median(during)}"
    assert evidence["toxics_present"] == evidence["proxies"] == 1
    assert evidence["requests_via_proxy"] >= 30
    took_effect, message = toxic.judge_effect(evidence)
    assert took_effect, message
    after = edge_ms(deployment, "pricing", range(3000, 3005))
    assert statistics.median(after) < 100


def test_toxicity_ramps_and_a_second_inject_changes_nothing(deployment: LocalDeployment) -> None:
    toxic = injector(
        deployment,
        toxic="latency",
        source="frontend",
        target={"service": "pricing"},
        latency="300ms",
    )
    toxic.inject()
    try:
        toxic.inject()
        assert [t.name for t in api(deployment).toxics("frontend->pricing-0")] == ["under-test"]
        toxic.adjust(0)  # toxiproxy re-rolls every open connection: none keeps the toxic
        ramped = api(deployment).toxic("frontend->pricing-0", "under-test")
        assert ramped is not None and ramped.toxicity == 0
        assert max(edge_ms(deployment, "pricing", range(4000, 4005))) < 250
        toxic.adjust(100)
        assert min(edge_ms(deployment, "pricing", range(4100, 4103))) >= 290
    finally:
        reverted_clean(deployment, toxic)
    assert [s["percentage"] for s in toxic.record.detail["steps"]] == [0, 100]


def test_timeout_toxic_hangs_until_the_callers_route_timeout(deployment: LocalDeployment) -> None:
    toxic = injector(deployment, toxic="timeout", source="frontend", target={"service": "pricing"})
    toxic.inject()
    try:
        status, body = get(deployment, 5000)
        evidence = toxic.evidence()
    finally:
        reverted_clean(deployment, toxic)
    assert status == 502 and body["deps"] == {"catalog": 200, "pricing": 504}
    (entry,) = edge_log(deployment, ["frontend-0"], "pricing", range(5000, 5001))
    assert entry["flags"] == "UT" and int(entry["ms"]) >= PRICING_TIMEOUT_MS - 10
    assert evidence["timeouts_via_proxy"] >= 1
    assert get(deployment, 5001)[0] == 200  # the timed-out connection is not reused


def test_reset_peer_toxic_resets_the_callers_connections(deployment: LocalDeployment) -> None:
    toxic = injector(
        deployment, toxic="reset_peer", source="catalog", target={"service": "inventory"}
    )
    toxic.inject()
    try:
        statuses = [get(deployment, product)[0] for product in range(6000, 6003)]
        evidence = toxic.evidence()
    finally:
        reverted_clean(deployment, toxic)
    assert statuses == [502] * 3
    entries = edge_log(deployment, ["catalog-0", "catalog-1"], "inventory", range(6000, 6003))
    # Under mTLS a connection is up only after its handshake: a reset on a pooled connection
    # is a termination (UC), a reset during a new connection's handshake a connection
    # failure with Envoy's TLS error (UF), as under istiod's auto-mTLS.
    assert {e["status"] for e in entries} == {503}, entries
    for entry in entries:
        assert entry["flags"] in {"UC", "UF"}, entry
        expected = "connection_termination" if entry["flags"] == "UC" else "TLS_error"
        assert expected in entry["details"], entry
    assert evidence["errors_via_proxy"] >= 3
    assert toxic.judge_effect(evidence)[0]
    assert get(deployment, 6003)[0] == 200


def test_bandwidth_toxic_delays_each_response_by_its_size(deployment: LocalDeployment) -> None:
    frontend = deployment.admin("frontend-0")
    rx = "cluster.outbound|8080||pricing.upstream_cx_rx_bytes_total"
    toxic = injector(
        deployment, toxic="bandwidth", source="frontend", target={"service": "pricing"}, rate=1
    )
    received = frontend.counters(r"pricing\.upstream_cx_rx_bytes_total$")[rx]
    toxic.inject()
    try:
        during = edge_ms(deployment, "pricing", range(7000, 7004))
    finally:
        reverted_clean(deployment, toxic)
    per_response = (frontend.counters(r"pricing\.upstream_cx_rx_bytes_total$")[rx] - received) / 4
    # 1 KB/s is one byte per millisecond: a response of N bytes arrives N ms late.
    assert per_response > 100
    assert statistics.median(during) >= 0.9 * per_response, (during, per_response)


def test_slicer_toxic_trickles_the_bytes_and_keeps_them_intact(
    deployment: LocalDeployment,
) -> None:
    before = edge_ms(deployment, "pricing", range(8000, 8003))
    toxic = injector(
        deployment,
        toxic="slicer",
        source="frontend",
        target={"service": "pricing"},
        averageSize=16,
        delay="2ms",
    )
    toxic.inject()
    try:
        replies = [get(deployment, product) for product in range(8100, 8103)]
        during = [
            int(e["ms"]) for e in edge_log(deployment, ["frontend-0"], "pricing", range(8100, 8103))
        ]
    finally:
        reverted_clean(deployment, toxic)
    # Every reply parses and is right: slicing changes timing, not content.
    assert [(status, body["deps"]) for status, body in replies] == [
        (200, {"catalog": 200, "pricing": 200})
    ] * 3
    # ~300 response bytes in 16-byte slices, each after 2 ms: ≥ 30 ms more than before.
    assert statistics.median(during) >= statistics.median(before) + 30


def test_limit_data_toxic_cuts_the_connection_before_the_response(
    deployment: LocalDeployment,
) -> None:
    # Sidecars talk mTLS (as under istiod): the toxic counts TLS records, so 100 bytes no
    # longer end inside the plain-text response headers (UPE); the connection is closed with
    # the request in flight before any response byte is decrypted (UC).
    frontend = deployment.admin("frontend-0")
    closed = "cluster.outbound|8080||pricing.upstream_cx_destroy_remote_with_active_rq"
    before = frontend.counters(r"pricing\.upstream_cx_destroy_remote_with_active_rq$").get(
        closed, 0
    )
    toxic = injector(
        deployment, toxic="limit_data", source="frontend", target={"service": "pricing"}, bytes=100
    )
    toxic.inject()
    try:
        status, body = get(deployment, 9000)
    finally:
        reverted_clean(deployment, toxic)
    assert status == 502 and body["deps"] == {"catalog": 200, "pricing": 503}
    (entry,) = edge_log(deployment, ["frontend-0"], "pricing", range(9000, 9001))
    assert entry["flags"] == "UC" and "connection_termination" in entry["details"], entry
    after = frontend.counters(r"pricing\.upstream_cx_destroy_remote_with_active_rq$")[closed]
    assert after - before == 1
    assert get(deployment, 9001)[0] == 200


PROBE = """
import json, socket, ssl, sys, time
host, port, request, cert, key, ca = sys.argv[1:]
context = ssl.create_default_context(cafile=ca)
context.check_hostname = False  # a SPIFFE URI SAN; the CA is the run's own
context.load_cert_chain(cert, key)
raw = socket.create_connection((host, int(port)), timeout=5)
start = time.monotonic()
sock = context.wrap_socket(raw, server_hostname="pricing")
sock.sendall(request.encode())
data, last = b"", 0.0
while chunk := sock.recv(65536):
    data, last = data + chunk, time.monotonic() - start
try:  # the peer's close_notify came: the TCP close (FIN) may come later
    plain = sock.unwrap()
    while plain.recv(65536):
        pass
except (OSError, ssl.SSLError):
    pass  # no close_notify: the TLS end was the TCP end
print(json.dumps({"last_byte_s": last, "eof_s": time.monotonic() - start, "data": data.decode()}))
"""


def probe(deployment: LocalDeployment, listen: str) -> dict[str, Any]:
    """One ``Connection: close`` request straight to a toxic proxy, from inside the sandbox,
    over mTLS with frontend's mesh certificate (the sidecar behind the proxy refuses plain
    text): when the last response byte came, and when the TCP connection closed."""
    host, port = listen.rsplit(":", 1)
    request = "GET /pricing/1 HTTP/1.1\r\nHost: pricing\r\nConnection: close\r\n\r\n"
    tls_dir = deployment.scratch_dir / "mtls"
    argv = [sys.executable, "-c", PROBE, host, port, request]
    argv += [str(tls_dir / name) for name in ("frontend-0.crt", "frontend-0.key", "root-cert.pem")]
    code, out, err = deployment.sandbox.run(argv, timeout=15)
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def test_slow_close_toxic_delays_the_close_not_the_data(deployment: LocalDeployment) -> None:
    listen = api(deployment).proxy("frontend->pricing-0").listen
    toxic = injector(
        deployment,
        toxic="slow_close",
        source="frontend",
        target={"service": "pricing"},
        delay="400ms",
    )
    toxic.inject()
    try:
        slow = probe(deployment, listen)
    finally:
        reverted_clean(deployment, toxic)
    plain = probe(deployment, listen)
    assert slow["data"].startswith("HTTP/1.1 200")
    assert slow["eof_s"] - slow["last_byte_s"] >= 0.35
    assert plain["eof_s"] - plain["last_byte_s"] < 0.35


def test_a_fault_without_traffic_shows_no_effect(deployment: LocalDeployment) -> None:
    toxic = injector(
        deployment, toxic="latency", source="frontend", target={"service": "pricing"}, latency="1s"
    )
    toxic.inject()
    try:
        evidence = toxic.evidence()
    finally:
        reverted_clean(deployment, toxic)
    took_effect, message = toxic.judge_effect(evidence)
    assert not took_effect
    assert "no request or connection crossed the toxic proxies" in message


def test_a_toxic_fault_needs_a_planned_edge(deployment: LocalDeployment) -> None:
    with pytest.raises(FaultError, match="no toxic proxy for frontend → catalog-1"):
        injector(
            deployment,
            toxic="latency",
            source="frontend",
            target={"service": "catalog", "instances": 2},
            latency="1s",
        )


# --------------------------------------------------------------------------- host fallback


def test_toxics_on_the_host_fallback(
    toxiproxy_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HARNESS_ISOLATION", raising=False)
    scenario = Scenario.model_validate({**SCENARIO, "app": {"replicas": {"catalog": 1}}})
    run_dir = tmp_path / "host-toxics-run"
    with LocalPlatform(Isolation.HOST).deploy(scenario, run_dir) as deployed:
        assert deployed.isolation == "host"
        assert deployed.toxiproxy is not None
        assert deployed.toxiproxy.api_url.startswith("http://127.0.0.1:")
        edge = deployed.toxic_proxies[("frontend", "pricing-0")]
        assert edge.listen.host == "127.0.0.1"
        toxic = injector(
            deployed,
            toxic="latency",
            source="frontend",
            target={"service": "pricing"},
            latency="200ms",
        )
        toxic.inject()
        try:
            during = edge_ms(deployed, "pricing", range(10, 13))
        finally:
            reverted_clean(deployed, toxic)
        assert min(during) >= 200
    assert run_processes(run_dir.name) == []


# --------------------------------------------------------------------------- the scenario

Run = Callable[..., ScenarioOutcome]


def _edge(outcome: ScenarioOutcome, caller: str, callee: str) -> dict[str, dict[str, int]]:
    for entry in outcome.journal.edges:
        if (entry.caller, entry.callee) == (caller, callee):
            return entry.phases
    raise AssertionError(f"no edge {caller} → {callee} in the journal")


@pytest.mark.slow
def test_per_try_timeouts_keep_p95_under_a_latency_toxic(
    toxiproxy_server: str, harness_run: Run
) -> None:
    # Under mTLS (as under istiod) the handshake to catalog-0 crosses the toxic outside the
    # per-try timeout; outlier detection ejects catalog-0 after two per-try timeouts, so only
    # a burst of requests at the fault's start is slow (without the ejection p99 is about
    # 670 ms; the scenario says why its SLO is p95). A 100 ms per-try timeout is tight for
    # a CI machine running other tests beside it: the verdict may be INCONCLUSIVE there,
    # never FAIL, and the measured p95 stays under the objective.
    outcome = harness_run(SCENARIOS / "latency-toxic-timeouts.yaml")
    catalog = _edge(outcome, "frontend", "catalog")
    ejected_before = catalog["baseline"]["outlier_detection.ejections_enforced_total"]
    if ejected_before and not outcome.journal.faults[0].took_effect:
        # Seen in CI beside the kube live test: stalls of the machine timed out tries in the
        # baseline, catalog instances were ejected for 30 s before the toxic began, and its
        # edge then carried no request. The harness says the fault showed no effect and
        # FAILs the run (it proves nothing); that is the load, not the protection failing.
        pytest.xfail(
            f"{ejected_before} catalog ejection(s) in the baseline, before the toxic: "
            f"{outcome.summary}"
        )
    assert outcome.exit_code in (ExitCode.PASSED, ExitCode.INCONCLUSIVE), outcome.summary
    (p95,) = [s for s in outcome.journal.slos if (s.slo, s.phase) == ("p95-latency", "fault")]
    assert p95.verdict != "FAIL" and p95.measured is not None and p95.measured < 0.25, p95
    (fault,) = outcome.journal.faults
    assert fault.took_effect and fault.revert_verified
    assert fault.evidence["requests_via_proxy"] > 0
    timeouts = {phase: catalog[phase]["upstream_rq_per_try_timeout"] for phase in catalog}
    # The toxic's, not the machine's: a stall of a busy CI machine may time out a try in the
    # baseline; the toxic's per-try timeouts get catalog-0 ejected in the fault phase.
    assert timeouts["fault"] > timeouts["baseline"], timeouts
    assert catalog["fault"]["outlier_detection.ejections_detected_consecutive_gateway_failure"] > 0
    # The run's mesh certificates never reach its report directory (journal, logs, access
    # logs, bootstraps: the bootstraps name the files in the scratch directory).
    for path in outcome.result.run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"PRIVATE KEY-----" not in data and b"BEGIN CERTIFICATE" not in data, path


@pytest.mark.slow
def test_negative_control_without_per_try_timeout_fails(
    toxiproxy_server: str, harness_run: Run
) -> None:
    outcome = harness_run(SCENARIOS / "latency-toxic-timeouts-negative.yaml")
    assert outcome.exit_code == ExitCode.FAILED, outcome.summary
    assert outcome.journal.faults[0].took_effect
    failed = [(e.slo, e.phase) for e in outcome.journal.slos if e.verdict == "FAIL"]
    assert failed == [("p95-latency", "fault")]
    assert _edge(outcome, "frontend", "catalog")["fault"]["upstream_rq_per_try_timeout"] == 0
