"""``harness cleanup`` acts only on what the harness provably made, for dead runs only.

Reproducers of issue 14: a journal edited to name any directory as its ``scratch_dir`` must
not get that directory deleted; a cleanup during a live run must leave the run alone; a bad
journal or undo line is reported and skipped without stopping the cleanup of other runs.
No real run is needed: a run record and a process carrying the run id stand in for one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from journals import new_journal
from typer.testing import CliRunner

from harness.cleanup import scratch_dir_problem
from harness.cli import app
from harness.errors import ExitCode
from harness.faults.base import UndoJournal
from harness.journal import Journal
from harness.platforms.local.processes import run_processes
from harness.runlock import RUNNER_ENV, RunnerLock, process_start, runner_marker


def cleanup(reports: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["cleanup", "--reports", str(reports)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def make_run(
    reports: Path,
    run_id: str,
    *,
    scratch_dir: str | None = None,
    lock: bool = True,
    runner: tuple[int, int] | None = None,
) -> Path:
    """A run record as a killed runner leaves it: status running, an unheld lock file."""
    run_dir = reports / "victimized" / run_id
    run_dir.mkdir(parents=True)
    if lock:
        RunnerLock.acquire(run_dir).release()
    return write_journal(run_dir, run_id, scratch_dir=scratch_dir, runner=runner)


def write_journal(
    run_dir: Path,
    run_id: str,
    *,
    scratch_dir: str | None = None,
    runner: tuple[int, int] | None = None,
) -> Path:
    """A journal still ``running``, naming its runner's PID and start time if given."""
    path = run_dir / "journal.json"
    new_journal(
        run_id=run_id,
        scenario_name="victimized",
        isolation="host",
        isolation_note="",
        started_at=time.time(),
        scratch_dir=scratch_dir,
        runner_pid=runner[0] if runner else None,
        runner_start=runner[1] if runner else None,
    ).write(path)
    return path


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    return precious


def test_a_journal_naming_any_directory_cannot_get_it_deleted(tmp_path: Path, victim: Path) -> None:
    reports = tmp_path / "reports"
    path = make_run(reports, "20260101T000000Z-aaaaaa", scratch_dir=str(victim))
    code, output = cleanup(reports)
    assert (victim / "thesis.tex").read_text() == "years of work"
    assert "scratch directory left alone" in output and str(victim) in output
    assert code == ExitCode.PASSED, output
    assert Journal.read(path).status == "crashed"  # the dead run itself is still closed


@pytest.fixture
def linked_scratch(victim: Path) -> Iterator[Path]:
    link = Path(tempfile.mkdtemp(prefix="hrn-"))
    link.rmdir()
    link.symlink_to(victim)
    yield link
    link.unlink()


def test_a_hrn_link_in_the_temp_dir_is_not_followed(
    tmp_path: Path, victim: Path, linked_scratch: Path
) -> None:
    reports = tmp_path / "reports"
    make_run(reports, "20260101T000000Z-bbbbbb", scratch_dir=str(linked_scratch))
    _, output = cleanup(reports)
    assert (victim / "thesis.tex").exists() and linked_scratch.is_symlink()
    assert "left alone" in output


@pytest.mark.parametrize(
    "scratch",
    [
        "/",
        "relative/hrn-abc",
        f"{tempfile.gettempdir()}/hrn-abc/../..",
        f"{tempfile.gettempdir()}/not-ours",
        f"{tempfile.gettempdir()}/hrn-abc/nested",
        f"{tempfile.gettempdir()}/hrn-a\nb",
    ],
)
def test_only_hrn_directories_directly_in_the_temp_dir_qualify(scratch: str) -> None:
    assert scratch_dir_problem(scratch) is not None


def test_the_real_scratch_dir_of_a_dead_run_is_removed(tmp_path: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="hrn-"))
    (scratch / "admin.sock").write_text("")
    reports = tmp_path / "reports"
    make_run(reports, "20260101T000000Z-cccccc", scratch_dir=str(scratch))
    code, output = cleanup(reports)
    assert code == ExitCode.PASSED, output
    assert not scratch.exists()


LIVE_RUNNER = """
import os, subprocess, sys, time
from pathlib import Path
from harness.runlock import RunnerLock
run_dir, run_id, ready = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
from harness.runlock import RUNNER_ENV, runner_marker
lock = RunnerLock.acquire(run_dir) if sys.argv[4] == "lock" else None
marker = {RUNNER_ENV: runner_marker(os.getpid())} if sys.argv[4] == "marker" else {}
child = subprocess.Popen(["sleep", "60"], env={**os.environ, "HARNESS_RUN_ID": run_id, **marker})
ready.write_text(str(child.pid))
time.sleep(60)
"""


@pytest.mark.parametrize("evidence", ["lock", "pid-and-start-time"])
def test_cleanup_during_a_live_run_leaves_it_alone(tmp_path: Path, evidence: str) -> None:
    reports = tmp_path / "reports"
    run_id = "20260101T000000Z-dddddd"
    run_dir = reports / "victimized" / run_id
    run_dir.mkdir(parents=True)
    ready = tmp_path / "ready"
    runner = subprocess.Popen(
        [sys.executable, "-c", LIVE_RUNNER, str(run_dir), run_id, str(ready), evidence]
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), "the stand-in runner did not start"
        start = process_start(runner.pid)
        assert start is not None
        journal = write_journal(run_dir, run_id, runner=(runner.pid, start))
        UndoJournal(run_dir / "undo.jsonl")._append(
            {"event": "intent", "name": "f", "kind": "http", "targets": ["catalog-0"]}
        )
        before = journal.read_bytes()
        code, output = cleanup(reports)
        assert code == ExitCode.PASSED, output
        assert f"{run_id}: left alone: its runner is alive" in output
        assert [p.pid for p in run_processes(run_id)] == [int(ready.read_text())]
        assert journal.read_bytes() == before
        assert len(UndoJournal(run_dir / "undo.jsonl").outstanding()) == 1
    finally:
        for proc in run_processes(run_id):
            os.kill(proc.pid, 9)
        runner.kill()
        runner.wait()


def test_no_proof_of_death_means_no_cleanup(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    path = make_run(reports, "20260101T000000Z-eeeeee", lock=False)
    code, output = cleanup(reports)
    assert "cannot prove that its runner is dead" in output
    assert Journal.read(path).status == "running"
    assert code == ExitCode.PASSED


def test_a_reused_pid_is_not_a_live_runner(tmp_path: Path) -> None:
    """The PID is alive (it is this test) but started at another time: the runner is dead."""
    reports = tmp_path / "reports"
    start = process_start(os.getpid())
    assert start is not None
    path = make_run(reports, "20260101T000000Z-ffffff", lock=False, runner=(os.getpid(), start + 1))
    code, output = cleanup(reports)
    assert code == ExitCode.PASSED, output
    assert Journal.read(path).status == "crashed"


def test_bad_journals_and_undo_lines_are_reported_and_skipped(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    good = make_run(reports, "20260101T000000Z-111111")
    (good.parent / "undo.jsonl").write_text(
        "[1, 2]\n"
        '{"event": "intent"}\n'
        '{"event": "intent", "name": "catalog-aborts", "kind": "http", "targets": ["x"]}\n'
        "not json at all\n"
        '{"event": "intent", "name": ["not", "a", "name"]}\n'
    )
    for name, text in {
        "a-list": "[]",
        "deep": "[" * 1000 + "]" * 1000,
        "infinite": '{"schema_version": 1, "started_at": Infinity}',
        "not-utf8": "\udcff",
    }.items():
        bad = reports / "broken" / name
        bad.mkdir(parents=True)
        (bad / "journal.json").write_text(text, errors="surrogateescape")
    tampered = make_run(reports, "20260101T000000Z-222222")
    data = json.loads(tampered.read_text())
    data["run_id"] = "someone-elses-run"
    tampered.write_text(json.dumps(data))

    code, output = cleanup(reports)
    assert code == ExitCode.ERROR, output  # records could not be read: said, not hidden
    assert Journal.read(good).status == "crashed"
    assert UndoJournal(good.parent / "undo.jsonl").outstanding() == []
    assert "catalog-aborts (http on x): reverted" in output
    assert output.count("not an undo entry; skipped") == 4
    for name in ("a-list", "deep", "infinite", "not-utf8"):
        assert f"skipped {reports / 'broken' / name / 'journal.json'}" in output
    assert "is not its directory's name" in output
    assert Journal.read(tampered).status == "running"
    assert "Traceback" not in output


def test_a_run_directory_reached_through_a_link_is_skipped(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    path = make_run(elsewhere, "20260101T000000Z-333333")
    reports = tmp_path / "reports"
    (reports / "victimized").mkdir(parents=True)
    (reports / "victimized" / path.parent.name).symlink_to(path.parent)
    code, output = cleanup(reports)
    assert "is a symbolic link" in output and code == ExitCode.ERROR
    assert Journal.read(path).status == "running"


def test_reports_naming_a_file_is_exit_2(tmp_path: Path) -> None:
    file = tmp_path / "reports"
    file.write_text("")
    code, output = cleanup(file)
    assert code == ExitCode.ERROR and "not a directory" in output
    code, output = cleanup(tmp_path / "missing")
    assert code == ExitCode.PASSED and "no unfinished runs" in output


def test_a_journal_copy_naming_a_live_run_cannot_get_it_killed(tmp_path: Path) -> None:
    """A record elsewhere (free lock, no PID) names a live run's id: its processes say whose
    they are, and their runner is alive."""
    run_id = "20260101T000000Z-444444"
    live_dir = tmp_path / "live" / "victimized" / run_id
    live_dir.mkdir(parents=True)
    ready = tmp_path / "ready"
    runner = subprocess.Popen(
        [sys.executable, "-c", LIVE_RUNNER, str(live_dir), run_id, str(ready), "marker"]
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), "the stand-in runner did not start"
        copy = make_run(tmp_path / "elsewhere", run_id)
        code, output = cleanup(tmp_path / "elsewhere")
        assert code == ExitCode.PASSED, output
        assert f"{run_id}: left alone: its runner is alive (pid {runner.pid}" in output
        assert [p.pid for p in run_processes(run_id)] == [int(ready.read_text())]
        assert Journal.read(copy).status == "running"
    finally:
        for proc in run_processes(run_id):
            os.kill(proc.pid, 9)
        runner.kill()
        runner.wait()


def test_the_runner_marker_names_this_process() -> None:
    marker = runner_marker(os.getpid())
    assert marker == f"{os.getpid()}:{process_start(os.getpid())}"
    assert RUNNER_ENV == "HARNESS_RUNNER"
