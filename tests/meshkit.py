"""Test helpers shared by the integration tests: a deployment that must leave nothing
behind, and reading a proxy's JSON access log while Envoy is still writing it."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.platforms.local import LocalDeployment, LocalPlatform
from harness.platforms.local.processes import namespace_members, run_processes
from harness.scenario.models import Scenario

Entry = dict[str, Any]


def access_entries(
    run_dir: Path | str,
    proxy: str,
    match: Callable[[Entry], bool],
    *,
    expected: int = 1,
    within: float = 10.0,
) -> list[Entry]:
    """``proxy``'s access-log entries that ``match``, once ``expected`` of them are there or
    after ``within`` seconds (Envoy flushes every 250 ms; a torn last line is skipped)."""
    path = Path(run_dir) / "access" / f"{proxy}.jsonl"
    deadline = time.monotonic() + within
    found: list[Entry] = []
    while True:
        entries: list[Entry] = []
        with contextlib.suppress(FileNotFoundError):
            for line in path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    entries.append(json.loads(line))
        found = [entry for entry in entries if match(entry)]
        if len(found) >= expected or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


@contextlib.contextmanager
def deployed(spec: dict[str, Any], run_dir: Path) -> Iterator[LocalDeployment]:
    """Deploy ``spec`` (a scenario as a dict); afterwards prove nothing of the run survives."""
    with LocalPlatform().deploy(Scenario.model_validate(spec), run_dir) as deployment:
        yield deployment
    assert run_processes(run_dir.name) == []
    for namespace in deployment.sandbox.namespaces.values():
        assert namespace_members(namespace, run_dir.name) == []
