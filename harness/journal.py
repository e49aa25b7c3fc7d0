"""The run record: everything a run observed, as versioned JSON (``journal.json``).

Verdicts, the exit code and the HTML report are all computed from this record alone, so a
report can be re-rendered later from the file. Bump :data:`SCHEMA_VERSION` on any change
that an older reader could misread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness.slo.verdict import SloResult

SCHEMA_VERSION = 1


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PhaseWindow(Record):
    name: str
    start: float  # epoch seconds
    end: float


class FaultEntry(Record):
    """What a fault did: its targets, when, the proof it took effect, and its revert.

    Injectors fill it in as they act (``harness.faults``); the journal keeps it as is.
    """

    name: str
    kind: str
    phase: str
    targets: list[str]
    detail: dict[str, Any] = Field(default_factory=dict)
    injected_at: float | None = None
    reverted_at: float | None = None
    revert_verified: bool = False
    evidence: dict[str, int] = Field(default_factory=dict)
    took_effect: bool | None = None
    effect_message: str = ""


class LatencySummary(Record):
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None


class PhaseLoad(Record):
    phase: str
    count: int
    ok: int
    errors: int
    offered_rate: float
    achieved_rate: float
    coordinated_omission: bool
    latency: LatencySummary
    status_counts: dict[str, int]
    message: str | None = None


class LoadRecord(Record):
    target_rate: float
    users: int
    samples_file: str
    phases: list[PhaseLoad]
    warnings: list[str] = Field(default_factory=list)
    exit_code: int | None = None


class EdgeStats(Record):
    """Envoy counters of one mesh edge (caller → callee), summed over the caller's sidecars."""

    caller: str
    callee: str
    phases: dict[str, dict[str, int]]  # phase → counter → increase during the phase
    total: dict[str, int]


class Journal(Record):
    schema_version: int = SCHEMA_VERSION
    run_id: str
    scenario_name: str
    scenario_file: str | None
    scenario: dict[str, Any]
    platform: str
    isolation: str
    isolation_note: str
    namespaces: dict[str, str] = Field(default_factory=dict)
    environment: dict[str, str]
    started_at: float
    ended_at: float | None = None
    status: str = "running"  # running | completed | interrupted | error
    error: str | None = None
    phases: list[PhaseWindow] = Field(default_factory=list)
    faults: list[FaultEntry] = Field(default_factory=list)
    load: LoadRecord | None = None
    edges: list[EdgeStats] = Field(default_factory=list)
    injected: dict[str, dict[str, int]] = Field(default_factory=dict)  # instance → fault counters
    slos: list[SloResult] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    verdict: str = "ERROR"  # PASS | FAIL | INCONCLUSIVE | ERROR | INTERRUPTED

    def write(self, path: Path) -> None:
        """Write atomically (a killed run never leaves a torn journal)."""
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> Journal:
        data = json.loads(path.read_text())
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"{path}: journal schema version {version!r}; this harness reads {SCHEMA_VERSION}"
            )
        return cls.model_validate(data)
