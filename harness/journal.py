"""The run record: everything a run observed, as versioned JSON (``journal.json``).

Verdicts, the exit code and the HTML report are all computed from this record alone, so a
report can be re-rendered later from the file. Bump :data:`SCHEMA_VERSION` on any change
that an older reader could misread.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.files import read_bytes_limited, write_atomic

SCHEMA_VERSION = 1
MAX_JOURNAL_BYTES = 512 * 1024 * 1024
MAX_DEPTH = 64  # a real journal nests about 8 deep (the scenario inside it, a little more)

RunStatus = Literal["running", "completed", "interrupted", "error", "crashed"]
"""``crashed``: the run died without closing its journal, and ``harness cleanup`` closed it."""
RunVerdict = Literal["PASS", "FAIL", "INCONCLUSIVE", "ERROR", "INTERRUPTED"]
FaultKind = Literal["http", "toxic", "partition", "kill", "pause", "controlPlane", "trafficShift"]
SloKind = Literal[
    "errorRate",
    "latency",
    "latencyShift",
    "retryAmplification",
    "ejections",
    "sheds",
    "trafficShare",
    "subsetErrorRate",
    "subsetLatency",
    "recoveryTime",
    "configPropagation",
    "denied",
    "plaintextRejected",
]
Unit = Literal["ratio", "s", "factor", "count"]
ActionKind = Literal["note", "inject", "revert", "extend", "end-phase", "halt"]
"""What an operator did during a game day (``harness gameday``); see :class:`OperatorAction`."""
FaultTrigger = Literal["timeline", "operator"]
"""Who injected a fault: the scenario's timeline, or an operator during a game day."""
"""What an SLO's numbers count: a share (0–1), seconds, a multiple, or events."""


class Verdict(StrEnum):
    """The outcome of one SLO in one phase."""

    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"


@dataclass(frozen=True)
class SloResult:
    """One SLO judged in one phase (built by :mod:`harness.slo`, kept as is by the journal).

    ``measured`` is the point estimate (the observed rate, or the empirical quantile);
    ``lower`` and ``upper`` are one-sided bounds at ``confidence`` (``None`` when there
    are too few samples for that bound). ``unit`` is ``"ratio"`` for rates and ``"s"``
    for latencies. ``samples_needed`` is set only for INCONCLUSIVE results: roughly how
    many samples would decide the SLO if the measured value held (``None`` when the
    measurement sits on the objective, where no sample size would).
    """

    slo: str
    kind: SloKind
    phase: str
    verdict: Verdict
    measured: float | None
    lower: float | None
    upper: float | None
    objective: float
    confidence: float
    n: int
    unit: Unit
    message: str
    samples_needed: int | None
    p_value: float | None = None
    """p-value of the FAIL side: how likely evidence at least this strong against the SLO
    would be if the true value sat exactly on the objective (``FAIL`` per pair iff it is
    at most ``1 - confidence``). ``None`` for counter-based verdicts, which are exact
    counts, not tests."""
    pair_verdict: Verdict | None = None
    """The verdict of this SLO × phase pair on its own, before the family-wise adjustment
    (:func:`harness.slo.family.adjust_family`); ``None`` when no adjustment was made."""
    family_size: int | None = None
    """How many SLO × phase pairs shared the family-wise FAIL control with this one."""
    design_effect: float | None = None
    """The variance inflation applied for bursty (over-dispersed) data; ``None`` or 1.0
    when the data looked independent and the exact bounds stood."""

    @classmethod
    def judged(
        cls,
        slo: str,
        kind: SloKind,
        phase: str,
        verdict: Verdict,
        *,
        measured: float | None,
        lower: float | None,
        upper: float | None,
        objective: float,
        confidence: float,
        n: int,
        unit: Unit,
        detail: str,
        samples_needed: int | None = None,
        p_value: float | None = None,
        design_effect: float | None = None,
    ) -> SloResult:
        """The one way to build a result: the message is ``"<slo> [<phase>]: <detail>"``."""
        return cls(
            slo=slo,
            kind=kind,
            phase=phase,
            verdict=verdict,
            measured=measured,
            lower=lower,
            upper=upper,
            objective=objective,
            confidence=confidence,
            n=n,
            unit=unit,
            message=f"{slo} [{phase}]: {detail}",
            samples_needed=samples_needed,
            p_value=p_value,
            design_effect=design_effect,
        )


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InstanceRecord(Record):
    """One deployed instance of a service, with its version label."""

    name: str  # "catalog-0", "reviews-v2-0"
    service: str
    version: str


class PhaseWindow(Record):
    name: str
    start: float  # epoch seconds
    end: float


class FaultEntry(Record):
    """What a fault did: its targets, when, the proof it took effect, and its revert.

    Injectors fill it in as they act (``harness.faults``); the journal keeps it as is.
    """

    name: str
    kind: FaultKind
    phase: str
    targets: list[str]
    detail: dict[str, Any] = Field(default_factory=dict)
    injected_at: float | None = None
    reverted_at: float | None = None
    revert_verified: bool = False
    evidence: dict[str, int] = Field(default_factory=dict)
    took_effect: bool | None = None
    effect_message: str = ""
    trigger: FaultTrigger = "timeline"  # journals before game days hold timeline faults only


class OperatorAction(Record):
    """One thing an operator did during a game day, as the run loop carried it out.

    ``phase`` is the phase running at that moment (``None`` before the first one); ``fault``
    names the fault of an ``inject``/``revert``; ``seconds`` is an ``extend``'s length;
    ``text`` is a note's text or a halt's reason; ``error`` says why the action could not be
    done (a refused or failed action is journaled too).
    """

    at: float  # epoch seconds
    kind: ActionKind
    phase: str | None = None
    fault: str | None = None
    seconds: float | None = None
    text: str = ""
    error: str | None = None


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
    offered_rate: float | None  # None: concurrency mode (no schedule)
    achieved_rate: float
    coordinated_omission: bool
    latency: LatencySummary  # from each request's intended start (what verdicts use)
    status_counts: dict[str, int]
    message: str | None = None
    raw_latency: LatencySummary | None = None  # service time, from each actual start
    late: int = 0  # requests that started over harness.load.LATE_MS after their slot
    max_lag_ms: float = 0.0


class LoadRecord(Record):
    target_rate: float | None  # None: concurrency mode
    users: int
    samples_file: str
    phases: list[PhaseLoad]
    warnings: list[str] = Field(default_factory=list)
    exit_code: int | None = None
    mode: str = "open"  # harness.load.LoadMode: "open" or "concurrency"
    workers: int | None = None  # Locust workers (None: one Locust process)
    locust_requests: int | None = None  # with workers: Locust's own total (= merged samples)
    locustfile: str | None = None  # load.locustfile: the user's own (their pacing, no schedule)


class EdgeStats(Record):
    """Envoy counters of one mesh edge (caller → callee), summed over the caller's sidecars."""

    caller: str
    callee: str
    phases: dict[str, dict[str, int]]  # phase → counter → increase during the phase
    total: dict[str, int]
    # DestinationRule subset → phase → counter → increase, on the subset's own cluster
    # (``outbound|8080|<subset>|<callee>``; ``phases`` sums every cluster of the callee).
    subsets: dict[str, dict[str, dict[str, int]]] = Field(default_factory=dict)


class LoadTimeline(Record):
    """Per-second view of the load at the ingress; bucket ``i`` covers ``[t[i], t[i] + 1)``.

    ``t`` is in seconds since the run's ``load_started_at``; lists have equal lengths.
    """

    t: list[float]
    offered: list[float]  # target arrival rate, req/s (empty in concurrency mode)
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


class ProbeRecord(Record):
    """One request a scenario probe sent (harness.observe.probes): to whom, as whom, what
    came back. ``status`` 0: no HTTP answer (refused, reset, failed handshake, timeout;
    ``error`` says which). ``rbac_denied``: a 403 whose body is Envoy's
    ``RBAC: access denied``. Never a certificate, key or token."""

    probe: str
    t: float  # epoch seconds when it was sent
    to: str
    identity: str  # the probe's ``as``: a service, ``ingress`` or ``plaintext``
    method: str
    path: str
    status: int
    rbac_denied: bool = False
    rid: str = ""  # the x-request-id it carried (the callee's access log has it)
    error: str | None = None


class PolicyPush(Record):
    """One change of the mesh's objects under ``--mesh istio``, and how long istiod took to
    get it to every proxy it affects: from the API write until each of them acknowledged a
    configuration newer than before the write (istiod's ``/debug/syncz`` nonces)."""

    change: str  # e.g. "apply EnvoyFilter ns/harness-faults-catalog, ..."
    at: float  # epoch seconds of the API write
    proxies: list[str]  # the proxies it affects
    seconds: float  # API write → every affected proxy SYNCED with the new configuration


class ControlPlaneTimings(Record):
    """Seconds from the start of a ``--mesh istio`` deployment to each step (None: not
    reached, or not recorded by the harness that wrote the journal)."""

    apiserver_ready_s: float | None = None  # kube-apiserver /readyz
    crds_established_s: float | None = None  # Istio's CRDs Established
    objects_applied_s: float | None = None  # the rendered objects + the run's own
    istiod_ready_s: float | None = None  # istiod /ready
    objects_validated_s: float | None = None  # istiod's webhook judged every Istio object
    root_certificate_s: float | None = None  # istiod's root certificate published
    sidecars_started_s: float | None = None  # every pilot-agent and app spawned
    proxies_synced_s: float | None = None  # every proxy SYNCED (istiod /debug/syncz)
    sync_wait_s: float | None = None  # from the last spawn to SYNCED (a duration)
    fault_filters_pushed_s: float | None = None  # the fault EnvoyFilters' push acknowledged
    ready_s: float | None = None  # a request crossed the mesh

    def steps(self) -> list[tuple[str, float]]:
        """The recorded steps, in the order of a bring-up."""
        return [(name, value) for name, value in self if value is not None]


class ConfigChangeRecord(Record):
    """A ``configPropagation`` SLO's policy change: when it was written (the API server
    accepted it) and when every affected proxy was SYNCED with it (``None``: not by the end
    of the run). Epoch seconds; judged by :mod:`harness.slo.propagation`."""

    slo: str
    service: str  # whose VirtualService changed
    phase: str
    header: str  # the response header added to its routes ...
    value: str  # ... with this value, looked for in each proxy's routes
    proxies: list[str]  # the sidecars that apply it (its callers' instances)
    due_at: float  # when the scenario asked for the write
    written_at: float | None = None  # the API server accepted it (retried while it was down)
    synced_at: float | None = None  # every proxy SYNCED with a route holding the header
    pending: list[str] = Field(default_factory=list)  # proxies without it at the end
    write_errors: int = 0  # refused or unreachable writes before the one that went through
    error: str | None = None  # the last write error, when no write went through


class KubeRunRecord(Record):
    """Where a ``--platform kube`` run wrote, so ``harness cleanup`` can find it again: the
    kubeconfig it pinned (path, not contents: no credentials in a journal), the context, the
    server as pinned, and the run's namespace (its objects also carry ``harness/run-id``)."""

    kubeconfig: str
    context: str
    server: str
    namespace: str


class ControlPlaneRecord(Record):
    """The real control plane of a ``--mesh istio`` run."""

    istio_version: str
    kubernetes_version: str
    timings: ControlPlaneTimings = Field(default_factory=ControlPlaneTimings)
    pushes: list[PolicyPush] = Field(default_factory=list)  # absent from older journals


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
    kube: KubeRunRecord | None = None  # --platform kube: where the run's objects live
    # configPropagation SLOs' policy changes (absent from older journals)
    config_changes: list[ConfigChangeRecord] = Field(default_factory=list)
    instances: list[InstanceRecord] = Field(default_factory=list)  # as deployed
    environment: dict[str, str]
    started_at: float
    ended_at: float | None = None
    status: RunStatus = "running"
    error: str | None = None
    aborted: str | None = None  # why the guard stopped the faults early
    aborted_at: float | None = None
    # A guard with ``action: rollback`` tripped: the faults (a rollout) were reverted, no
    # fault started again, and the run went on; not a failure by itself.
    rolled_back: str | None = None
    rolled_back_at: float | None = None
    scratch_dir: str | None = None  # short-path directory of admin sockets (removed at the end)
    # The runner's PID and start time (clock ticks since boot; a PID alone can be reused):
    # with its lock on runner.lock, how `harness cleanup` tells a live run from a dead one.
    runner_pid: int | None = None
    runner_start: int | None = None
    phases: list[PhaseWindow] = Field(default_factory=list)
    faults: list[FaultEntry] = Field(default_factory=list)
    # notes and manual actions of a game day, in order (empty for `harness run`; journals
    # written before game days have none)
    actions: list[OperatorAction] = Field(default_factory=list)
    load: LoadRecord | None = None
    edges: list[EdgeStats] = Field(default_factory=list)
    injected: dict[str, dict[str, int]] = Field(default_factory=dict)  # instance → fault counters
    slos: list[SloResult] = Field(default_factory=list)
    load_started_at: float | None = None  # epoch seconds; timelines count from here
    timeline: LoadTimeline | None = None
    mesh_timeline: MeshTimeline | None = None
    # "caller→callee" → response flag → count, from the caller's outbound access log
    # (URX, UO, UT…); "ingress→<entry service>" too
    response_flags: dict[str, dict[str, int]] = Field(default_factory=dict)
    # the same, from the callee's inbound access log (FI, DI…; caller = x-harness-source)
    response_flags_callee: dict[str, dict[str, int]] = Field(default_factory=dict)
    # "caller→callee" → status code ("200", "503", "504", "0" = no response) as the
    # caller's sidecar answered it (journals before 2026-12 kept classes: "2xx", "5xx")
    response_codes: dict[str, dict[str, int]] = Field(default_factory=dict)
    request_paths: list[RequestPath] = Field(default_factory=list)
    probes: list[ProbeRecord] = Field(default_factory=list)  # scenario probes (security)
    # phase → HdrHistogram of successful request latencies (microseconds), base64-encoded
    latency_histograms: dict[str, str] = Field(default_factory=dict)
    problems: list[str] = Field(default_factory=list)
    verdict: RunVerdict = "ERROR"

    def write(self, path: Path) -> None:
        """Write atomically through a fresh temporary name (see :mod:`harness.files`)."""
        write_atomic(path, json.dumps(self.model_dump(mode="json"), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> Journal:
        """Read and validate a journal; ``OSError`` or a one-line ``ValueError`` otherwise."""
        data = parse_record(read_bytes_limited(path, MAX_JOURNAL_BYTES, "journal"), path)
        version = data.get("schema_version")
        if type(version) is not int or version != SCHEMA_VERSION:
            raise ValueError(
                f"{path}: journal schema version {version!r}; this harness reads {SCHEMA_VERSION}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "(top level)"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise ValueError(f"{path}: {where}: {first['msg']}{more}") from None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a journal may hold")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def parse_record(raw: bytes, path: Path) -> dict[str, Any]:
    """The JSON object in ``raw``: finite numbers only, bounded nesting, an object at top."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError(f"{path}: nested too deeply to be a journal") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a journal is a JSON object, found {type(data).__name__}")
    if _depth(data) > MAX_DEPTH:
        raise ValueError(f"{path}: nested more than {MAX_DEPTH} levels deep; not a journal")
    return data


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (iteratively: no recursion limit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest
