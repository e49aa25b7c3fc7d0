"""Fault timelines: offsets within a phase, a duration, ramps, and several faults at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ExitCode
from harness.runner import RunOptions, run_scenario
from harness.scenario import load_scenario_text

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCENARIO = """
apiVersion: harness/v1
metadata: {name: timeline}
mesh:
  destinations:
    pricing: {retries: {attempts: 0}}
load: {rate: 20}
phases:
  - {name: baseline, duration: 2s}
  - {name: fault, duration: 8s}
faults:
  - name: ramp
    kind: http
    phase: fault
    start: 1s
    duration: 5s
    target: {service: pricing}
    abort: {httpStatus: 503}
    steps: [{at: 0s, percentage: 10}, {at: 2s, percentage: 30}, {at: 4s, percentage: 60}]
  - {name: slow-inventory, kind: http, phase: fault, start: 2s, duration: 2s,
     target: {service: inventory, instances: "50%"}, delay: {fixedDelay: 50ms}}
slos:
  - {name: errors, kind: errorRate, max: 90%, phases: [fault]}
"""


def test_faults_follow_their_timeline(tmp_path: Path) -> None:
    scenario = load_scenario_text(SCENARIO, "timeline.yaml")
    result = run_scenario(scenario, options=RunOptions(reports_dir=tmp_path, handle_signals=False))
    journal = result.journal
    assert result.exit_code == ExitCode.PASSED, (journal.problems, journal.error)
    fault_phase = next(p for p in journal.phases if p.name == "fault")
    ramp, slow = (
        next(f for f in journal.faults if f.name == n) for n in ("ramp", "slow-inventory")
    )
    assert ramp.injected_at is not None and ramp.reverted_at is not None
    assert slow.injected_at is not None and slow.reverted_at is not None
    # Offsets within the phase, to within the scheduler's 0.1 s tick plus admin calls.
    assert ramp.injected_at - fault_phase.start == pytest.approx(1.0, abs=0.5)
    assert ramp.reverted_at - ramp.injected_at == pytest.approx(5.0, abs=0.5)
    assert slow.injected_at - fault_phase.start == pytest.approx(2.0, abs=0.5)
    assert slow.reverted_at - slow.injected_at == pytest.approx(2.0, abs=0.5)
    # The ramp started at 10% and stepped to 30% then 60%, about 2 s apart.
    assert ramp.detail["runtime"]["harness.fault.any.abort_percent"] == "10"
    steps = ramp.detail["steps"]
    assert [s["percentage"] for s in steps] == [30, 60]
    assert steps[0]["at"] - ramp.injected_at == pytest.approx(2.0, abs=0.5)
    assert steps[1]["at"] - ramp.injected_at == pytest.approx(4.0, abs=0.5)
    # Blast radius: 50% of inventory's two instances is one.
    assert slow.targets == ["inventory-0"]
    assert ramp.took_effect and slow.took_effect
