"""Issue 14's reproducers: writes follow no links, names print literally, bad input exits 2.

Each test is one thing an attacker or a careless user did to the harness; none needs a real
run (a fake deployment stands in where the runner must crash after deploying).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from harness import runner as runner_module
from harness.cli import app
from harness.errors import ExitCode, OutputError, PlatformError
from harness.faults.base import UndoJournal
from harness.files import write_atomic
from harness.journal import FaultEntry, Journal
from harness.platforms.local.deploy import LocalPlatform
from harness.runner import RunOptions, run_scenario
from harness.scenario import load_scenario_text
from harness.slo.verdict import SloResult, Verdict

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
GOOD = (SCENARIOS / "retries-mask-transient-errors.yaml").read_text()


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.exit_code, result.output


def harness(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def a_journal(**fields: Any) -> Journal:
    base: dict[str, Any] = {
        "run_id": "20260101T000000Z-abcdef",
        "scenario_name": "demo",
        "scenario_file": None,
        "scenario": {},
        "platform": "local",
        "isolation": "host",
        "isolation_note": "",
        "environment": {},
        "started_at": 1_795_664_400.0,
        "ended_at": 1_795_664_430.0,
        "status": "completed",
        "verdict": "PASS",
    }
    return Journal(**{**base, **fields})


def slo(name: str, verdict: Verdict = Verdict.PASS, message: str = "ok") -> SloResult:
    return SloResult(
        slo=name,
        kind="errorRate",
        phase="fault",
        verdict=verdict,
        measured=0.001,
        lower=0.0,
        upper=0.004,
        objective=0.01,
        confidence=0.95,
        n=800,
        unit="ratio",
        message=message,
        samples_needed=None,
    )


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "reports" / "demo" / "20260101T000000Z-abcdef"
    directory.mkdir(parents=True)
    a_journal(slos=[slo("e2e")]).write(directory / "journal.json")
    return directory


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text("precious")
    return path


# --------------------------------------------------------------------------- writes


def test_a_planted_tmp_link_is_not_followed_by_report(run_dir: Path, victim: Path) -> None:
    (run_dir / "report.html.tmp").symlink_to(victim)
    (run_dir / "journal.json.tmp").symlink_to(victim)
    code, output = cli("report", str(run_dir / "journal.json"))
    assert code == ExitCode.PASSED, output
    assert victim.read_text() == "precious"
    assert (run_dir / "report.html").read_text().lower().startswith("<!doctype html>")
    a_journal().write(run_dir / "journal.json")
    assert victim.read_text() == "precious"
    leftovers = {p.name for p in run_dir.iterdir()} - {
        "journal.json",
        "report.html",
        "report.html.tmp",
        "journal.json.tmp",
    }
    assert leftovers == set(), "no temporary file may stay behind"


def test_a_link_at_the_target_is_replaced_not_followed(run_dir: Path, victim: Path) -> None:
    (run_dir / "report.html").symlink_to(victim)
    code, _ = cli("report", str(run_dir / "journal.json"))
    assert code == ExitCode.PASSED
    assert victim.read_text() == "precious"
    assert not (run_dir / "report.html").is_symlink()


def test_report_refuses_to_overwrite_its_own_journal(run_dir: Path) -> None:
    journal = run_dir / "journal.json"
    before = journal.read_bytes()
    code, output = cli("report", str(journal), "--out", str(journal))
    assert code == ExitCode.ERROR
    assert "refusing to overwrite the input" in output
    assert journal.read_bytes() == before


def test_report_out_a_directory_writes_report_html_inside(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    out.mkdir()
    code, output = cli("report", str(run_dir / "journal.json"), "--out", str(out))
    assert code == ExitCode.PASSED, output
    assert (out / "report.html").is_file()
    assert not (tmp_path / "site.tmp").exists()
    assert [p.name for p in out.iterdir()] == ["report.html"]


def test_write_atomic_refuses_a_directory_target(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is a directory"):
        write_atomic(tmp_path, "x")


def test_undo_appends_refuse_a_planted_link(tmp_path: Path, victim: Path) -> None:
    (tmp_path / "undo.jsonl").symlink_to(victim)
    undo = UndoJournal(tmp_path / "undo.jsonl")
    with pytest.raises(OutputError):
        undo.record_revert("f", verified=True, how="test")
    assert victim.read_text() == "precious"


def test_written_files_keep_the_usual_permissions(tmp_path: Path) -> None:
    target = write_atomic(tmp_path / "report.html", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


# --------------------------------------------------------------------------- terminal


@pytest.mark.parametrize(
    "name", ["[/]", "[link=https://evil.example]click[/link]", "[bold red]x", "a\\"]
)
def test_markup_in_journal_names_prints_literally(run_dir: Path, name: str) -> None:
    journal = run_dir / "journal.json"
    a_journal(slos=[slo(name, Verdict.FAIL, f"{name} failed")]).write(journal)
    code, output = cli("show", str(journal))
    assert code == ExitCode.FAILED, output
    assert f"{name} failed" in output


def test_emoji_codes_in_data_stay_text(run_dir: Path) -> None:
    journal = run_dir / "journal.json"
    a_journal(slos=[slo("e2e", Verdict.FAIL, ":red_circle: failed")]).write(journal)
    _, output = cli("show", str(journal))
    assert ":red_circle: failed" in output


def test_escape_sequences_from_data_never_reach_the_terminal(run_dir: Path) -> None:
    journal = run_dir / "journal.json"
    evil = "\x1b[2J\x1b]0;pwned\x07\u202e"
    fault = FaultEntry(
        name="f", kind="http", phase="fault", targets=["x"], effect_message=f"hit {evil}"
    )
    a_journal(
        scenario_name=f"demo{evil}",
        slos=[slo("e2e", Verdict.FAIL, f"bad {evil}")],
        faults=[fault],
        problems=[f"problem {evil}"],
    ).write(journal)
    result = harness("show", str(journal))
    for stream in (result.stdout, result.stderr):
        assert "\x1b" not in stream and "\x07" not in stream and "\u202e" not in stream
    assert "\\x1b[2J" in result.stdout and "\\u202e" in result.stdout


def test_show_prints_the_verdict_it_exits_with(run_dir: Path) -> None:
    journal = run_dir / "journal.json"
    a_journal(status="error", error="boom", verdict="PASS").write(journal)  # hand-edited
    code, output = cli("show", str(journal))
    assert code == ExitCode.ERROR
    assert "PASS" not in output and "ERROR" in output


# --------------------------------------------------------------------------- bad input


def bad_journals() -> dict[str, str]:
    good = a_journal().model_dump(mode="json")
    text = json.dumps(good)
    return {
        "nested-1000": '{"a": ' + "[" * 1000 + "]" * 1000 + "}",
        "nested-100": json.dumps({**good, "scenario": json.loads("[" * 100 + "]" * 100)}),
        "top-level-list": "[1, 2]",
        "top-level-string": '"journal"',
        "infinity": text.replace('"started_at": 1795664400.0', '"started_at": Infinity'),
        "huge-float": text.replace('"started_at": 1795664400.0', '"started_at": 1e400'),
        "schema-version-true": text.replace('"schema_version": 1', '"schema_version": true'),
        "not-utf8": "\udcff",
        "empty": "",
        "wrong-type": text.replace('"started_at": 1795664400.0', '"started_at": "noon"'),
    }


@pytest.mark.parametrize("case", sorted(bad_journals()))
@pytest.mark.parametrize("command", ["show", "report"])
def test_bad_journals_exit_2_with_one_line(tmp_path: Path, case: str, command: str) -> None:
    path = tmp_path / "journal.json"
    path.write_text(bad_journals()[case], errors="surrogateescape")
    code, output = cli(command, str(path))
    assert code == ExitCode.ERROR, output
    assert len(output.strip().splitlines()) == 1, output
    assert str(path) in output and "Traceback" not in output
    assert not (tmp_path / "report.html").exists()


@pytest.mark.parametrize("command", ["validate", "show", "report"])
def test_a_fifo_as_input_is_refused_at_once(tmp_path: Path, command: str) -> None:
    fifo = tmp_path / "input"
    os.mkfifo(fifo)
    result = harness(command, str(fifo))  # a hang fails on the timeout
    assert result.returncode == ExitCode.ERROR, result.stderr
    assert "not a regular file" in result.stderr


def test_yaml_nested_326_deep_is_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("apiVersion: harness/v1\nmetadata: " + "[" * 326 + "]" * 326 + "\n")
    code, output = cli("validate", str(path))
    assert code == ExitCode.ERROR
    assert "nested more than 32 levels deep" in output


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("name: retries-mask-transient-errors", 'name: "x\\n"'), "is not a valid name"),
        (("name: e2e-error-rate", "name: '[/]'"), "is not a valid name"),
        (("name: catalog-0-aborts", 'name: "a\\e[2Jb"'), "is not a valid name"),
        (("rate: 40", "rate: true"), "load.rate: expected a valid number"),
        (("quantile: 0.99", "quantile: .nan"), "expected a finite number"),
        (("catalog: 3", "catalog: '3'"), "expected a valid integer"),
        (("apiVersion: harness/v1\n", ""), "missing required field 'apiVersion'"),
        (("  rate: 40\n", "  rate: 40\n  requestTimeout: 0s\n"), "greater than 0"),
        (("duration: 20s", "duration: " + "9" * 400 + "h"), "not a duration"),
        (("duration: 20s", "duration: 25h"), "longer than a day"),
        (("duration: 20s", "duration: \u0662\u0660s"), "not a duration"),
        (("description: ", "description: " + "x" * 5000 + " "), "at most 4096 characters"),
        (("  rate: 40\n", '  rate: 40\n  "\\e]0;pwned\\a": 1\n'), "unknown field '\\x1b]0;"),
    ],
)
def test_what_cannot_run_does_not_validate(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    assert edit[0] in GOOD, edit
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace(edit[0], edit[1], 1))
    code, output = cli("validate", str(path))
    assert code == ExitCode.ERROR, output
    assert message in output
    assert "\x1b" not in output


def test_the_name_rule_is_a_full_match() -> None:
    with pytest.raises(Exception, match="is not a valid name"):
        load_scenario_text(GOOD.replace("name: retries-mask-transient-errors", 'name: "x\\n"'))


def test_limits_are_checked_in_linear_time(tmp_path: Path) -> None:
    """100k faults written as aliases in a small file: refused without expanding them."""
    lines = ["x-fault: &l0 {kind: kill, phase: fault, target: {service: catalog}}"]
    for level in range(1, 6):  # each level: ten aliases of the one before → 10**5 faults
        lines.append(f"x{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]")
    text = GOOD + "\n".join(lines)
    path = tmp_path / "bomb.yaml"
    path.write_text(text + "\n")
    started = time.monotonic()
    code, output = cli("validate", str(path))
    assert code == ExitCode.ERROR
    assert "expands to more than" in output
    assert time.monotonic() - started < 30  # generous: the old quadratic check took minutes


def test_a_large_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(GOOD.replace("description: ", "description: " + "x" * 2_000_000 + " "))
    code, output = cli("validate", str(path))
    assert code == ExitCode.ERROR
    assert "at most 1048576 bytes" in output


def test_reports_naming_a_regular_file_is_exit_2(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(GOOD)
    reports = tmp_path / "reports"
    reports.write_text("")
    code, output = cli("run", str(scenario), "--reports", str(reports))
    assert code == ExitCode.ERROR
    assert "not a directory" in output


def test_bogus_isolation_is_exit_2_before_anything_starts(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(GOOD)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = harness(
        "run",
        str(scenario),
        "--reports",
        str(tmp_path / "reports"),
        env={"HARNESS_ISOLATION": "bogus", "TMPDIR": str(scratch)},
    )
    assert result.returncode == ExitCode.ERROR, result.stderr
    assert "HARNESS_ISOLATION='bogus' is not one of: auto, namespace, host" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(scratch.iterdir()) == []


def test_bogus_isolation_leaks_no_scratch_dir_from_the_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_ISOLATION", "bogus")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    scenario = load_scenario_text(GOOD)
    with (
        pytest.raises(PlatformError, match="HARNESS_ISOLATION"),
        LocalPlatform().deploy(scenario, tmp_path / "run"),
    ):
        pass
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("hrn-")] == []


# --------------------------------------------------------------------------- runner


class _FakePlatform:
    """Stands in for the local platform (no processes): records that it was stopped."""

    stopped: ClassVar[list[bool]] = []

    def __init__(self, isolation: object, mesh: object = None, seed: object = None) -> None:
        pass

    @contextlib.contextmanager
    def deploy(self, scenario: object, run_dir: Path) -> Iterator[object]:
        sandbox = SimpleNamespace(note="fake", namespaces={})
        try:
            yield SimpleNamespace(
                isolation="host",
                isolation_note="fake",
                sandbox=sandbox,
                namespaces=sandbox.namespaces,
                scratch_dir=run_dir / "scratch",
                instances=[],
                control_plane=lambda: None,
                collect_logs=lambda: None,
            )
        finally:
            _FakePlatform.stopped.append(True)


def test_a_crash_after_deployment_is_recorded_and_everything_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(self: object, deployment: object) -> None:
        raise ZeroDivisionError("a bug in the harness")

    monkeypatch.setattr(runner_module, "LocalPlatform", _FakePlatform)
    monkeypatch.setattr(runner_module.Run, "execute", crash)
    _FakePlatform.stopped.clear()
    result = run_scenario(
        load_scenario_text(GOOD),
        options=RunOptions(reports_dir=tmp_path, handle_signals=False),
    )
    journal = Journal.read(result.journal_path)
    assert result.exit_code == ExitCode.ERROR
    assert journal.status == "error" and journal.verdict == "ERROR"
    assert "ZeroDivisionError: a bug in the harness" in (journal.error or "")
    assert _FakePlatform.stopped == [True]
    assert journal.runner_pid == os.getpid() and journal.runner_start is not None
    # The runner's lock is released: cleanup would now see a dead (finished) run.
    from harness.runlock import claim_dead_run

    claim = claim_dead_run(result.run_dir, None, None)
    assert not isinstance(claim, str)
    claim.release()
