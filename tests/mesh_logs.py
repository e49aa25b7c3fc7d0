"""Test helper: read a proxy's JSON access log while Envoy is still writing it."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
