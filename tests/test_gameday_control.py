"""The operator seam (harness.control) in the runner's loop, against a FAKE deployment and
recording injectors (tests/fakes.py): milliseconds each.

What matters: every command is carried out by the run loop and journaled as an
OperatorAction; a manual fault goes through the undo journal like a scheduled one and is
reverted (by the operator, or at the latest when its phase ends); a halt reverts every
fault before the load stops. The same against real Envoy, Locust and a terminal is
test_gameday_console.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import Call, FakeDeployment, recording_factory
from journals import new_journal
from test_run_loop import actions, assert_all_reverted

from harness.control import (
    EndPhase,
    ExtendPhase,
    Halt,
    InjectFault,
    Note,
    OperatorControls,
    RevertFault,
)
from harness.errors import Halted
from harness.journal import Journal
from harness.runner import Run
from harness.scenario import load_scenario_text
from harness.scenario.models import Scenario

SCENARIO = """
apiVersion: harness/v1
metadata: {name: fake-gameday}
load: {rate: 20}
phases:
  - {name: baseline, duration: 200ms}
  - {name: fault, duration: 300ms}
faults:
  - {name: aborts, kind: http, phase: fault, target: {service: catalog},
     abort: {httpStatus: 503}}
  - {name: pauses, kind: pause, phase: fault, target: {service: pricing}}
slos:
  - {name: errors, kind: errorRate, max: 10%}
"""


def spec() -> Scenario:
    return load_scenario_text(SCENARIO, "fake.yaml")


def make_run(tmp_path: Path, log: list[Call], controls: OperatorControls) -> Run:
    journal = new_journal(scenario_name="fake-gameday", platform="fake")
    return Run(
        spec(),
        tmp_path,
        journal,
        lambda message: None,
        None,
        recording_factory(log),
        controls=controls,
    )


def test_a_manual_fault_a_note_and_an_extension_are_journaled(tmp_path: Path) -> None:
    log: list[Call] = []
    controls = OperatorControls(max_extension_s=1.0)
    for command in (Note("latency looks fine"), InjectFault("pauses"), ExtendPhase(0.3)):
        controls.submit(command)  # drained at the first tick of the first phase
    run = make_run(tmp_path, log, controls)
    deployment = FakeDeployment(run.scenario, tmp_path)
    run.execute(deployment)

    on_disk = Journal.read(tmp_path / "journal.json")
    assert [(a.kind, a.phase) for a in on_disk.actions] == [
        ("note", "baseline"),
        ("inject", "baseline"),
        ("extend", "baseline"),
    ]
    assert on_disk.actions[0].text == "latency looks fine"
    assert on_disk.actions[1].fault == "pauses" and on_disk.actions[1].error is None
    assert on_disk.actions[2].seconds == 0.3 and on_disk.actions[2].error is None
    baseline, fault = run.journal.phases
    assert baseline.end - baseline.start == pytest.approx(0.5)  # 200 ms + 300 ms
    # The manual injection has its own record, in the phase it happened in; the timeline's
    # own injection of the same fault comes later with its own.
    manual, *scheduled = run.journal.faults
    assert (manual.name, manual.trigger, manual.phase) == ("pauses", "operator", "baseline")
    assert manual.injected_at is not None and manual.reverted_at is not None
    assert baseline.start <= manual.injected_at and manual.reverted_at <= fault.start
    assert {(f.name, f.trigger, f.phase) for f in scheduled} == {
        ("aborts", "timeline", "fault"),
        ("pauses", "timeline", "fault"),
    }
    assert actions(log, "pauses") == ["inject", "evidence", "revert"] * 2
    assert_all_reverted(log, run, deployment)
    assert controls.view.extension_left_s == pytest.approx(0.7)


def test_the_operator_reverts_and_ends_a_phase(tmp_path: Path) -> None:
    log: list[Call] = []
    controls = OperatorControls()
    for command in (InjectFault("aborts"), RevertFault("aborts"), EndPhase()):
        controls.submit(command)
    run = make_run(tmp_path, log, controls)
    deployment = FakeDeployment(run.scenario, tmp_path)
    run.execute(deployment)
    assert [a.kind for a in run.journal.actions] == ["inject", "revert", "end-phase"]
    assert all(a.error is None for a in run.journal.actions)
    baseline = run.journal.phases[0]
    assert baseline.end - baseline.start < 0.2  # ended early
    manual = run.journal.faults[0]
    assert manual.trigger == "operator" and manual.reverted_at is not None
    inject, revert, _ = run.journal.actions
    assert manual.injected_at is not None
    assert inject.at <= manual.injected_at <= revert.at <= manual.reverted_at
    assert_all_reverted(log, run, deployment)


def test_refused_commands_are_journaled_with_their_reason(tmp_path: Path) -> None:
    log: list[Call] = []
    controls = OperatorControls(max_extension_s=0.1)
    for command in (
        InjectFault("nope"),
        RevertFault("aborts"),
        ExtendPhase(5.0),
        InjectFault("aborts"),
        InjectFault("aborts"),
    ):
        controls.submit(command)
    run = make_run(tmp_path, log, controls)
    run.execute(FakeDeployment(run.scenario, tmp_path))
    errors = [a.error for a in run.journal.actions]
    assert errors[0] == "no fault named 'nope'"
    assert errors[1] == "fault aborts is not active"
    assert errors[2] is not None and "at most 0.1s" in errors[2]
    assert errors[3] is None
    assert errors[4] == "fault aborts is already active"
    assert run.journal.phases[0].end - run.journal.phases[0].start == pytest.approx(0.2)
    # The scheduled inject of a fault the operator still holds is skipped, not doubled;
    # the manual one was reverted when its phase (baseline) ended, so the timeline's runs.
    assert actions(log, "aborts") == ["inject", "evidence", "revert"] * 2


def test_halt_reverts_every_fault_before_the_load_stops(tmp_path: Path) -> None:
    log: list[Call] = []
    controls = OperatorControls()
    run = make_run(tmp_path, log, controls)

    def halt_once_injected(check: int) -> None:
        if any(call.fault == "aborts" and call.action == "inject" for call in log):
            controls.submit(Note("halting now"))
            controls.submit(Halt("error budget gone"))

    deployment = FakeDeployment(run.scenario, tmp_path, on_running=halt_once_injected)
    with pytest.raises(Halted, match="halted: error budget gone"):
        run.execute(deployment)
    assert [a.kind for a in run.journal.actions] == ["note", "halt"]
    halt = run.journal.actions[1]
    assert halt.text == "error budget gone" and halt.phase == "fault"
    # Both faults were active; both reverted, after the halt and before the load stopped.
    for name in ("aborts", "pauses"):
        assert actions(log, name) == ["inject", "evidence", "revert"]
        (revert,) = [c for c in log if c.fault == name and c.action == "revert"]
        assert halt.at <= revert.at
    assert_all_reverted(log, run, deployment)
    # The interrupted phase is kept, up to the halt, so what happened can be judged.
    assert [w.name for w in run.journal.phases] == ["baseline", "fault"]
    assert run.journal.phases[1].end >= halt.at
    assert controls.view.stage == "stopping"


def test_journals_from_before_game_days_still_load(tmp_path: Path) -> None:
    journal = new_journal()
    data = journal.model_dump(mode="json")
    data.pop("actions")
    data["faults"] = [
        {"name": "f", "kind": "http", "phase": "p", "targets": ["catalog-0"]}
    ]  # as written before faults had a trigger
    path = tmp_path / "journal.json"
    path.write_text(json.dumps(data))
    loaded = Journal.read(path)
    assert loaded.actions == []
    assert loaded.faults[0].trigger == "timeline"
