"""The shipped scenarios, end to end: real Envoy, real app, real Locust, real verdicts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from harness.errors import ExitCode
from harness.platforms.local.processes import namespace_members, run_processes
from harness.pytest_plugin import ScenarioOutcome

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
Run = Callable[..., ScenarioOutcome]


def assert_nothing_left(outcome: ScenarioOutcome) -> None:
    journal = outcome.journal
    assert run_processes(journal.run_id) == []
    assert journal.namespaces, "the run must have had its own namespaces"
    for namespace in journal.namespaces.values():
        assert namespace_members(namespace) == []


def edge(outcome: ScenarioOutcome, caller: str, callee: str) -> dict[str, dict[str, int]]:
    for entry in outcome.journal.edges:
        if (entry.caller, entry.callee) == (caller, callee):
            return entry.phases
    raise AssertionError(f"no edge {caller} → {callee} in the journal")


def test_retries_mask_transient_errors(harness_run: Run) -> None:
    outcome = harness_run(SCENARIOS / "retries-mask-transient-errors.yaml")
    assert outcome.exit_code == ExitCode.PASSED, outcome.summary
    journal = outcome.journal
    # The fault took effect: Envoy counted injected aborts, and frontend's sidecar retried.
    (fault,) = journal.faults
    assert fault.took_effect and fault.evidence["aborts_injected"] > 0
    assert fault.revert_verified
    assert journal.injected["catalog-0"]["aborts_injected"] > 0
    retries = edge(outcome, "frontend", "catalog")
    assert retries["fault"]["upstream_rq_retry"] > 0
    assert retries["baseline"]["upstream_rq_retry"] == 0
    fault_slo = next(e for e in journal.slos if e.slo == "e2e-error-rate" and e.phase == "fault")
    assert fault_slo.verdict == "PASS" and fault_slo.n > 300
    assert_nothing_left(outcome)


def test_negative_control_without_retries_fails(harness_run: Run) -> None:
    outcome = harness_run(SCENARIOS / "retries-mask-transient-errors-negative.yaml")
    assert outcome.exit_code == ExitCode.FAILED, outcome.summary
    journal = outcome.journal
    assert journal.faults[0].took_effect
    assert edge(outcome, "frontend", "catalog")["fault"]["upstream_rq_retry"] == 0
    failed = [e for e in journal.slos if e.verdict == "FAIL"]
    assert [(e.slo, e.phase) for e in failed] == [("e2e-error-rate", "fault")]
    message = failed[0].message
    assert "e2e-error-rate" in message and "exceeds the objective 1.00%" in message
    assert f"{failed[0].measured:.1%}".rstrip("%") in message
    assert_nothing_left(outcome)
