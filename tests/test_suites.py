"""Suites: several scenarios in one `harness run`, the pytest plugin, and faults that do nothing.

All real runs, kept short (a few seconds of load each).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import ExitCode
from harness.journal import Journal
from harness.runner import RunOptions, run_scenario
from harness.scenario import load_scenario_text

pytestmark = [pytest.mark.integration, pytest.mark.slow]

pytest_plugins = ["pytester"]

QUICK = """
apiVersion: harness/v1
metadata: {{name: {name}}}
load: {{rate: 20}}
phases:
  - {{name: baseline, duration: 2s}}
  - {{name: fault, duration: 3s}}
faults:
  - {{name: pricing-aborts, kind: http, phase: fault, target: {{service: pricing}},
     abort: {{httpStatus: 503, percentage: {{value: {percent}}}}}}}
mesh:
  destinations:
    pricing: {{retries: {{attempts: 0}}}}
slos:
  - {{name: errors, kind: errorRate, max: {max_rate}, phases: [fault]}}
"""


def quick(name: str, percent: float, max_rate: str) -> str:
    return QUICK.format(name=name, percent=percent, max_rate=max_rate)


def test_a_suite_runs_every_scenario_and_links_the_reports(tmp_path: Path) -> None:
    passing = tmp_path / "passing.yaml"
    passing.write_text(quick("suite-passing", 20, "90%"))
    failing = tmp_path / "failing.yaml"
    failing.write_text(quick("suite-failing", 100, "1%"))
    reports = tmp_path / "reports"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            str(passing),
            str(failing),
            "--reports",
            str(reports),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == ExitCode.FAILED, result.stdout + result.stderr
    index = (reports / "index.html").read_text()
    for name in ("suite-passing", "suite-failing"):
        (report,) = reports.glob(f"{name}/*/report.html")
        assert str(report.relative_to(reports)) in index
    assert "PASS" in index and "FAIL" in index


NO_EFFECT = """
apiVersion: harness/v1
metadata: {name: no-effect}
load: {rate: 20}
phases: [{name: baseline, duration: 2s}, {name: fault, duration: 3s}]
faults:
  # pricing never calls inventory: no packet ever crosses this cut.
  - {name: pointless-cut, kind: partition, phase: fault,
     from: {service: pricing}, to: {service: inventory}}
slos:
  - {name: errors, kind: errorRate, max: 50%}
"""


def test_a_fault_that_never_acts_fails_the_run(tmp_path: Path) -> None:
    scenario = load_scenario_text(NO_EFFECT, "no-effect.yaml")
    result = run_scenario(scenario, options=RunOptions(reports_dir=tmp_path, handle_signals=False))
    assert result.exit_code == ExitCode.FAILED
    (fault,) = result.journal.faults
    assert fault.took_effect is False and fault.revert_verified
    assert any("showed no effect" in problem for problem in result.journal.problems), (
        result.journal.problems
    )
    assert all(entry.verdict == "PASS" for entry in result.journal.slos)


def test_pytest_plugin_runs_scenarios_and_writes_an_index(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    scenario = tmp_path / "plugin.yaml"
    scenario.write_text(quick("via-plugin", 20, "90%"))
    pytester.makepyfile(
        f"""
        def test_scenario(harness_run):
            outcome = harness_run({str(scenario)!r})
            assert outcome.exit_code == 0, outcome.summary
            assert outcome.journal.faults[0].took_effect
        """
    )
    reports = tmp_path / "kept"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--harness-reports={reports}")
    result.assert_outcomes(passed=1)
    (journal,) = reports.glob("via-plugin/*/journal.json")
    assert Journal.read(journal).verdict == "PASS"
    assert (journal.parent / "report.html").exists()
    assert "via-plugin" in (reports / "index.html").read_text()
