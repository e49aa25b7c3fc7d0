"""The guard stops every fault early when the error rate stays too high, and the run fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ExitCode
from harness.runner import RunOptions, run_scenario
from harness.scenario import load_scenario_text

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCENARIO = """
apiVersion: harness/v1
metadata: {name: guarded}
mesh:
  destinations:
    catalog: {retries: {attempts: 0}}
load: {rate: 20}
phases:
  - {name: baseline, duration: 2s}
  - {name: fault, duration: 14s}
faults:
  - {name: total-outage, kind: http, phase: fault, target: {service: catalog},
     abort: {httpStatus: 503}}
  - {name: later-fault, kind: http, phase: fault, start: 10s, target: {service: pricing},
     delay: {fixedDelay: 100ms}}
guard: {errorRate: 50%, for: 2s}
slos:
  - {name: errors, kind: errorRate, max: 10%, phases: [baseline]}
"""


def test_guard_stops_faults_early_and_fails_the_run(tmp_path: Path) -> None:
    scenario = load_scenario_text(SCENARIO, "guarded.yaml")
    result = run_scenario(scenario, options=RunOptions(reports_dir=tmp_path, handle_signals=False))
    journal = result.journal
    assert result.exit_code == ExitCode.FAILED
    assert journal.aborted is not None and "guard tripped" in journal.aborted
    assert any("run aborted" in problem for problem in journal.problems)
    # The outage really happened, and was cut short: reverted long before its phase ended.
    (outage,) = [f for f in journal.faults if f.name == "total-outage"]
    assert outage.took_effect and outage.revert_verified
    assert outage.injected_at is not None and outage.reverted_at is not None
    fault_phase = next(p for p in journal.phases if p.name == "fault")
    assert outage.reverted_at < fault_phase.end - 4.0
    assert journal.aborted_at is not None and outage.reverted_at >= journal.aborted_at
    # A fault scheduled after the guard tripped never started.
    assert [f.name for f in journal.faults] == ["total-outage"]
    # The baseline SLO is still judged (the guard does not hide what was measured).
    assert [e.verdict for e in journal.slos] == ["PASS"]
