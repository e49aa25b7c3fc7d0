"""Journal builders shared by the tests: a run record with every required field, by hand.

``new_journal(**fields)`` is a journal as a run starts it; tests set what they exercise::

    journal = new_journal(status="error", error="PlatformError: envoy did not start")
    journal = new_journal(phases=phase_windows(T0, baseline=10, fault=20))
"""

from __future__ import annotations

from typing import Any

from harness.journal import Journal, PhaseWindow

T0 = 1_800_000_000.0


def new_journal(**fields: Any) -> Journal:
    """A journal with placeholder identity and environment; ``fields`` override any field."""
    values: dict[str, Any] = {
        "run_id": "20260101T000000Z-test",
        "scenario_name": "test",
        "scenario_file": None,
        "scenario": {},
        "platform": "local",
        "isolation": "none",
        "isolation_note": "hand-built",
        "environment": {},
        "started_at": T0,
        **fields,
    }
    return Journal(**values)


def phase_windows(start: float, **durations: float) -> list[PhaseWindow]:
    """Back-to-back phases from ``start``: ``phase_windows(T0, baseline=10, fault=20)``."""
    windows = []
    for name, duration in durations.items():
        windows.append(PhaseWindow(name=name, start=start, end=start + duration))
        start += duration
    return windows
