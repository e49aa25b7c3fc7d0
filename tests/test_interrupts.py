"""Nothing is left behind: after SIGINT/SIGTERM/SIGHUP mid-fault, and after ``kill -9``.

Each test runs the real CLI in its own process group (as a terminal would), waits until the
fault is injected, then signals it, and reads ``/proc`` back to prove no process of the run
and no namespace of the run survive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import ExitCode
from harness.journal import Journal
from harness.platforms.local.processes import namespace_members, run_processes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LONG_FAULT = """
apiVersion: harness/v1
metadata: {name: interrupt-me}
load: {rate: 20}
phases:
  - {name: baseline, duration: 1s}
  - {name: fault, duration: 120s}
faults:
  - {name: catalog-aborts, kind: http, phase: fault, target: {service: catalog, instances: 1},
     abort: {httpStatus: 503, percentage: {value: 50}}}
slos:
  - {name: errors, kind: errorRate, max: 1%}
"""


def start_run(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    scenario = tmp_path / "interrupt-me.yaml"
    scenario.write_text(LONG_FAULT)
    reports = tmp_path / "reports"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(scenario), "--reports", str(reports)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        undo = list(reports.glob("interrupt-me/*/undo.jsonl"))
        if undo and '"intent"' in undo[0].read_text():
            journal = undo[0].parent / "journal.json"
            # Wait until the journal shows the fault injected (the runtime read back).
            data = json.loads(journal.read_text())
            if data["faults"] and data["faults"][0]["injected_at"]:
                return proc, undo[0].parent
        if proc.poll() is not None:
            pytest.fail(f"the run ended early: {proc.communicate()[0].decode()}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail("the fault was never injected")


def wait_gone(run_dir: Path, namespaces: dict[str, str], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        left = run_processes(run_dir.name)
        members = [pid for ns in namespaces.values() for pid in namespace_members(ns, run_dir.name)]
        if not left and not members:
            return
        time.sleep(0.1)
    pytest.fail(f"left behind: processes {left}, namespace members {members}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_mid_fault_reverts_and_cleans_up(tmp_path: Path, signum: signal.Signals) -> None:
    proc, run_dir = start_run(tmp_path)
    namespaces = Journal.read(run_dir / "journal.json").namespaces
    assert namespaces and all(namespace_members(ns, run_dir.name) for ns in namespaces.values())
    os.killpg(proc.pid, signum)
    if signum == signal.SIGINT:
        time.sleep(0.05)
        os.killpg(proc.pid, signum)  # an impatient second Ctrl-C must not cut the revert short
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == ExitCode.INTERRUPTED, output
    journal = Journal.read(run_dir / "journal.json")
    assert journal.status == "interrupted" and journal.verdict == "INTERRUPTED"
    assert signum.name in (journal.error or "")
    (fault,) = journal.faults
    assert fault.revert_verified, "the fault must be reverted and read back before exit"
    undo = [json.loads(line) for line in (run_dir / "undo.jsonl").read_text().splitlines()]
    assert [e["event"] for e in undo] == ["intent", "reverted"] and undo[1]["verified"]
    wait_gone(run_dir, namespaces, within=5.0)


def test_kill_9_of_the_runner_leaves_nothing(tmp_path: Path) -> None:
    proc, run_dir = start_run(tmp_path)
    namespaces = Journal.read(run_dir / "journal.json").namespaces
    assert run_processes(run_dir.name), "the run's processes must be visible before the kill"
    proc.kill()  # SIGKILL to the runner alone: no handler, no finally
    proc.communicate(timeout=10)
    # The supervisor reads EOF and exits; as PID 1 its exit kills the namespace's processes.
    wait_gone(run_dir, namespaces)
    # It also removed the scratch directory of admin sockets the dead runner left.
    scratch = Journal.read(run_dir / "journal.json").scratch_dir
    assert scratch and not Path(scratch).exists()
