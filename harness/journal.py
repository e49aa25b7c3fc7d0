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


class LoadTimeline(Record):
    """Per-second view of the load at the ingress; bucket ``i`` covers ``[t[i], t[i] + 1)``.

    ``t`` is in seconds since the run's ``load_started_at``; lists have equal lengths.
    """

    t: list[float]
    offered: list[float]  # target arrival rate, req/s
    achieved: list[int]  # requests started in the bucket
    errors: list[int]  # of those, failed (non-2xx or transport error)
    p50_ms: list[float | None]
    p95_ms: list[float | None]
    p99_ms: list[float | None]


class EdgeSeries(Record):
    """Per-second increases of one edge's Envoy counters (summed over the caller's sidecars)."""

    caller: str
    callee: str
    counters: dict[str, list[int]]  # e.g. "upstream_rq_retry" → one value per second


class MeshTimeline(Record):
    """Mesh signals sampled about once a second from every sidecar's admin API."""

    t: list[float]  # seconds since load_started_at, one per sample
    # each series value: the increase since the previous sample (the first: since t≈0)
    edges: list[EdgeSeries]
    # "caller proxy→instance" (e.g. "frontend-0→catalog-1") → health per sample: "healthy",
    # "ejected" (failed_outlier_check), "unhealthy", "unknown" (no answer), ...
    endpoints: dict[str, list[str]] = Field(default_factory=dict)
    # instance → faults injected by its sidecar during each interval ("aborts"/"delays")
    injected: dict[str, dict[str, list[int]]] = Field(default_factory=dict)
    # proxy → the sample times (t) at which its admin API did not answer (its values are 0)
    gaps: dict[str, list[float]] = Field(default_factory=dict)
    scrape_errors: dict[str, str] = Field(default_factory=dict)  # proxy → last error seen
    scrape_ms: list[float] = Field(default_factory=list)  # how long each sample's scrape took


class Hop(Record):
    """One proxy's access-log entry for a request."""

    proxy: str  # "ingress", "frontend-0", ...
    direction: str  # "ingress" | "inbound" | "outbound"
    authority: str
    path: str
    status: int
    flags: str  # Envoy %RESPONSE_FLAGS%, "-" when none
    upstream: str
    attempts: int
    ms: int
    start: float


class RequestPath(Record):
    """A request rebuilt from the access logs by its x-request-id, hop by hop."""

    rid: str
    status: int  # as the client saw it (0: transport error)
    phase: str
    hops: list[Hop]


class ControlPlaneRecord(Record):
    """The real control plane of a ``--mesh istio`` run."""

    istio_version: str
    kubernetes_version: str
    # seconds from the start of the deployment: apiserver_ready_s, istiod_ready_s,
    # proxies_synced_s (every proxy SYNCED with istiod), ready_s (a request crossed the mesh)
    timings: dict[str, float] = Field(default_factory=dict)


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
    mesh: str = "envoy"  # envoy: the harness's translation; istio: a real istiod
    control_plane: ControlPlaneRecord | None = None
    environment: dict[str, str]
    started_at: float
    ended_at: float | None = None
    status: str = "running"  # running | completed | interrupted | error
    error: str | None = None
    aborted: str | None = None  # why the guard stopped the faults early
    aborted_at: float | None = None
    scratch_dir: str | None = None  # short-path directory of admin sockets (removed at the end)
    phases: list[PhaseWindow] = Field(default_factory=list)
    faults: list[FaultEntry] = Field(default_factory=list)
    load: LoadRecord | None = None
    edges: list[EdgeStats] = Field(default_factory=list)
    injected: dict[str, dict[str, int]] = Field(default_factory=dict)  # instance → fault counters
    slos: list[SloResult] = Field(default_factory=list)
    load_started_at: float | None = None  # epoch seconds; timelines count from here
    timeline: LoadTimeline | None = None
    mesh_timeline: MeshTimeline | None = None
    # "caller→callee" → response flag → count, from the caller's outbound access log and
    # the callee's inbound one (caller = x-harness-source); "ingress→<entry service>" too
    response_flags: dict[str, dict[str, int]] = Field(default_factory=dict)
    # "caller→callee" → status class ("2xx", "5xx", "0" = no response) as the caller's
    # sidecar answered it
    response_codes: dict[str, dict[str, int]] = Field(default_factory=dict)
    request_paths: list[RequestPath] = Field(default_factory=list)
    # phase → HdrHistogram of successful request latencies (microseconds), base64-encoded
    latency_histograms: dict[str, str] = Field(default_factory=dict)
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
