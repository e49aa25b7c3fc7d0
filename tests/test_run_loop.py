"""The runner's loop against a FAKE deployment and recording injectors (tests/fakes.py).

Milliseconds each: the fault timeline (inject, ramp, revert in order), the guard, and the
promise that matters most — whatever was injected is reverted, on an error and on a signal.
The same behaviour against real Envoy processes is in test_guard.py and test_interrupts.py.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from fakes import Call, FakeDeployment, recording_factory
from journals import new_journal

from harness import runner
from harness.errors import Interrupted
from harness.journal import Journal
from harness.runner import GuardWatch, Run
from harness.scenario import load_scenario_text
from harness.scenario.models import Guard, Scenario
from harness.signals import SignalGuard

TIMELINE = """
apiVersion: harness/v1
metadata: {name: fake-timeline}
load: {rate: 20}
phases:
  - {name: baseline, duration: 30ms}
  - {name: fault, duration: 240ms}
faults:
  - {name: early, kind: http, phase: fault, duration: 60ms, target: {service: catalog},
     abort: {httpStatus: 503}}
  - {name: ramped, kind: http, phase: fault, target: {service: catalog},
     abort: {httpStatus: 503}, steps: [{at: 0s, percentage: 10}, {at: 40ms, percentage: 40}]}
  - {name: late, kind: kill, phase: fault, start: 150ms, target: {service: pricing}}
slos:
  - {name: errors, kind: errorRate, max: 10%}
"""


def scenario(text: str = TIMELINE) -> Scenario:
    return load_scenario_text(text, "fake.yaml")


def make_run(tmp_path: Path, spec: Scenario, log: list[Call], **failing: bool) -> Run:
    journal = new_journal(scenario_name=spec.metadata.name, platform="fake")
    names = frozenset(name for name, fails in failing.items() if fails)
    return Run(spec, tmp_path, journal, lambda message: None, None, recording_factory(log, names))


def actions(log: list[Call], fault: str) -> list[str]:
    return [call.action for call in log if call.fault == fault]


def assert_all_reverted(log: list[Call], run: Run, deployment: FakeDeployment) -> None:
    """Every fault that was asked to inject was reverted after its inject and before the
    load stopped (not later, by a garbage collector), the journal on disk says so, and the
    undo journal has a verified revert for every intent."""
    assert deployment.stopped_at is not None
    for name in {call.fault for call in log if call.action == "inject"}:
        done = actions(log, name)
        assert "revert" in done, f"{name} was injected but never reverted: {done}"
        assert done.index("revert") > done.index("inject"), done
        reverted = max(c.at for c in log if c.fault == name and c.action == "revert")
        assert reverted <= deployment.stopped_at, f"{name} reverted only after the run"
    on_disk = Journal.read(run.run_dir / "journal.json").faults
    assert [f.name for f in on_disk] == [f.name for f in run.journal.faults]
    assert all(f.reverted_at is not None and f.revert_verified for f in on_disk), on_disk
    undo = [json.loads(line) for line in run.undo.path.read_text().splitlines()]
    intents = {entry["name"] for entry in undo if entry["event"] == "intent"}
    reverted = {entry["name"] for entry in undo if entry["event"] == "reverted"}
    assert intents == reverted, (intents, reverted)
    assert run.undo.outstanding() == []


def test_faults_follow_their_timeline(tmp_path: Path) -> None:
    spec = scenario()
    log: list[Call] = []
    run = make_run(tmp_path, spec, log)
    deployment = FakeDeployment(spec, tmp_path)
    run.execute(deployment)
    assert [w.name for w in run.journal.phases] == ["baseline", "fault"]
    fault_start = run.journal.phases[1].start
    times = {(c.fault, c.action): c.at - fault_start for c in log if c.action != "adjust"}
    assert actions(log, "early") == ["inject", "evidence", "revert"]
    assert 0.06 <= times[("early", "revert")] < times[("late", "inject")]
    assert times[("late", "inject")] >= 0.15
    # The ramp starts at its first step (the injector's job) and steps up once, while on.
    assert actions(log, "ramped") == ["inject", "adjust", "evidence", "revert"]
    (step,) = [c for c in log if c.action == "adjust"]
    assert step.value == 40.0 and step.at - fault_start >= 0.04
    # Faults lasting to the phase's end are reverted when it ends, before the next phase.
    assert times[("ramped", "revert")] >= 0.24 and times[("late", "revert")] >= 0.24
    assert [f.name for f in run.journal.faults] == ["early", "ramped", "late"]
    assert all(f.took_effect and f.revert_verified for f in run.journal.faults)
    assert_all_reverted(log, run, deployment)


def test_a_failed_inject_still_reverts_everything_injected(tmp_path: Path) -> None:
    spec = scenario()
    log: list[Call] = []
    run = make_run(tmp_path, spec, log, ramped=True)
    deployment = FakeDeployment(spec, tmp_path)
    with pytest.raises(RuntimeError, match="ramped: inject failed"):
        run.execute(deployment)
    assert actions(log, "early") == ["inject", "evidence", "revert"]  # cut short
    assert actions(log, "ramped") == ["inject", "revert"]  # half-done inject: revert anyway
    assert actions(log, "late") == []  # never started
    assert_all_reverted(log, run, deployment)


def test_a_signal_mid_phase_reverts_every_fault(tmp_path: Path) -> None:
    spec = scenario()
    log: list[Call] = []
    run = make_run(tmp_path, spec, log)

    def interrupt_once_injected(check: int) -> None:
        if any(call.fault == "ramped" for call in log) and not any(
            call.action == "revert" for call in log
        ):
            signal.raise_signal(signal.SIGTERM)

    deployment = FakeDeployment(spec, tmp_path, on_running=interrupt_once_injected)
    guard = SignalGuard(lambda message: None, enabled=True)
    with guard.installed(), pytest.raises(Interrupted, match="SIGTERM"):
        run.execute(deployment)
    assert actions(log, "early")[0] == "inject" and actions(log, "ramped")[0] == "inject"
    assert "stop 4242" in deployment.calls  # the load generator is stopped too
    assert_all_reverted(log, run, deployment)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_signal_swallowed_by_a_best_effort_block_still_stops_the_run(tmp_path: Path) -> None:
    """The first signal lands inside code that suppresses errors (FAKE: the deployment's
    liveness probe swallows everything): the run loop raises it again at its next tick
    instead of running on with every later signal only logged."""
    spec = scenario()
    log: list[Call] = []
    run = make_run(tmp_path, spec, log)
    swallowed: list[str] = []

    def swallow_a_signal(check: int) -> None:
        if check == 2:
            try:
                signal.raise_signal(signal.SIGINT)
            except Interrupted as exc:  # what a broad ``except Exception`` would do
                swallowed.append(str(exc))

    deployment = FakeDeployment(spec, tmp_path, on_running=swallow_a_signal)
    messages: list[str] = []
    guard = SignalGuard(messages.append, enabled=True)
    run.check_signals = guard.raise_pending
    with guard.installed(), pytest.raises(Interrupted, match="SIGINT"):
        run.execute(deployment)
    assert swallowed, "the FAKE probe never saw the signal"
    assert_all_reverted(log, run, deployment)
    guard.shield()
    guard.raise_pending()  # cleaning up: nothing raised any more


class TrippingGuard:
    """Trips at its ``trip_at``-th poll."""

    def __init__(self, trip_at: int) -> None:
        self.trip_at = trip_at
        self.polls = 0

    def poll(self, now: float) -> str | None:
        self.polls += 1
        return "guard tripped: fake" if self.polls == self.trip_at else None

    def close(self) -> None:
        pass


def test_the_guard_reverts_every_fault_and_starts_no_more(tmp_path: Path) -> None:
    spec = scenario()
    log: list[Call] = []
    run = make_run(tmp_path, spec, log)
    run.guard = TrippingGuard(trip_at=2)  # type: ignore[assignment]
    deployment = FakeDeployment(spec, tmp_path)
    run.execute(deployment)
    assert run.journal.aborted == "guard tripped: fake"
    assert run.journal.aborted_at is not None
    injected = {c.fault for c in log if c.action == "inject"}
    assert injected == {"early", "ramped"} and actions(log, "late") == []
    reverted_at = max(c.at for c in log if c.action == "revert")
    assert reverted_at <= run.journal.aborted_at + 0.05
    assert_all_reverted(log, run, deployment)


def test_guard_watch_needs_a_streak_of_bad_seconds(tmp_path: Path) -> None:
    samples = tmp_path / "samples.jsonl"
    lines = []
    for second in range(10):
        bad = 3 <= second < 6  # three bad seconds in a row, 8 of 10 requests failing
        for i in range(10):
            ok = not (bad and i < 8)
            sample = {"t": 1000.0 + second + i / 20, "ms": 1.0, "status": 200 if ok else 503,
                      "ok": ok, "err": None if ok else "503", "rid": ""}  # fmt: skip
            lines.append(json.dumps(sample))
    samples.write_text("\n".join(lines) + "\n")
    watch = GuardWatch(Guard.model_validate({"errorRate": "50%", "for": "3s"}), samples)
    try:
        assert watch.poll(1000.0 + 6.0) is None  # judged up to second 4: a streak of two
        reason = watch.poll(1000.0 + 7.0)  # second 5 is the third bad one
        assert reason is not None and "for 3 s" in reason and "8/10 failed" in reason
    finally:
        watch.close()


EJECTING = """
apiVersion: harness/v1
metadata: {name: fake-ejections}
load: {rate: 20}
mesh:
  destinations:
    catalog:
      outlierDetection: {consecutiveGatewayErrors: 3, interval: 100ms, baseEjectionTime: 200ms}
phases:
  - {name: baseline, duration: 30ms}
slos:
  - {name: errors, kind: errorRate, max: 10%}
"""
EJECTED_KEY = "cluster.outbound|8080||catalog.outlier_detection.ejections_active"


class EjectedAtFirst(FakeDeployment):
    """frontend-0's sidecar holds one catalog host ejected for its first ``reads`` counter
    reads (``reads`` < 0: for ever)."""

    def __init__(self, spec: Scenario, run_dir: Path, reads: int) -> None:
        super().__init__(spec, run_dir)
        self.reads_left = reads
        self.read_at: list[float] = []

    def mesh_counters(self) -> dict[str, dict[str, int]]:
        self.read_at.append(time.time())
        ejected = 1 if self.reads_left != 0 else 0
        self.reads_left -= 1 if self.reads_left > 0 else 0
        return {"frontend-0": {EJECTED_KEY: ejected}}


def test_the_baseline_waits_until_a_host_ejected_by_the_first_requests_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "EJECTION_WARMUP_S", 0.05)
    spec = scenario(EJECTING)
    assert runner.ejection_settle_s(spec) == pytest.approx(2.3)
    messages: list[str] = []
    run = Run(
        spec, tmp_path, new_journal(scenario_name="e", platform="fake"), messages.append, None
    )
    deployment = EjectedAtFirst(spec, tmp_path, reads=2)
    run.execute(deployment)
    # Two reads saw the host ejected; the third did not, and the baseline started after it.
    assert run.journal.load_started_at is not None
    assert run.journal.load_started_at >= deployment.read_at[2]
    assert run.journal.phases[0].start >= deployment.read_at[2]
    assert any("frontend-0 → catalog: 1" in m and "waiting up to 2.3s" in m for m in messages)
    assert any(m.startswith("every ejected host returned") for m in messages)
    assert run.journal.load is not None and run.journal.load.warnings == []


def test_a_host_still_ejected_after_the_bound_is_a_load_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "EJECTION_WARMUP_S", 0.0)
    monkeypatch.setattr(runner, "ejection_settle_s", lambda scenario: 1.5)
    spec = scenario(EJECTING)
    run = Run(spec, tmp_path, new_journal(scenario_name="e", platform="fake"), print, None)
    deployment = EjectedAtFirst(spec, tmp_path, reads=-1)
    run.execute(deployment)
    assert run.journal.load is not None
    (warning,) = run.journal.load.warnings
    assert "still ejected" in warning and "frontend-0 → catalog: 1" in warning
    assert 1.5 <= deployment.read_at[-1] - deployment.read_at[0] < 3.5


def test_no_outlier_detection_no_wait(tmp_path: Path) -> None:
    detection = (
        "outlierDetection: {consecutiveGatewayErrors: 3, interval: 100ms, baseEjectionTime: 200ms}"
    )
    spec = scenario(EJECTING.replace(detection, "timeout: 1s"))
    assert runner.ejection_settle_s(spec) == 0.0
    deployment = EjectedAtFirst(spec, tmp_path, reads=-1)
    run = Run(spec, tmp_path, new_journal(scenario_name="e", platform="fake"), print, None)
    run.execute(deployment)
    assert run.journal.load is not None and run.journal.load.warnings == []
