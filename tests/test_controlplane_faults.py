"""Control-plane faults (``kind: controlPlane``) and the ``configPropagation`` SLO.

Fast tests of our own logic use FAKE control planes (in memory, said so in their names);
the two ``controlplane`` tests run the shipped scenario and its negative control against a
real etcd + kube-apiserver + istiod with real pilot-agent + Envoy sidecars.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fakes import Call, FakeDeployment, recording_factory
from journals import new_journal

from harness.errors import PlatformError, ScenarioError
from harness.faults.config_change import HEADER, ConfigChanges
from harness.faults.controlplane import ControlPlaneFaultInjector
from harness.journal import ConfigChangeRecord, FaultEntry, Journal, PhaseWindow, Verdict
from harness.platforms.base import ControlPlaneComponent
from harness.platforms.local.istio.outage import route_with_header
from harness.platforms.local.platform import Mesh
from harness.platforms.local.processes import namespace_members, run_processes
from harness.pytest_plugin import ScenarioOutcome
from harness.report import render_report
from harness.runner import Run, RunOptions, run_scenario
from harness.scenario import load_scenario_text
from harness.scenario.models import ConfigPropagationSlo, ControlPlaneFault
from harness.slo.propagation import evaluate_propagation, propagation_start

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"

OUTAGE = """
apiVersion: harness/v1
metadata: {name: cp-unit}
load: {rate: 20}
phases:
  - {name: baseline, duration: 2s}
  - {name: outage, duration: 10s}
faults:
  - {name: down, kind: controlPlane, component: istiod, action: kill, phase: outage,
     duration: 4s}
slos:
  - {name: errors, kind: errorRate, max: 1%}
  - {name: change, kind: configPropagation, change: {service: catalog, phase: outage, at: 1s},
     max: 5s}
"""


def scenario(text: str = OUTAGE) -> Any:
    return load_scenario_text(text, "cp.yaml")


# --------------------------------------------------------------------------- the model


def test_a_partition_of_the_api_server_is_refused_saying_why() -> None:
    bad = OUTAGE.replace("action: kill", "action: partition").replace(
        "component: istiod", "component: apiserver"
    )
    with pytest.raises(ScenarioError) as caught:
        scenario(bad)
    assert "cp.yaml:" in str(caught.value)
    assert "sidecars never talk to the API server" in str(caught.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("{service: catalog, phase: later, at: 1s}", "unknown phase 'later'"),
        ("{service: catalog, phase: outage, at: 10s}", "after its phase 'outage' ends"),
        ("{service: frontend, phase: outage, at: 1s}", "'frontend' has no calling service"),
        ("{service: shipping, phase: outage, at: 1s}", "unknown service 'shipping'"),
    ],
)
def test_a_config_change_must_be_one_the_run_can_make(change: str, message: str) -> None:
    bad = OUTAGE.replace("{service: catalog, phase: outage, at: 1s}", change)
    with pytest.raises(ScenarioError) as caught:
        scenario(bad)
    assert message in str(caught.value), caught.value
    assert "slos[1].change" in str(caught.value) or "slos.1.change" in str(caught.value)


def test_a_config_change_is_judged_once_and_alone_on_its_service() -> None:
    twice = OUTAGE.replace(
        "     max: 5s}",
        "     max: 5s, phases: [outage]}\n"
        "  - {name: again, kind: configPropagation, change: {service: catalog, phase: outage},"
        " max: 5s}",
    )
    with pytest.raises(ScenarioError) as caught:
        scenario(twice)
    assert "judged once, in its change's phase; remove phases" in str(caught.value)
    assert "another configPropagation SLO already changes 'catalog'" in str(caught.value)


def test_mesh_envoy_refuses_a_control_plane_scenario_before_making_anything(
    tmp_path: Path,
) -> None:
    reports = tmp_path / "reports"
    with pytest.raises(PlatformError) as caught:
        run_scenario(scenario(), options=RunOptions(reports_dir=reports, mesh=Mesh.ENVOY))
    message = str(caught.value)
    assert "faults.0.kind: fault down (controlPlane)" in message
    assert "slos.1.kind: SLO change (configPropagation)" in message
    assert "--mesh istio" in message
    assert not reports.exists()


# --------------------------------------------------------------------------- judging


def _journal(change: ConfigChangeRecord, faults: list[FaultEntry], end: float = 112.0) -> Any:
    journal = new_journal(scenario_name="cp-unit", platform="fake")
    journal.phases = [PhaseWindow(name="baseline", start=100.0, end=102.0)]
    journal.phases.append(PhaseWindow(name="outage", start=102.0, end=end))
    journal.faults = faults
    journal.config_changes = [change]
    return journal


def _kill(injected: float, revert_started: float | None) -> FaultEntry:
    entry = FaultEntry(name="down", kind="controlPlane", phase="outage", targets=["istiod"])
    entry.injected_at = injected
    if revert_started is not None:
        entry.detail["revert_started_at"] = revert_started
        entry.reverted_at = revert_started + 1.0
    return entry


def _change(synced: float | None, written: float | None = 103.1) -> ConfigChangeRecord:
    return ConfigChangeRecord(
        slo="change",
        service="catalog",
        phase="outage",
        header=HEADER,
        value="change",
        proxies=["frontend-0"],
        due_at=103.0,
        written_at=written,
        synced_at=synced,
        pending=[] if synced else ["frontend-0"],
    )


def _slo() -> ConfigPropagationSlo:
    found = scenario().slos[1]
    assert isinstance(found, ConfigPropagationSlo)
    return found


def test_the_clock_starts_when_the_outage_acting_at_the_change_ends() -> None:
    faults = [_kill(102.0, 106.0), _kill(105.5, 108.0), _kill(109.0, 110.0)]
    assert propagation_start(103.0, faults) == 108.0  # the second outage follows the first
    assert propagation_start(101.0, faults) == 101.0  # no outage then
    assert propagation_start(103.0, [_kill(102.0, None)]) == float("inf")  # never reverted


@pytest.mark.parametrize(
    ("synced", "verdict", "measured"),
    [(110.0, Verdict.PASS, 4.0), (111.5, Verdict.FAIL, 5.5)],
)
def test_propagation_is_judged_from_the_outage_end(
    synced: float, verdict: Verdict, measured: float
) -> None:
    result = evaluate_propagation(_slo(), "outage", _journal(_change(synced), [_kill(102, 106)]))
    assert result.verdict == verdict, result.message
    assert result.measured == pytest.approx(measured)
    assert result.unit == "s" and result.objective == 5.0
    assert "after it could propagate" in result.message


def test_a_change_not_synced_by_the_end_of_the_run_fails() -> None:
    # Down to the run's end (reverted after it): the change arrived only after the run.
    journal = _journal(_change(synced=113.0), [_kill(102.0, 112.0)])
    result = evaluate_propagation(_slo(), "outage", journal)
    assert result.verdict == Verdict.FAIL
    assert "not SYNCED on frontend-0 by the end of the run" in result.message
    assert "control plane was down from the change to the end of the run" in result.message
    # Up again with time left, but it never came: fails with the time waited.
    journal = _journal(_change(synced=None), [_kill(102.0, 104.0)])
    result = evaluate_propagation(_slo(), "outage", journal)
    assert result.verdict == Verdict.FAIL and result.measured == pytest.approx(8.0)


def test_a_change_never_written_fails_saying_why() -> None:
    change = _change(synced=None, written=None)
    change.write_errors, change.error = 12, "cannot reach the API server"
    result = evaluate_propagation(_slo(), "outage", _journal(change, []))
    assert result.verdict == Verdict.FAIL
    assert "never written (12 attempts; last: cannot reach the API server)" in result.message


# --------------------------------------------------------------------------- FAKE control plane


@dataclass
class FakeControlPlane:
    """A FAKE control plane in memory: process states, proxies' xDS states, a route store."""

    killable: bool = True
    states: dict[str, str | None] = field(default_factory=lambda: {"istiod": "S"})
    calls: list[str] = field(default_factory=list)
    write_failures: int = 0
    written: dict[str, str] = field(default_factory=dict)
    arrive_after_polls: int = 2
    xds_port: int = 15012

    def pid(self, component: ControlPlaneComponent) -> int:
        return 42

    def state(self, component: ControlPlaneComponent) -> str | None:
        return self.states.get(component, "S")

    def kill(self, component: ControlPlaneComponent) -> int:
        self.calls.append(f"kill {component}")
        if self.killable:
            self.states[component] = None
        return 42

    def restart(self, component: ControlPlaneComponent) -> int:
        self.calls.append(f"restart {component}")
        self.states[component] = "S"
        return 43

    def pause(self, component: ControlPlaneComponent) -> int:
        self.states[component] = "T"
        return 42

    def resume(self, component: ControlPlaneComponent) -> int:
        self.states[component] = "S"
        return 42

    def proxies(self) -> tuple[str, ...]:
        return ("frontend-0", "ingress")

    def connected(self) -> dict[str, int]:
        down = self.states.get("istiod") is None
        return {"frontend-0": 0 if down else 1, "ingress": 0 if down else 1}

    def not_synced(self) -> list[str] | None:
        return None if self.states.get("istiod") in (None, "T") else []

    def wait_synced(self, timeout_s: float) -> float:
        self.calls.append("wait_synced")
        return 0.5

    def certificate_seconds_left(self) -> dict[str, int]:
        return {"frontend-0": 86000, "ingress": 85000}

    def affected_by(self, service: str) -> tuple[str, ...]:
        return ("frontend-0",)

    def write_route_header(self, service: str, header: str, value: str) -> dict[str, Any]:
        if self.write_failures:
            self.write_failures -= 1
            raise PlatformError("cannot reach the API server (FAKE)")
        self.written[service] = f"{header}: {value}"
        return {}

    def route_pending(
        self, service: str, header: str, value: str, before: dict[str, Any]
    ) -> list[str]:
        self.arrive_after_polls -= 1
        return [] if self.arrive_after_polls <= 0 else ["frontend-0"]


def _injector(control: FakeControlPlane) -> ControlPlaneFaultInjector:
    fault = scenario().faults[0]
    assert isinstance(fault, ControlPlaneFault)
    return ControlPlaneFaultInjector(fault, "down", control, None)


def test_a_kill_is_proven_restarted_at_the_revert_and_resynced_fake_control_plane() -> None:
    control = FakeControlPlane()
    injector = _injector(control)
    injector.inject()
    evidence = injector.evidence()
    assert evidence["gone"] == 1 and evidence["envoys_xds_disconnected"] == 2
    assert evidence["istiod_unreachable"] == 1 and evidence["certificate_seconds_left_min"] == 85000
    effect, message = injector.judge_effect(evidence)
    assert effect and "killed istiod; 2 of 2 Envoys' xDS streams down" in message
    assert injector.revert()
    assert control.calls == ["kill istiod", "restart istiod", "wait_synced"]
    assert injector.record.detail["restarted_pid"] == 43
    assert injector.record.detail["resynced_s"] >= 0


def test_a_kill_that_did_not_kill_has_no_effect_fake_control_plane() -> None:
    injector = _injector(FakeControlPlane(killable=False))
    injector.inject()
    effect, message = injector.judge_effect(injector.evidence())
    assert not effect and "istiod was not gone when the window ended" in message


def test_a_change_is_retried_until_written_then_watched_until_synced_fake_control_plane(
    tmp_path: Path,
) -> None:
    control = FakeControlPlane(write_failures=2, arrive_after_polls=3)
    deployment = _FakeDeployment(scenario(), control)
    changes = ConfigChanges.for_run(deployment.scenario, deployment)  # type: ignore[arg-type]
    begun = time.time()
    changes.phase_started("baseline", begun)  # not the change's phase: nothing happens
    changes.phase_started("outage", begun - 1.0)  # due now
    deadline = time.monotonic() + 10.0
    while changes.watches[0].record.synced_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    (record,) = changes.stop()
    assert record.write_errors == 2 and record.error is None
    assert control.written == {"catalog": f"{HEADER}: change"}
    assert record.written_at is not None and record.synced_at is not None
    assert record.due_at <= record.written_at <= record.synced_at
    assert record.proxies == ["frontend-0"] and record.pending == []


@dataclass
class _FakeDeployment:
    scenario: Any
    control_plane_faults: FakeControlPlane


def test_the_change_keeps_the_rendered_route_policy() -> None:
    rendered: Any = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "catalog", "namespace": "ns"},
        "spec": {
            "hosts": ["catalog"],
            "http": [{"name": "catalog", "route": [], "timeout": "2s"}],
        },
    }
    changed: Any = route_with_header(rendered, "ns", "catalog", HEADER, "v")
    assert changed["spec"]["http"][0]["timeout"] == "2s"
    assert changed["spec"]["http"][0]["headers"] == {"response": {"add": {HEADER: "v"}}}
    assert "headers" not in rendered["spec"]["http"][0]
    built: Any = route_with_header(None, "ns", "inventory", HEADER, "v")
    (route,) = built["spec"]["http"]
    assert route["route"][0]["destination"] == {"host": "inventory", "port": {"number": 8080}}
    assert "timeout" not in route and "retries" not in route  # Istio's defaults stay


# --------------------------------------------------------------------------- real istiod

Runner = Callable[..., ScenarioOutcome]


def nothing_left(journal: Any) -> None:
    assert run_processes(journal.run_id) == []
    assert journal.namespaces, "the run must have had its own namespaces"
    for namespace in journal.namespaces.values():
        assert namespace_members(namespace, journal.run_id) == []


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.controlplane
def test_control_plane_outage_keeps_the_mesh_serving_and_changes_arrive(
    harness_run: Runner,
) -> None:
    """istiod killed / paused / cut off, the API server paused / killed: every fault proven,
    no request lost beyond 1%, both changes SYNCED within their objectives, resync timed."""
    outcome = harness_run(SCENARIOS / "control-plane-outage.yaml", mesh=Mesh.ISTIO)
    journal = outcome.journal
    assert outcome.exit_code == 0, outcome.summary
    faults = {fault.name: fault for fault in journal.faults}
    assert all(f.took_effect and f.revert_verified for f in faults.values()), outcome.summary
    killed = faults["istiod-killed"].evidence
    assert killed["gone"] == 1 and killed["istiod_unreachable"] == 1
    assert killed["envoys_xds_disconnected"] > 0  # the agents closed their Envoys' streams
    cut = faults["xds-cut"].evidence
    assert cut["packets_to_istiod"] + cut["packets_from_istiod"] > 0
    assert cut["proxies_not_synced"] > 0  # istiod's push was never acknowledged
    assert faults["istiod-paused"].evidence["stopped"] == 1
    assert faults["apiserver-paused"].evidence["stopped"] == 1
    assert faults["apiserver-killed"].evidence["gone"] == 1
    for fault in faults.values():
        assert fault.evidence["certificates_valid"] == 8  # 7 sidecars + the gateway
        assert fault.detail["resynced_s"] > 0
    assert faults["istiod-killed"].detail["restarted_pid"] != faults["istiod-killed"].detail["pid"]
    changes = {change.slo: change for change in journal.config_changes}
    assert changes["change-while-istiod-down"].proxies == ["frontend-0"]
    assert sorted(changes["change-while-cut-off"].proxies) == [
        "catalog-0",
        "catalog-1",
        "catalog-2",
    ]
    verdicts = {(r.slo, r.phase): r.verdict for r in journal.slos}
    assert verdicts[("change-while-istiod-down", "istiod-killed")] == "PASS"
    assert verdicts[("change-while-cut-off", "xds-cut")] == "PASS"
    html = render_report(Journal.read(outcome.result.journal_path))  # the journal alone
    assert "control-plane fault: xds-cut" in html and "every proxy SYNCED again" in html
    assert "SYNCED on 3 proxies" in html
    nothing_left(journal)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.controlplane
def test_negative_control_a_change_while_istiod_stays_down_fails(harness_run: Runner) -> None:
    outcome = harness_run(SCENARIOS / "control-plane-outage-negative.yaml", mesh=Mesh.ISTIO)
    journal = outcome.journal
    assert outcome.exit_code == 1, outcome.summary
    assert not journal.problems, "a negative control fails on its SLOs, not on its faults"
    (fault,) = journal.faults
    assert fault.took_effect and fault.revert_verified
    verdicts = {r.slo: r for r in journal.slos}
    assert verdicts["e2e-error-rate"].verdict == "PASS", outcome.summary
    failed = verdicts["change-while-istiod-down"]
    assert failed.verdict == "FAIL"
    assert "control plane was down from the change to the end of the run" in failed.message
    html = render_report(Journal.read(outcome.result.journal_path))
    assert "after the run ended" in html or "when the run ended" in html
    nothing_left(journal)


LOOP = """
apiVersion: harness/v1
metadata: {name: cp-loop}
load: {rate: 20}
phases:
  - {name: baseline, duration: 30ms}
  - {name: outage, duration: 400ms}
faults:
  - {name: down, kind: controlPlane, phase: outage, duration: 100ms}
slos:
  - {name: change, kind: configPropagation, change: {service: catalog, phase: outage, at: 50ms},
     max: 1s}
"""


def test_the_run_loop_makes_the_change_in_its_phase_and_journals_it_fake_deployment(
    tmp_path: Path,
) -> None:
    """The runner's hook: the change is due at its phase's start + ``at``, watched on its
    own thread while the (recorded, FAKE) outage runs, and journaled for the judge."""
    spec = scenario(LOOP)
    log: list[Call] = []
    journal = new_journal(scenario_name=spec.metadata.name, platform="fake")
    run = Run(spec, tmp_path, journal, lambda message: None, None, recording_factory(log))
    control = FakeControlPlane(arrive_after_polls=1)
    deployment = FakeDeployment(spec, tmp_path, control_plane_faults=control)
    run.execute(deployment)
    (change,) = run.journal.config_changes
    outage = run.journal.phases[1]
    assert change.due_at == pytest.approx(outage.start + 0.05)
    assert change.written_at is not None and change.synced_at is not None
    assert control.written == {"catalog": f"{HEADER}: change"}
    (fault,) = run.journal.faults
    assert fault.kind == "controlPlane" and fault.reverted_at is not None
    # Judged from the journal alone: the clock starts at the (recorded) outage's end.
    result = evaluate_propagation(_slo_of(spec), "outage", run.journal)
    assert result.verdict == Verdict.PASS, result.message
    assert result.measured == pytest.approx(max(0.0, change.synced_at - fault.reverted_at))


def _slo_of(spec: Any) -> ConfigPropagationSlo:
    (found,) = [slo for slo in spec.slos if isinstance(slo, ConfigPropagationSlo)]
    assert isinstance(found, ConfigPropagationSlo)
    return found
