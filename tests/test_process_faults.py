"""Kill and pause: real signals to the real app and Envoy processes in the run's namespace."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest
from meshkit import access_entries, deployed

from harness.faults import build_injector
from harness.faults.process import ProcessFaultInjector
from harness.platforms.local import LocalDeployment
from harness.platforms.local.platform import ProcessKind
from harness.scenario.models import KillFault, PauseFault

pytestmark = pytest.mark.integration

INVENTORY_TIMEOUT_MS = 400
SCENARIO = {
    "metadata": {"name": "process-test"},
    "app": {"replicas": {"catalog": 2, "inventory": 2}},
    "mesh": {
        "destinations": {
            # frontend → catalog fails over to the other instance; round robin, so that
            # a handful of requests surely reaches the instance under test.
            "catalog": {
                "timeout": "3s",
                "loadBalancer": {"simple": "ROUND_ROBIN"},
                "retries": {
                    "attempts": 2,
                    "perTryTimeout": "1s",
                    "retryOn": "5xx,connect-failure,reset",
                },
            },
            # catalog → inventory: no retries, a short timeout, round robin.
            "inventory": {
                "timeout": f"{INVENTORY_TIMEOUT_MS}ms",
                "retries": {"attempts": 0},
                "loadBalancer": {"simple": "ROUND_ROBIN"},
            },
        }
    },
    "load": {"rate": 1},
    "phases": [{"name": "only", "duration": "1s"}],
    "slos": [{"kind": "errorRate", "name": "errors", "max": "1%"}],
}
RETRIES = "cluster.outbound|8080||catalog.upstream_rq_retry"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    with deployed(
        SCENARIO, tmp_path_factory.mktemp("processes") / f"process-test-run-{os.getpid()}"
    ) as deployment:
        yield deployment


@pytest.fixture(autouse=True)
def _healthy(deployment: LocalDeployment) -> Iterator[None]:
    """Every test starts and ends with every process running and the app answering."""
    yield
    assert not deployment.disrupted
    for name in (*deployment.app_pids, *deployment.proxies):
        kind: ProcessKind = "sidecar" if name in deployment.proxies else "app"
        state = deployment.process_state(deployment.process_pid(name, kind))
        assert state in ("R", "S"), (name, kind, state)
    assert [get(deployment, i) for i in range(4)] == [200] * 4


def injector(deployment: LocalDeployment, kind: str, **spec: object) -> ProcessFaultInjector:
    model = KillFault if kind == "kill" else PauseFault
    fault = model.model_validate(
        {"kind": kind, "phase": "only", "target": {"service": "catalog", "instances": 1}, **spec}
    )
    built = build_injector(fault, f"{kind}-test", deployment)
    assert isinstance(built, ProcessFaultInjector)
    return built


def get(deployment: LocalDeployment, item: int) -> int:
    return deployment.sandbox.http_get(f"{deployment.ingress_url}/product/{item}", timeout=10)[0]


def counter(deployment: LocalDeployment, proxy: str, name: str) -> int:
    return deployment.admin(proxy).counters().get(name, 0)


def access_log(
    deployment: LocalDeployment, proxy: str, match: Callable[[dict[str, str]], bool]
) -> list[dict[str, str]]:
    return access_entries(deployment.run_dir, proxy, match, within=5)


def test_kill_with_restart_after_brings_a_new_process_back(deployment: LocalDeployment) -> None:
    kill = injector(deployment, "kill", restartAfter="1s")
    old_pid = deployment.process_pid("catalog-0", "app")
    kill.inject()
    try:
        assert deployment.process_state(old_pid) is None
        deadline = time.monotonic() + 30
        while not kill.record.detail["restarts"] and time.monotonic() < deadline:
            time.sleep(0.1)
        restart = kill.record.detail["restarts"].get("catalog-0")
        assert restart is not None, "not restarted within 30 s"
        assert restart["by"] == "restartAfter"
        assert restart["at"] - kill.record.detail["killed_at"]["catalog-0"] >= 1.0
        new_pid = deployment.process_pid("catalog-0", "app")
        assert new_pid == restart["pid"] != old_pid
        # Healthy: it answers directly, without the mesh.
        inst = deployment.instance("catalog-0")
        url = f"http://{inst.ip}:{inst.app_port}/healthz"
        assert deployment.sandbox.http_get(url)[0] == 200
        evidence = kill.evidence()
    finally:
        assert kill.revert()
    assert evidence["killed"] == 1
    assert evidence["restarted"] == 1
    assert deployment.process_pid("catalog-0", "app") == new_pid  # the revert had nothing to do


def test_a_restarted_sidecar_continues_its_counters(deployment: LocalDeployment) -> None:
    total = "cluster.outbound|8080||inventory.upstream_rq_total"
    assert [get(deployment, i) for i in range(6)] == [200] * 6
    before = deployment.mesh_counters()["catalog-0"][total]
    kill = injector(deployment, "kill", process="sidecar")
    kill.inject()
    try:
        during = deployment.mesh_counters()["catalog-0"][total]  # last reading, no error
    finally:
        assert kill.revert()
    after = deployment.mesh_counters()["catalog-0"][total]
    assert before <= during <= after
    assert counter(deployment, "catalog-0", total) < after  # the new Envoy started from zero


@pytest.mark.parametrize("process", ["app", "sidecar"])
def test_pause_hangs_requests_until_the_callers_timeout(
    deployment: LocalDeployment, process: ProcessKind
) -> None:
    pause = injector(
        deployment, "pause", process=process, target={"service": "inventory", "instances": 1}
    )
    pid = deployment.process_pid("inventory-0", process)
    since = time.time()
    pause.inject()
    try:
        assert deployment.process_state(pid) == "T"
        assert pause.record.detail["state_after_inject"] == {"inventory-0": "T"}
        statuses = [get(deployment, i) for i in range(6)]
        started = time.monotonic()
        deployment.mesh_counters()  # a paused sidecar's admin cannot answer: no hang, no error
        scrape_s = time.monotonic() - started
        evidence = pause.evidence()
        took_effect, message = pause.judge_effect(evidence)
    finally:
        assert pause.revert()
    assert deployment.process_state(pid) in ("R", "S")
    assert deployment.process_pid("inventory-0", process) == pid
    # catalog answers 502 when inventory times out; frontend's retries may mask it.
    assert set(statuses) <= {200, 502}, statuses
    assert scrape_s < 2.0
    assert evidence["stopped"] == 1
    assert evidence["callers_upstream_rq_timeout"] >= 1
    assert took_effect, message
    # catalog's sidecar gave up on inventory-0 at its route timeout (504, flag UT).
    hung = [
        entry
        for name in ("catalog-0", "catalog-1")
        for entry in access_log(
            deployment,
            name,
            lambda e: (
                e["dir"] == "outbound"
                and e["authority"] == "inventory"
                and float(e["start"]) >= since
                and e["flags"] == "UT"
            ),
        )
    ]
    assert hung
    for entry in hung:
        assert entry["upstream"] == "127.10.3.1:15006", entry
        assert str(entry["status"]) == "504", entry
        assert int(entry["ms"]) >= INVENTORY_TIMEOUT_MS - 10, entry


def test_revert_of_a_pause_is_idempotent(deployment: LocalDeployment) -> None:
    pause = injector(deployment, "pause")
    pause.inject()
    pause.inject()  # a second inject does not signal again
    assert pause.revert()
    assert pause.revert()
