"""``harness cleanup``: find what killed runs left behind, remove it, and prove it.

A run whose runner died (``kill -9``, a power cut, OOM) never finalised its journal: its
status is still ``running``. On the local platform everything a run changes lives in
processes that carry the run's id (``HARNESS_RUN_ID``) inside the run's namespaces — Envoy
runtime overrides in the sidecars, toxics in the toxiproxy server, nft rules in the network
namespace — so removing those processes removes every fault, and reading ``/proc`` back
proves it. Normally the run's supervisor has already done this on its own (it exits when the
runner's pipe closes); cleanup is the check, and the remedy when something survived.

A safety tool must never be what does damage, so cleanup acts only on what the harness
provably made, and only for runs whose runner is provably dead:

* a run is touched only when its runner's lock can be taken, or, without a lock file, its
  recorded PID and start time name no live process (:mod:`harness.runlock`); a live run is
  reported and left alone;
* processes are found by the run's id only; the run directory must be
  ``<reports>/<scenario>/<run id>`` (no link on the way) and the journal's ``run_id`` must
  be that directory's name;
* the scratch directory is removed only if it is a ``hrn-*`` directory directly inside the
  system temporary directory, owned by this user, and not a link;
* an unreadable journal or a malformed undo line is reported and skipped; it never stops
  the cleanup of the other runs;
* a ``--platform kube`` run (``journal.kube``): its recorded kubeconfig and context are
  pinned and must pass the context guard again (kind, the harness's own cluster, or
  ``HARNESS_KUBE_ALLOW_CONTEXTS``) and still name the recorded server; then only what carries
  ``harness/run-id=<run id>`` is deleted — namespaces read back first (label checked, deleted
  with their uid as a precondition), cluster-scoped objects likewise — and a namespace whose
  ``harness/runner`` annotation names a live runner is left alone. A cluster that cannot be
  reached leaves the run open (not clean), so a later cleanup tries again.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.faults.base import UndoJournal
from harness.journal import Journal, KubeRunRecord
from harness.platforms.kube.client import RUNNER_ANNOTATION, KubeClient
from harness.platforms.kube.context import pin_context
from harness.platforms.local.processes import (
    RunProcess,
    environ_value,
    namespace_members,
    run_processes,
)
from harness.runlock import RUNNER_ENV, claim_dead_run, marker_alive

WHERE_FAULTS_LIVE = {
    "http": "Envoy runtime overrides live in the run's sidecars",
    "toxic": "toxics live in the run's toxiproxy server",
    "partition": "nft rules live in the run's network namespace",
    "kill": "killed instances belonged to the run's namespace",
    "pause": "paused processes belonged to the run's namespace",
    "controlPlane": "istiod, the API server and xDS cuts lived in the run's namespace",
}
WHERE_FAULTS_LIVE_KUBE = "the fault lived in the run's namespace in the cluster, now deleted"


# tempfile.mkdtemp(prefix="hrn-") names: the prefix and 8 characters of [a-z0-9_].
_SCRATCH_NAME = re.compile(r"hrn-[a-z0-9_]{1,32}")


@dataclass
class CleanupReport:
    """What cleanup did for one run (or, with ``skipped``, why it left the run alone)."""

    run_dir: Path
    run_id: str
    killed: list[RunProcess] = field(default_factory=list)
    remaining: list[RunProcess] = field(default_factory=list)
    namespace_members: dict[str, list[int]] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)  # what happened to each open fault intent
    scratch_removed: bool = False
    kube_deleted: list[str] = field(default_factory=list)  # namespaces and cluster objects
    kube_problem: str | None = None  # why the run's cluster objects may still be there
    notes: list[str] = field(default_factory=list)  # skipped undo lines, a kept scratch dir
    skipped: str | None = None  # why the run was not touched (a live runner, ...)

    @property
    def clean(self) -> bool:
        return (
            self.skipped is None
            and not self.remaining
            and not any(self.namespace_members.values())
            and self.kube_problem is None
        )


@dataclass(frozen=True)
class Unreadable:
    """A journal cleanup could not use, and why (reported, then skipped)."""

    path: Path
    reason: str


def unfinished_runs(reports_dir: Path) -> tuple[list[Path], list[Unreadable]]:
    """Journals of runs that never finished (status ``running``), oldest first, and the
    journals under ``reports_dir`` that could not be read (each with its reason).

    Only ``<reports>/<scenario>/<run id>/journal.json`` counts, with no link on the way:
    a link could point cleanup at another tree.
    """
    found: list[Path] = []
    unreadable: list[Unreadable] = []
    if not reports_dir.exists():
        return found, unreadable  # no runs at all
    if not reports_dir.is_dir():
        raise HarnessError(f"{reports_dir}: not a directory of run records (--reports)")
    for path in sorted(reports_dir.glob("*/*/journal.json")):
        reason = _not_a_run_record(reports_dir, path)
        if reason is None:
            try:
                journal = Journal.read(path)
            except (OSError, ValueError) as exc:
                reason = str(exc)
            else:
                if journal.status == "running":
                    if journal.run_id != path.parent.name:
                        reason = (
                            f"its run_id {journal.run_id!r} is not its directory's name "
                            f"{path.parent.name!r}; not touching it"
                        )
                    else:
                        found.append(path)
        if reason is not None:
            unreadable.append(Unreadable(path, reason))
    return found, unreadable


def _not_a_run_record(reports_dir: Path, journal_path: Path) -> str | None:
    """Why ``journal_path`` is not a run record of ``reports_dir`` the harness made, or None."""
    for part in (journal_path.parent.parent, journal_path.parent, journal_path):
        try:
            mode = os.lstat(part).st_mode
        except OSError as exc:
            return f"{part}: {exc.strerror}"
        if stat.S_ISLNK(mode):
            return f"{part} is a symbolic link; run records are never links"
    if not stat.S_ISREG(os.lstat(journal_path).st_mode):
        return f"{journal_path} is not a regular file"
    try:
        journal_path.resolve().relative_to(reports_dir.resolve())
    except ValueError:
        return f"{journal_path} lies outside {reports_dir}"
    return None


def scratch_dir_problem(scratch: str) -> str | None:
    """Why ``scratch`` is not a scratch directory the harness made, or None if it is one.

    The harness makes it with ``tempfile.mkdtemp(prefix="hrn-")``: directly inside the
    system temporary directory, owned by this user, a real directory (not a link).
    """
    path = Path(scratch)
    temp = Path(tempfile.gettempdir())
    if not path.is_absolute() or path.parent != temp or os.path.normpath(scratch) != scratch:
        return f"{scratch!r} is not directly inside {temp}"
    if not _SCRATCH_NAME.fullmatch(path.name):
        return f"{scratch!r} is not named like a harness scratch directory (hrn-*)"
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None  # nothing to remove
    except OSError as exc:
        return f"{scratch!r}: {exc.strerror}"
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        return f"{scratch!r} is not a directory (a link?)"
    if info.st_uid != os.getuid():
        return f"{scratch!r} belongs to uid {info.st_uid}, not to this user"
    return None


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
    """Remove what one unfinished run left, verify by reading back, and close its journal.

    A run whose runner is still alive (or cannot be proven dead) is left untouched: the
    report's ``skipped`` says why. Raises ``OSError``/``ValueError`` for a journal that
    cannot be read.
    """
    journal = Journal.read(journal_path)
    run_dir = journal_path.parent
    report = CleanupReport(run_dir=run_dir, run_id=journal.run_id)
    claim = claim_dead_run(run_dir, journal.runner_pid, journal.runner_start)
    if isinstance(claim, str):
        report.skipped = claim
        return report
    with claim:  # held while cleaning, so two cleanups never work on one run
        # The runner writes its final journal before it drops the lock: read it again.
        journal = Journal.read(journal_path)
        if journal.status != "running":
            report.skipped = f"it finished meanwhile ({journal.status})"
            return report
        # The journal may lie (or be a copy naming another run's id): the run's processes
        # name their runner themselves, and a live one keeps them safe.
        live = _live_runner(journal.run_id)
        if live is not None:
            report.skipped = live
            return report
        _cleanup_dead_run(journal, journal_path, report)
    return report


def _live_runner(run_id: str) -> str | None:
    """Why the run must be left alone if one of its processes names a live runner."""
    for proc in run_processes(run_id):
        marker = environ_value(proc.pid, RUNNER_ENV)
        if marker is not None and marker_alive(marker):
            runner = marker.partition(":")[0]
            return f"its runner is alive (pid {runner}, named by the run's process {proc.pid})"
    return None


def _cleanup_dead_run(journal: Journal, journal_path: Path, report: CleanupReport) -> None:
    report.killed, report.remaining = _kill_all(journal.run_id)
    if journal.kube is not None:
        _cleanup_kube(journal.run_id, journal.kube, report)
    report.namespace_members = {
        kind: namespace_members(ns, journal.run_id) for kind, ns in journal.namespaces.items()
    }
    undo = UndoJournal(journal_path.parent / "undo.jsonl")
    try:
        intents, skipped_lines = undo.read()
    except (OSError, ValueError) as exc:
        intents, skipped_lines = [], [f"undo journal unreadable: {exc}"]
    report.notes.extend(skipped_lines)
    for intent in intents:
        kind = str(intent.get("kind", ""))
        where = (
            WHERE_FAULTS_LIVE_KUBE
            if journal.kube is not None
            else WHERE_FAULTS_LIVE.get(kind, "the fault lived in the run")
        )
        targets = intent.get("targets")
        on = ", ".join(map(str, targets)) if isinstance(targets, list) else "?"
        gone = report.clean
        report.faults.append(
            f"{intent['name']} ({kind} on {on}): "
            + (f"reverted — {where}, and none of them is left" if gone else "STILL PRESENT")
        )
        if gone:
            undo.record_revert(intent["name"], verified=True, how="harness cleanup")
    if journal.scratch_dir:
        problem = scratch_dir_problem(journal.scratch_dir)
        if problem is None:
            shutil.rmtree(journal.scratch_dir, ignore_errors=True)  # never follows links
            report.scratch_removed = not os.path.lexists(journal.scratch_dir)
        else:
            report.notes.append(f"scratch directory left alone: {problem}")
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


def _live_namespace(item: Mapping[str, Any]) -> str | None:
    """Why a run's namespace must be left alone: its annotation names a live runner."""
    marker = ((item.get("metadata") or {}).get("annotations") or {}).get(RUNNER_ANNOTATION)
    if isinstance(marker, str) and marker_alive(marker):
        return f"its runner is alive ({marker})"
    return None


def _cleanup_kube(run_id: str, record: KubeRunRecord, report: CleanupReport) -> None:
    """Delete the run's namespace and labelled cluster objects (see the module's rules)."""
    try:
        context = pin_context(Path(record.kubeconfig), context=record.context)
    except HarnessError as exc:
        report.kube_problem = f"the run's cluster was not touched: {exc}"
        return
    if context.server != record.server:
        report.kube_problem = (
            f"context {record.context} in {record.kubeconfig} now points to {context.server}, "
            f"not to the run's {record.server}: not touched"
        )
        return
    client = KubeClient(context, run_id)
    try:
        deleted = client.delete_owned(spare=_live_namespace)
    except HarnessError as exc:
        report.kube_problem = f"cleaning the run's cluster objects failed: {exc}"
        return
    finally:
        client.close()
    report.kube_deleted = [*deleted.namespaces, *deleted.objects]
    if deleted.left_alone:
        report.kube_problem = "left alone: " + "; ".join(deleted.left_alone)
