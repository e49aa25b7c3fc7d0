"""``kill -9`` of the runner mid-fault, then ``harness cleanup``: nothing is left.

Three faults are active at once — an HTTP abort ramp (Envoy runtime overrides), a latency
toxic (toxiproxy) and a reject partition (nftables). The runner is killed at three different
moments of their life; each time the test reads
``/proc`` back (processes carrying the run id, members of the run's namespaces — the nft
tables, Envoy runtime overrides and toxics of a run live only there) before and after
``harness cleanup``, and checks that cleanup closes the journal and the undo journal.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import ExitCode
from harness.faults.base import UndoJournal
from harness.journal import Journal
from harness.platforms.local.processes import namespace_members, run_processes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCENARIO = """
apiVersion: harness/v1
metadata: {name: crash-me}
load: {rate: 20}
phases:
  - {name: baseline, duration: 1s}
  - {name: fault, duration: 120s}
faults:
  - name: catalog-aborts
    kind: http
    phase: fault
    target: {service: catalog, instances: 1}
    abort: {httpStatus: 503}
    steps: [{at: 0s, percentage: 10}, {at: 2s, percentage: 30}, {at: 4s, percentage: 60}]
  - {name: pricing-latency, kind: toxic, toxic: latency, latency: 50ms, phase: fault,
     source: frontend, target: {service: pricing}}
  - {name: inventory-cut, kind: partition, mode: reject, phase: fault,
     from: {service: catalog, instances: 1}, to: {service: inventory, instances: 1}}
slos:
  - {name: errors, kind: errorRate, max: 1%}
"""


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def wait_for(predicate: object, what: str, within: float = 60.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def journal_of(reports: Path) -> Path:
    found = list(reports.glob("crash-me/*/journal.json"))
    return found[0] if found else reports / "missing"


def fault_state(reports: Path) -> str:
    path = journal_of(reports)
    if not path.exists():
        return "none"
    try:
        faults = json.loads(path.read_text())["faults"]
    except (ValueError, KeyError):
        return "none"
    if not faults:
        undo = path.parent / "undo.jsonl"
        return "intent" if undo.exists() and '"intent"' in undo.read_text() else "none"
    return "injected" if faults[0].get("injected_at") else "intent"


def all_injected(reports: Path) -> bool:
    faults = Journal.read(journal_of(reports)).faults
    return len(faults) == 3 and all(f.injected_at for f in faults)


@pytest.mark.parametrize(
    "moment", ["as-the-intent-is-written", "one-second-into-the-fault", "after-a-ramp-step"]
)
def test_kill_9_mid_fault_then_cleanup(tmp_path: Path, moment: str) -> None:
    scenario = tmp_path / "crash-me.yaml"
    scenario.write_text(SCENARIO)
    reports = tmp_path / "reports"
    runner = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(scenario), "--reports", str(reports)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        if moment == "as-the-intent-is-written":
            wait_for(lambda: fault_state(reports) in ("intent", "injected"), "the fault intent")
        else:
            wait_for(lambda: fault_state(reports) == "injected", "the fault injection")
            time.sleep(1.0 if moment == "one-second-into-the-fault" else 3.0)
        run_id = journal_of(reports).parent.name
        assert run_processes(run_id), "the run must be alive when it is killed"
        if moment != "as-the-intent-is-written":
            wait_for(lambda: all_injected(reports), "all three faults")
        runner.kill()  # SIGKILL: no handler, no finally, no revert by the runner
        runner.wait(timeout=10)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    journal_path = journal_of(reports)
    assert Journal.read(journal_path).status == "running", "a killed run cannot close its journal"

    result = harness("cleanup", "--reports", str(reports))
    assert result.returncode == ExitCode.PASSED, result.stdout + result.stderr
    assert f"{run_id}:" in result.stdout and "clean" in result.stdout

    # Read everything back: no process of the run, no member of its namespaces.
    journal = Journal.read(journal_path)
    assert run_processes(run_id) == []
    assert journal.namespaces
    for namespace in journal.namespaces.values():
        assert namespace_members(namespace, run_id) == []
    assert journal.status == "crashed" and "harness cleanup" in (journal.error or "")
    assert UndoJournal(journal_path.parent / "undo.jsonl").outstanding() == []
    if journal.scratch_dir:
        assert not Path(journal.scratch_dir).exists()
    # A second cleanup finds nothing to do.
    again = harness("cleanup", "--reports", str(reports))
    assert again.returncode == ExitCode.PASSED and "no unfinished runs" in again.stdout


def test_cleanup_during_a_live_run_leaves_it_alone(tmp_path: Path) -> None:
    """Issue 14: cleanup on the reports dir of a running run must not touch it."""
    scenario = tmp_path / "crash-me.yaml"
    scenario.write_text(SCENARIO.replace("duration: 120s", "duration: 8s"))
    reports = tmp_path / "reports"
    runner = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(scenario), "--reports", str(reports)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: fault_state(reports) == "injected", "the fault injection")
        run_id = journal_of(reports).parent.name
        # Sidecars live for the whole run (short helpers such as nft may come and go).
        sidecars = {p.pid for p in run_processes(run_id) if any("envoy" in a for a in p.argv)}
        assert sidecars
        result = harness("cleanup", "--reports", str(reports))
        assert result.returncode == ExitCode.PASSED, result.stdout + result.stderr
        assert f"{run_id}: left alone: its runner is alive" in result.stdout
        assert sidecars <= {p.pid for p in run_processes(run_id)}, "cleanup killed a live run"
        runner.wait(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    journal = Journal.read(journal_of(reports))
    assert journal.status == "completed", journal.error
    assert journal.faults and all(fault.revert_verified for fault in journal.faults)
    assert run_processes(run_id) == []
