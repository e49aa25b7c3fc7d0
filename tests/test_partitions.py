"""Partitions: real nftables rules in the run's network namespace, real Envoy callers.

Every request opens a new connection to catalog (``maxRequestsPerConnection: 1``) and catalog
is balanced round robin, so each request shows what a cut does to a connection attempt.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from meshkit import access_entries, deployed

from harness.errors import FaultError, ToolMissingError
from harness.faults import build_injector
from harness.faults.partition import PartitionInjector
from harness.platforms.local import LocalDeployment, LocalPlatform
from harness.platforms.local.sandbox import Isolation
from harness.platforms.local.toxiproxy import find_toxiproxy
from harness.scenario.models import PartitionFault, Scenario

pytestmark = pytest.mark.integration

CONNECT_TIMEOUT_MS = 250
SCENARIO = {
    "metadata": {"name": "partition-test"},
    "app": {"replicas": {"catalog": 2, "inventory": 1}},
    "mesh": {
        "destinations": {
            "catalog": {
                "timeout": "2s",
                "retries": {"attempts": 0},
                "loadBalancer": {"simple": "ROUND_ROBIN"},
                "connectionPool": {
                    "tcp": {"connectTimeout": f"{CONNECT_TIMEOUT_MS}ms"},
                    "http": {"maxRequestsPerConnection": 1},
                },
            }
        }
    },
    "load": {"rate": 1},
    "phases": [{"name": "only", "duration": "1s"}],
    "slos": [{"kind": "errorRate", "name": "errors", "max": "1%"}],
}
CATALOG = "cluster.outbound|8080||catalog."


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    with deployed(
        SCENARIO, tmp_path_factory.mktemp("partitions") / f"partition-test-run-{os.getpid()}"
    ) as deployment:
        yield deployment


@pytest.fixture(autouse=True)
def _clean_ruleset(deployment: LocalDeployment) -> Iterator[None]:
    """Every test starts and must end with an empty ruleset in the namespace."""
    assert ruleset(deployment) == ""
    yield
    assert ruleset(deployment) == "", "a partition was left behind"


def ruleset(deployment: LocalDeployment) -> str:
    code, out, err = deployment.sandbox.run(["nft", "list", "ruleset"])
    assert code == 0, err
    return out.strip()


def partition(deployment: LocalDeployment, name: str = "cut", **spec: object) -> PartitionInjector:
    fault = PartitionFault.model_validate(
        {
            "kind": "partition",
            "phase": "only",
            "from": {"service": "frontend"},
            "to": {"service": "catalog", "instances": 1},
            **spec,
        }
    )
    injector = build_injector(fault, name, deployment)
    assert isinstance(injector, PartitionInjector)
    return injector


def get(deployment: LocalDeployment, item: int) -> int:
    return deployment.sandbox.http_get(f"{deployment.ingress_url}/product/{item}", timeout=10)[0]


def counter(deployment: LocalDeployment, proxy: str, name: str) -> int:
    return deployment.admin(proxy).counters().get(name, 0)


def access_log(
    deployment: LocalDeployment,
    proxy: str,
    match: Callable[[dict[str, str]], bool],
    expected: int = 1,
) -> list[dict[str, str]]:
    return access_entries(deployment.run_dir, proxy, match, expected=expected, within=5)


def to_catalog(
    since: float, match: Callable[[dict[str, str]], bool]
) -> Callable[[dict[str, str]], bool]:
    """frontend-0's outbound calls to catalog since ``since`` (epoch s) that ``match``."""
    return lambda e: (
        e["dir"] == "outbound"
        and e["authority"] == "catalog"
        and float(e["start"]) >= since
        and match(e)
    )


def failed(entry: dict[str, str]) -> bool:
    return str(entry["status"]) != "200"


UDP_PROBE = """
import socket, sys
src, dst = sys.argv[1], sys.argv[2]
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rx.bind((dst, 0))
rx.settimeout(0.5)
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
tx.bind((src, 0))
tx.sendto(b"probe", rx.getsockname())
try:
    rx.recv(16)
    print("delivered")
except TimeoutError:
    print("lost")
"""


def udp_delivered(deployment: LocalDeployment, src: str, dst: str) -> bool:
    """Whether one datagram from ``src`` reaches ``dst`` inside the namespace."""
    code, out, err = deployment.sandbox.run([sys.executable, "-c", UDP_PROBE, src, dst])
    assert code == 0, err
    return out.strip() == "delivered"


def ip_of(deployment: LocalDeployment, name: str) -> str:
    return next(inst.ip for inst in deployment.instances if inst.name == name)


def test_mesh_traffic_carries_instance_addresses(deployment: LocalDeployment) -> None:
    # The premise of every rule: frontend-0 → catalog-1 is frontend-0's IP → catalog-1's IP.
    since = time.time()
    assert [get(deployment, i) for i in range(4)] == [200] * 4
    calls = access_log(
        deployment, "frontend-0", to_catalog(since, lambda e: e["upstream"] == "127.10.2.2:15006")
    )
    assert calls
    served = access_log(
        deployment, "catalog-1", lambda e: e["dir"] == "inbound" and float(e["start"]) >= since
    )
    assert served
    assert {e["downstream"].split(":")[0] for e in served} == {ip_of(deployment, "frontend-0")}


def test_drop_partition_makes_callers_time_out_connecting(deployment: LocalDeployment) -> None:
    injector = partition(deployment, mode="drop")
    assert injector.record.detail["to"] == {"catalog-0": "127.10.2.1"}
    timeouts_before = counter(deployment, "frontend-0", CATALOG + "upstream_cx_connect_timeout")
    since = time.time()
    injector.inject()
    try:
        rules = ruleset(deployment)
        assert "hook input" in rules
        assert "ip saddr 127.10.1.1 ip daddr 127.10.2.1 counter packets" in rules
        assert "ip saddr 127.10.2.1 ip daddr 127.10.1.1 counter packets" in rules
        statuses = [get(deployment, i) for i in range(6)]
        evidence = injector.evidence()
        took_effect, message = injector.judge_effect(evidence)
    finally:
        assert injector.revert()
    # Round robin over two instances, no retries: every other request hits the cut instance.
    assert statuses.count(502) == 3, statuses
    assert statuses.count(200) == 3, statuses
    failures = access_log(deployment, "frontend-0", to_catalog(since, failed), expected=3)
    assert len(failures) == 3
    for entry in failures:
        # A connect timeout from the caller's sidecar, not a 503 from a route or the callee.
        assert entry["flags"] == "UF", entry
        assert "connection_timeout" in entry["details"], entry
        assert entry["upstream"] == "127.10.2.1:15006", entry
        assert int(entry["ms"]) >= CONNECT_TIMEOUT_MS - 10, entry
    timeouts = counter(deployment, "frontend-0", CATALOG + "upstream_cx_connect_timeout")
    assert timeouts - timeouts_before == 3
    assert evidence["packets_forward"] >= 3  # at least one SYN per failed connect
    assert evidence["callers_upstream_cx_connect_timeout"] == 3
    assert took_effect, message
    assert "packets dropped frontend-0 → catalog-0" in message
    assert [get(deployment, i) for i in range(4)] == [200] * 4


def test_reject_partition_refuses_connections_at_once(deployment: LocalDeployment) -> None:
    injector = partition(deployment, mode="reject")
    timeouts_before = counter(deployment, "frontend-0", CATALOG + "upstream_cx_connect_timeout")
    since = time.time()
    injector.inject()
    try:
        assert "reject with tcp reset" in ruleset(deployment)
        statuses = [get(deployment, i) for i in range(6)]
        evidence = injector.evidence()
    finally:
        assert injector.revert()
    assert sorted(statuses) == [200, 200, 200, 502, 502, 502], statuses
    failures = access_log(deployment, "frontend-0", to_catalog(since, failed), expected=3)
    assert len(failures) == 3
    for entry in failures:
        assert entry["flags"] == "UF", entry
        assert "Connection_refused" in entry["details"], entry
    # Refused, not timed out: the connect-timeout counter did not move.
    assert counter(deployment, "frontend-0", CATALOG + "upstream_cx_connect_timeout") == (
        timeouts_before
    )
    assert evidence["callers_upstream_cx_connect_fail"] == 3
    assert evidence["callers_upstream_cx_connect_timeout"] == 0
    assert evidence["packets_forward"] == 3  # one SYN each, answered by a reset
    assert injector.judge_effect(evidence)[0]


@pytest.mark.parametrize(("direction", "reverse_delivered"), [("oneway", True), ("both", False)])
def test_oneway_cuts_only_from_to_packets(
    deployment: LocalDeployment, direction: str, reverse_delivered: bool
) -> None:
    frontend, catalog0, catalog1 = (
        ip_of(deployment, name) for name in ("frontend-0", "catalog-0", "catalog-1")
    )
    injector = partition(deployment, direction=direction)
    injector.inject()
    try:
        forward = udp_delivered(deployment, frontend, catalog0)
        reverse = udp_delivered(deployment, catalog0, frontend)
        untouched = udp_delivered(deployment, frontend, catalog1)
        evidence = injector.evidence()
        comments = [comment for comment, _ in injector.installed("run")]
    finally:
        assert injector.revert()
    assert not forward
    assert reverse is reverse_delivered
    assert untouched
    if direction == "oneway":
        assert comments == ["forward"]
        assert "packets_reverse" not in evidence
    else:
        assert comments == ["forward", "reverse"]
        assert evidence["packets_reverse"] >= 1


def test_partitions_share_one_table_removed_with_the_last(deployment: LocalDeployment) -> None:
    first = partition(deployment, "first")
    second = partition(deployment, "second", to={"service": "pricing"})
    first.inject()
    second.inject()
    try:
        rules = ruleset(deployment)
        assert rules.count("table inet harness") == 1
        assert first.chain in rules and second.chain in rules
        assert first.revert()
        rules = ruleset(deployment)
        assert first.chain not in rules
        assert second.chain in rules
        first.inject()  # injecting again after a revert works, and inject is idempotent
        first.inject()
        assert [c for c, _ in first.installed("run")] == ["forward", "reverse"]
    finally:
        assert first.revert()
        assert second.revert()
    assert first.revert()  # reverting what is gone is a verified no-op


def test_a_cut_without_traffic_shows_no_effect(deployment: LocalDeployment) -> None:
    # catalog never talks to pricing: the rules exist, but no packet ever matches them.
    injector = partition(
        deployment, **{"from": {"service": "catalog"}, "to": {"service": "pricing"}}
    )
    injector.inject()
    try:
        assert [get(deployment, i) for i in range(3)] == [200] * 3
        evidence = injector.evidence()
    finally:
        assert injector.revert()
    took_effect, message = injector.judge_effect(evidence)
    assert not took_effect
    assert "no packet crossed the cut" in message


def test_an_instance_cannot_be_cut_from_itself(deployment: LocalDeployment) -> None:
    with pytest.raises(FaultError, match="catalog-0"):
        partition(deployment, **{"from": {"service": "catalog"}})


def test_host_mode_emulates_a_partition_with_toxiproxy_and_says_so(tmp_path: Path) -> None:
    cut = {
        "kind": "partition",
        "name": "cut",
        "phase": "only",
        "from": {"service": "frontend"},
        "to": {"service": "catalog", "instances": 1},
        "mode": "reject",
    }
    scenario = Scenario.model_validate(
        {**SCENARIO, "app": {"replicas": {"catalog": 2, "inventory": 1}}, "faults": [cut]}
    )
    with LocalPlatform(Isolation.HOST).deploy(scenario, tmp_path / "host-run") as deployed:
        injector = build_injector(scenario.faults[0], "cut", deployed)
        assert injector.record.kind == "partition"
        assert "toxiproxy" in injector.record.detail["emulation"]
        injector.inject()
        try:
            statuses = [get(deployed, i) for i in range(8)]
            evidence = injector.evidence()
        finally:
            assert injector.revert()
        # Round robin over two catalog instances: the calls to catalog-0 are reset.
        assert 502 in statuses and 200 in statuses, statuses
        took_effect, message = injector.judge_effect(evidence)
        assert took_effect, message
        assert [get(deployed, i) for i in range(4)] == [200] * 4


# catalog-0 behind a toxic proxy for frontend's calls: the toxic is planned, never injected.
TOXIC_EDGE = {
    **SCENARIO,
    "metadata": {"name": "partition-toxic-edge"},
    "faults": [
        {
            "kind": "toxic",
            "name": "catalog-0-slow",
            "phase": "only",
            "toxic": "latency",
            "source": "frontend",
            "target": {"service": "catalog", "instances": 1},
            "latency": "10ms",
        }
    ],
}


def test_a_partition_cuts_an_edge_that_goes_through_a_toxic_proxy(tmp_path: Path) -> None:
    try:
        find_toxiproxy()
    except ToolMissingError as exc:
        pytest.fail(str(exc))
    with deployed(TOXIC_EDGE, tmp_path / "partition-toxic-edge-run") as deployment:
        proxy = deployment.toxic_proxies[("frontend", "catalog-0")]
        listen = f"{proxy.listen.host}:{proxy.listen.port}"
        injector = partition(deployment, "cut-toxic-edge", mode="reject")
        assert injector.record.detail["toxic_proxies"] == {proxy.name: listen}
        injector.inject()
        try:
            assert f"ip daddr {proxy.listen.host} tcp dport {proxy.listen.port}" in ruleset(
                deployment
            )
            statuses = [get(deployment, i) for i in range(6)]
            evidence = injector.evidence()
            took_effect, message = injector.judge_effect(evidence)
        finally:
            assert injector.revert()
        assert ruleset(deployment) == ""
        # Round robin: catalog-0 (through the proxy) refuses, catalog-1 (direct) answers.
        assert sorted(statuses) == [200, 200, 200, 502, 502, 502], statuses
        assert evidence["packets_forward"] >= 3, evidence
        assert took_effect, message
        assert [get(deployment, i) for i in range(4)] == [200] * 4
