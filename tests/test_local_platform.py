"""The local platform with the real Envoy and the real app: mesh semantics and fault switches."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from meshkit import access_entries, deployed, mtls_get

from harness.faults.http import HttpFaultInjector
from harness.platforms.local import LocalDeployment, LocalPlatform
from harness.platforms.local.processes import run_processes
from harness.scenario.models import HttpFault, Scenario

pytestmark = pytest.mark.integration

SCENARIO = {
    "metadata": {"name": "platform-test"},
    "app": {"replicas": {"catalog": 2, "inventory": 1}},
    "mesh": {
        "destinations": {
            # catalog: no retries block → Istio's default policy (no retry of a 503 since
            # Istio 1.24; 2 retries on connect failures, refused streams and resets).
            "pricing": {"timeout": "250ms", "retries": {"attempts": 0}},
            "inventory": {
                "retries": {"attempts": 0},
                # Limits high enough never to shed here; istiod also puts them on the
                # callee's inbound cluster.
                "connectionPool": {"tcp": {"maxConnections": 900}, "http": {"maxRetries": 7}},
            },
        }
    },
    "load": {"rate": 1},
    "phases": [{"name": "only", "duration": "1s"}],
    "slos": [{"kind": "errorRate", "name": "errors", "max": "1%"}],
}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    with deployed(
        SCENARIO, tmp_path_factory.mktemp("platform") / f"platform-test-run-{os.getpid()}"
    ) as deployment:
        yield deployment


def fault(**spec: object) -> HttpFault:
    return HttpFault.model_validate({"kind": "http", "phase": "only", **spec})


def injector_for(deployment: LocalDeployment, spec: HttpFault) -> HttpFaultInjector:
    instances = deployment.instances_of(spec.target.service)
    instances = instances[: spec.target.count(len(instances))]
    admins = {inst.name: deployment.admin(inst.name) for inst in instances}
    return HttpFaultInjector(spec, "test-fault", admins, spec.target.service)


def get(deployment: LocalDeployment, path: str = "/product/7") -> tuple[int, dict[str, object]]:
    status, body = deployment.sandbox.http_get(deployment.ingress_url + path, timeout=10)
    return status, json.loads(body) if body.startswith("{") else {"raw": body}


def counter(deployment: LocalDeployment, proxy: str, name: str) -> int:
    return deployment.admin(proxy).counters().get(name, 0)


def access_log(
    deployment: LocalDeployment, proxy: str, match: Callable[[dict[str, str]], bool]
) -> list[dict[str, str]]:
    return access_entries(deployment.run_dir, proxy, match)


def test_request_crosses_every_sidecar(deployment: LocalDeployment) -> None:
    status, body = get(deployment)
    assert status == 200
    assert body["deps"] == {"catalog": 200, "pricing": 200}
    assert deployment.isolation == "namespace"
    assert {i.ip for i in deployment.instances} == {
        "127.10.1.1",
        "127.10.2.1",
        "127.10.2.2",
        "127.10.3.1",
        "127.10.4.1",
    }


def test_request_id_links_hops_in_access_logs(deployment: LocalDeployment) -> None:
    status, _ = get(deployment, "/product/4242")
    assert status == 200
    ingress = access_log(deployment, "ingress", lambda e: e["path"] == "/product/4242")[-1]
    rid = ingress["rid"]
    # Each direction waited for on its own: Envoy flushes a log every 250 ms, and frontend's
    # inbound line (written when its whole request ends) may land a flush after the others.
    for direction in ("inbound", "outbound"):
        found = access_log(
            deployment, "frontend-0", lambda e, d=direction: e["rid"] == rid and e["dir"] == d
        )
        assert found, f"frontend-0 logged no {direction} line for {rid}"
    last = access_log(deployment, "inventory-0", lambda e: e["rid"] == rid)
    assert last, "the request id must reach the last hop"


def test_abort_takes_effect_on_next_request_and_reverts(deployment: LocalDeployment) -> None:
    spec = fault(target={"service": "inventory"}, abort={"httpStatus": 503})
    injector = injector_for(deployment, spec)
    injector.inject()
    try:
        runtime = deployment.admin("inventory-0").runtime()
        assert runtime["harness.fault.any.abort_percent"] == "100"
        status, body = get(deployment)
        # inventory aborts → catalog (no retries to inventory) answers 502 → frontend 502.
        assert status == 502, body
        assert injector.evidence()["aborts_injected"] >= 1
        assert injector.judge_effect(injector.evidence())[0]
    finally:
        assert injector.revert()
    assert not any(k.startswith("harness.fault") for k in deployment.admin("inventory-0").runtime())
    assert get(deployment)[0] == 200


def test_default_istio_retries_do_not_retry_503(deployment: LocalDeployment) -> None:
    # Istio >= 1.24's default policy lists no status code: a 503 from one catalog instance
    # reaches frontend (which answers 502) without a retry on another instance.
    retry = "cluster.outbound|8080||catalog.upstream_rq_retry"
    before = counter(deployment, "frontend-0", retry)
    injector = injector_for(
        deployment, fault(target={"service": "catalog", "instances": 1}, abort={"httpStatus": 503})
    )
    injector.inject()
    try:
        replies = [get(deployment, f"/product/5030{i}") for i in range(16)]
    finally:
        injector.revert()
    statuses = [status for status, _ in replies]
    assert 502 in statuses and 200 in statuses, statuses
    assert injector.evidence()["aborts_injected"] >= statuses.count(502)
    assert counter(deployment, "frontend-0", retry) == before
    aborted = access_entries(
        deployment.run_dir,
        "frontend-0",
        lambda e: (
            e["dir"] == "outbound"
            and e["authority"] == "catalog"
            and e["path"].startswith("/catalog/5030")
            and e["status"] == 503
        ),
        expected=statuses.count(502),
    )
    assert len(aborted) == statuses.count(502)
    assert {entry["attempts"] for entry in aborted} == {1}


def test_live_sidecars_carry_istiods_inbound_policy(deployment: LocalDeployment) -> None:
    # Read back from the running Envoys: the DestinationRule connection pool limits the
    # caller's outbound cluster and the callee's inbound cluster alike, and the callee's
    # inbound route retries reset-before-request twice (Istio >= 1.24).
    def thresholds(proxy: str, cluster: str) -> dict[str, str]:
        status, text = deployment.admin(proxy).request("GET", "/clusters")
        assert status == 200
        prefix = f"{cluster}::default_priority::"
        return {
            line[len(prefix) :].split("::")[0]: line.rsplit("::", 1)[1]
            for line in text.splitlines()
            if line.startswith(prefix)
        }

    for proxy, cluster in (
        ("inventory-0", "inbound|8080||"),
        ("catalog-0", "outbound|8080||inventory"),
    ):
        found = thresholds(proxy, cluster)
        assert (found["max_connections"], found["max_retries"]) == ("900", "7"), (proxy, found)
        assert found["max_pending_requests"] == str(2**32 - 1)
    status, text = deployment.admin("inventory-0").request(
        "GET", "/config_dump?resource=static_listeners"
    )
    assert status == 200
    dump = json.loads(text)
    inbound = next(
        item["listener"] for item in dump["configs"] if item["listener"]["name"] == "virtualInbound"
    )
    config = inbound["filter_chains"][0]["filters"][0]["typed_config"]
    (route,) = config["route_config"]["virtual_hosts"][0]["routes"]
    assert route["route"]["retry_policy"] == {"retry_on": "reset-before-request", "num_retries": 2}
    assert config["stream_idle_timeout"] == "0s"


def test_route_timeout_cuts_a_delayed_dependency(deployment: LocalDeployment) -> None:
    injector = injector_for(
        deployment, fault(target={"service": "pricing"}, delay={"fixedDelay": "600ms"})
    )
    injector.inject()
    try:
        status, body = get(deployment)
    finally:
        injector.revert()
    assert status == 502
    assert "pricing" in json.dumps(body)
    timed_out = access_log(
        deployment,
        "frontend-0",
        lambda e: e["dir"] == "outbound" and e["authority"] == "pricing" and e["flags"] == "UT",
    )
    assert timed_out, "frontend's sidecar must answer 504 with response flag UT"
    assert injector.evidence()["delays_injected"] >= 1


def test_source_scoped_fault_hits_only_that_caller(deployment: LocalDeployment) -> None:
    # A fault on frontend for calls from the ingress; a direct call (no source header, over
    # mTLS with a mesh certificate as every caller needs) is untouched.
    injector = injector_for(
        deployment,
        fault(target={"service": "frontend"}, source="ingress", abort={"httpStatus": 500}),
    )
    frontend = deployment.instances_of("frontend")[0]
    injector.inject()
    try:
        via_ingress = get(deployment)[0]
        direct_status = mtls_get(deployment, frontend.name, "/product/1", as_proxy="ingress")
    finally:
        injector.revert()
    assert via_ingress == 500
    assert direct_status == "200"


def inbound_handshakes(deployment: LocalDeployment, proxy: str) -> int:
    """TLS handshakes on ``proxy``'s listeners (``listener.<address>.ssl.handshake``)."""
    counters = deployment.admin(proxy).counters()
    return sum(
        value
        for name, value in counters.items()
        if name.startswith("listener.") and name.endswith(".ssl.handshake")
    )


def test_sidecars_talk_mutual_tls_and_refuse_plaintext(deployment: LocalDeployment) -> None:
    # Auto-mTLS as istiod programs it: every proxy → sidecar hop is a TLS handshake, counted
    # on both ends of each edge (Envoy's TLS stats).
    assert get(deployment)[0] == 200
    gateway = counter(deployment, "ingress", "cluster.outbound|8080||frontend.ssl.handshake")
    caller = counter(deployment, "frontend-0", "cluster.outbound|8080||catalog.ssl.handshake")
    callee = sum(inbound_handshakes(deployment, i.name) for i in deployment.instances_of("catalog"))
    assert gateway > 0 and inbound_handshakes(deployment, "frontend-0") > 0
    assert caller > 0 and callee > 0
    frontend = deployment.instances_of("frontend")[0]
    # A plain-text request straight to a sidecar's inbound port gets no HTTP answer ...
    plain = f"http://{frontend.ip}:{frontend.inbound_port}/product/1"
    assert deployment.sandbox.http_get(plain, timeout=10)[0] == 0
    # ... nor TLS without a client certificate; with a mesh certificate the same call works.
    assert mtls_get(deployment, frontend.name, "/product/1", as_proxy=None).startswith("error")
    assert mtls_get(deployment, frontend.name, "/product/1", as_proxy="ingress") == "200"
    # The keys are private, in the scratch directory; the run directory (the report) has none.
    key = deployment.scratch_dir / "mtls" / "frontend-0.key"
    assert key.stat().st_mode & 0o777 == 0o600
    for path in deployment.run_dir.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            assert b"PRIVATE KEY-----" not in text and b"BEGIN CERTIFICATE" not in text, path


def test_host_fallback_when_user_namespaces_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for util-linux's unshare on a system that forbids user namespaces: it fails
    # the way the real one does there. Everything else (Envoy, app, supervisor) is real.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    unshare = fake_bin / "unshare"
    unshare.write_text(
        "#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n"
    )
    unshare.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    scenario = Scenario.model_validate({**SCENARIO, "app": {"replicas": {"catalog": 1}}})
    run_dir = tmp_path / "host-run"
    with LocalPlatform().deploy(scenario, run_dir) as deployed:
        assert deployed.isolation == "host"
        assert "Operation not permitted" in deployed.sandbox.note
        assert {inst.ip for inst in deployed.instances} == {"127.0.0.1"}
        assert get(deployed)[0] == 200
        assert run_processes(run_dir.name)
    assert run_processes(run_dir.name) == []


def test_ramp_steps_change_the_share_of_requests_hit(deployment: LocalDeployment) -> None:
    spec = fault(
        target={"service": "pricing"},
        abort={"httpStatus": 503},
        steps=[{"at": "0s", "percentage": 10}, {"at": "1s", "percentage": 60}],
    )
    injector = injector_for(deployment, spec)
    runtime_key = "harness.fault.any.abort_percent"
    injector.inject()
    try:
        assert deployment.admin("pricing-0").runtime()[runtime_key] == "10"
        injector.adjust(60)
        assert deployment.admin("pricing-0").runtime()[runtime_key] == "60"
        statuses = [get(deployment, f"/product/{i}")[0] for i in range(60)]
    finally:
        assert injector.revert()
    # 60% of pricing calls abort (no retries on pricing): about 36 of 60; far from 10%.
    assert 20 <= statuses.count(502) <= 50, statuses.count(502)
    assert [step["percentage"] for step in injector.record.detail["steps"]] == [60]


def test_app_instances_are_forks_of_the_supervisor_that_cleanup_finds(
    deployment: LocalDeployment,
) -> None:
    """The apps start as forks of the supervisor (their module imported there once), not as
    fresh interpreters: each still serves on its own and carries the run id in the
    environment ``harness cleanup`` reads; the Envoys are exec'd as before."""
    sandbox = deployment.sandbox
    marker = f"HARNESS_RUN_ID={sandbox.run_id}"
    for name, pid in deployment.app_pids.items():
        _, cmdline, _ = sandbox.run(["cat", f"/proc/{pid}/cmdline"])  # the sandbox's PIDs
        _, environ, _ = sandbox.run(["cat", f"/proc/{pid}/environ"])
        assert "harness.platforms.local.supervisor" in cmdline, (name, cmdline)
        assert marker in environ.split("\0"), name
        inst = deployment.instance(name)
        status, _ = sandbox.http_get(f"http://{inst.ip}:{inst.app_port}/healthz")
        assert status == 200, name
    _, cmdline, _ = sandbox.run(["cat", f"/proc/{deployment.proxies['ingress'].pid}/cmdline"])
    assert "envoy" in cmdline
    seen_from_host = [
        process
        for process in run_processes(sandbox.run_id)
        if process.argv[1:3] == ("-m", "harness.platforms.local.supervisor")
    ]
    assert len(seen_from_host) == len(deployment.app_pids) + 1  # and the supervisor
