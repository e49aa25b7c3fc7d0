"""pytest fixtures for running harness scenarios in CI (registered as the ``harness`` plugin).

::

    def test_retries_mask_errors(harness_run):
        result = harness_run("scenarios/retries-mask-transient-errors.yaml")
        assert result.exit_code == 0, result.summary

The library does the work; this file only adds fixtures and an option:
``--harness-reports DIR`` (or ``HARNESS_REPORTS``) keeps the run records, with each run's
``report.html`` and, at the end of the session, an ``index.html`` linking them all; by
default they go to pytest's temporary directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the heavy parts load only when a test runs a scenario
    from harness.errors import ExitCode
    from harness.journal import Journal
    from harness.runner import RunResult


@dataclass(frozen=True)
class ScenarioOutcome:
    """What a test needs from a run: the exit code, the journal and a readable summary."""

    result: RunResult

    @property
    def exit_code(self) -> ExitCode:
        return self.result.exit_code

    @property
    def journal(self) -> Journal:
        return self.result.journal

    @property
    def summary(self) -> str:
        journal = self.journal
        lines = [f"{journal.scenario_name}: {journal.verdict} ({self.result.journal_path})"]
        lines += [entry.message for entry in journal.slos if entry.verdict != "PASS"]
        lines += journal.problems
        if journal.error:
            lines.append(journal.error)
        return "\n".join(lines)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "chaos scenarios")
    group.addoption(
        "--harness-reports",
        default=os.environ.get("HARNESS_REPORTS"),
        help="directory for scenario run records (default: pytest's tmp dir)",
    )


@pytest.fixture
def harness_reports(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Where this test's run records go (override the fixture to change it)."""
    option = request.config.getoption("--harness-reports")
    return Path(option) if option else tmp_path / "reports"


_WRITTEN = pytest.StashKey[list[Path]]()


@pytest.fixture
def harness_run(
    harness_reports: Path, request: pytest.FixtureRequest
) -> Callable[..., ScenarioOutcome]:
    """Run a scenario file on the local platform, write its report, return its outcome."""

    def run(path: str | os.PathLike[str], **options: object) -> ScenarioOutcome:
        from harness.report import write_report
        from harness.runner import RunOptions, run_scenario
        from harness.scenario import load_scenario

        scenario = load_scenario(Path(path))
        run_options = RunOptions(reports_dir=harness_reports, handle_signals=False)
        for key, value in options.items():
            setattr(run_options, key, value)
        outcome = ScenarioOutcome(run_scenario(scenario, source=str(path), options=run_options))
        request.config.stash.setdefault(_WRITTEN, []).append(
            write_report(outcome.result.journal_path)
        )
        return outcome

    return run


def pytest_sessionfinish(session: pytest.Session) -> None:
    """With --harness-reports, link every report of the session from one index page."""
    option = session.config.getoption("--harness-reports")
    written = session.config.stash.get(_WRITTEN, [])
    if option and written:
        from harness.report import write_index

        write_index(written, Path(option) / "index.html")
