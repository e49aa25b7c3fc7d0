"""``harness cleanup``: find what killed runs left behind, remove it, and prove it.

A run whose runner died (``kill -9``, a power cut, OOM) never finalised its journal: its
status is still ``running``. On the local platform everything a run changes lives in
processes that carry the run's id (``HARNESS_RUN_ID``) inside the run's namespaces — Envoy
runtime overrides in the sidecars, toxics in the toxiproxy server, nft rules in the network
namespace — so removing those processes removes every fault, and reading ``/proc`` back
proves it. Normally the run's supervisor has already done this on its own (it exits when the
runner's pipe closes); cleanup is the check, and the remedy when something survived.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.faults.base import UndoJournal
from harness.journal import Journal
from harness.platforms.local.processes import RunProcess, namespace_members, run_processes

WHERE_FAULTS_LIVE = {
    "http": "Envoy runtime overrides live in the run's sidecars",
    "toxic": "toxics live in the run's toxiproxy server",
    "partition": "nft rules live in the run's network namespace",
    "kill": "killed instances belonged to the run's namespace",
    "pause": "paused processes belonged to the run's namespace",
}


@dataclass
class CleanupReport:
    run_dir: Path
    run_id: str
    killed: list[RunProcess] = field(default_factory=list)
    remaining: list[RunProcess] = field(default_factory=list)
    namespace_members: dict[str, list[int]] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)  # what happened to each open fault intent
    scratch_removed: bool = False

    @property
    def clean(self) -> bool:
        return not self.remaining and not any(self.namespace_members.values())


def unfinished_runs(reports_dir: Path) -> list[Path]:
    """Journals of runs that never finished (status ``running``), oldest first."""
    found = []
    for path in sorted(reports_dir.glob("*/*/journal.json")):
        try:
            if Journal.read(path).status == "running":
                found.append(path)
        except (OSError, ValueError):
            continue
    return found


def _kill_all(run_id: str, within: float = 10.0) -> tuple[list[RunProcess], list[RunProcess]]:
    """SIGKILL every process of the run (supervisors first); wait until they are gone."""
    processes = run_processes(run_id)
    supervisors = [p for p in processes if any("supervisor" in a or a == "unshare" for a in p.argv)]
    for proc in [*supervisors, *(p for p in processes if p not in supervisors)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + within
    remaining = run_processes(run_id)
    while remaining and time.monotonic() < deadline:
        time.sleep(0.05)
        remaining = run_processes(run_id)
    return processes, remaining


def cleanup_run(journal_path: Path) -> CleanupReport:
    """Remove what one unfinished run left, verify by reading back, and close its journal."""
    journal = Journal.read(journal_path)
    run_dir = journal_path.parent
    report = CleanupReport(run_dir=run_dir, run_id=journal.run_id)
    report.killed, report.remaining = _kill_all(journal.run_id)
    report.namespace_members = {
        kind: namespace_members(ns, journal.run_id) for kind, ns in journal.namespaces.items()
    }
    undo = UndoJournal(run_dir / "undo.jsonl")
    for intent in undo.outstanding():
        where = WHERE_FAULTS_LIVE.get(intent.get("kind", ""), "the fault lived in the run")
        gone = report.clean
        report.faults.append(
            f"{intent['name']} ({intent.get('kind')} on {', '.join(intent.get('targets', []))}): "
            + (f"reverted — {where}, and none of them is left" if gone else "STILL PRESENT")
        )
        if gone:
            undo.record_revert(intent["name"], verified=True, how="harness cleanup")
    if journal.scratch_dir and Path(journal.scratch_dir).exists():
        shutil.rmtree(journal.scratch_dir, ignore_errors=True)
    report.scratch_removed = not (journal.scratch_dir and Path(journal.scratch_dir).exists())
    if report.clean:
        journal.status = "crashed"
        journal.verdict = "ERROR"
        journal.error = (
            f"the runner died before finishing; cleaned up by 'harness cleanup' at "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} "
            f"({len(report.killed)} leftover processes killed)"
        )
        journal.ended_at = journal.ended_at or time.time()
        journal.write(journal_path)
    return report
