"""The command line: bad input is refused before anything starts; schema and validate work."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import ExitCode

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
GOOD = (SCENARIOS / "retries-mask-transient-errors.yaml").read_text()


def harness(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


BROKEN = {
    "bad-indentation": (GOOD.replace("  name: shop\n", "  name: shop\n   replicas: {}\n"), 12),
    "unknown-fault-kind": (GOOD.replace("kind: http", "kind: htp"), 29),
    "duplicate-key": (GOOD.replace("load:\n  rate: 40\n", "load:\n  rate: 40\n  rate: 50\n"), 23),
    "python-tag": (
        GOOD.replace("  rate: 40\n", "  rate: !!python/object/apply:os.system ['touch PWNED']\n"),
        22,
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_malformed_scenario_is_refused_before_anything_starts(tmp_path: Path, case: str) -> None:
    text, line = BROKEN[case]
    scenario = tmp_path / f"{case}.yaml"
    scenario.write_text(text)
    reports = tmp_path / "reports"
    result = harness("run", str(scenario), "--reports", str(reports), cwd=tmp_path)
    assert result.returncode == ExitCode.ERROR, result.stdout + result.stderr
    assert re.search(rf"{re.escape(str(scenario))}:{line}:\d+: ", result.stderr), result.stderr
    assert not reports.exists(), "nothing may start for a malformed scenario"
    assert not (tmp_path / "PWNED").exists()


def test_unknown_fault_kind_suggests_the_nearest(tmp_path: Path) -> None:
    scenario = tmp_path / "typo.yaml"
    scenario.write_text(BROKEN["unknown-fault-kind"][0])
    result = harness("validate", str(scenario))
    assert result.returncode == ExitCode.ERROR
    assert "did you mean 'http'?" in result.stderr


def test_validate_accepts_the_shipped_scenarios() -> None:
    files = sorted(str(p) for p in SCENARIOS.glob("*.yaml"))
    result = harness("validate", *files)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok") == len(files)


def test_schema_is_json_schema_naming_istio_fields() -> None:
    result = harness("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    text = json.dumps(schema)
    for name in ("perTryTimeout", "http1MaxPendingRequests", "consecutive5xxErrors", "errorRate"):
        assert name in text
    assert schema["$schema"].startswith("https://json-schema.org/")


def test_missing_scenario_file_is_a_clear_error(tmp_path: Path) -> None:
    result = harness("run", str(tmp_path / "nope.yaml"), "--reports", str(tmp_path / "r"))
    assert result.returncode == ExitCode.ERROR
    assert "nope.yaml" in result.stderr
