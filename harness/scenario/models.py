"""The typed scenario: what to deploy, which mesh policy, what load, which faults, which SLOs.

Field names are camelCase in YAML (Istio's vocabulary: ``perTryTimeout``,
``http1MaxPendingRequests``, ``consecutive5xxErrors``) and snake_case in Python.
Unknown fields are rejected everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from harness.scenario.app import App
from harness.scenario.base import (
    API_VERSION,
    MAX_ITEMS,
    MAX_TEXT,
    Model,
    check_name,
)
from harness.scenario.faults import (
    FAULT_KINDS,
    Abort,
    ControlPlaneFault,
    Delay,
    Fault,
    FaultTiming,
    Guard,
    HttpFault,
    KillFault,
    PartitionFault,
    PauseFault,
    Percentage,
    Step,
    Target,
    ToxicFault,
    ToxicKind,
    TrafficShiftFault,
)
from harness.scenario.security import (
    AuthorizationPolicy,
    PeerAuthentication,
    Probe,
    probe_problems,
    security_problems,
)
from harness.scenario.slos import (
    SLO_KINDS,
    ConfigChange,
    ConfigPropagationSlo,
    DeniedSlo,
    Edge,
    EjectionSlo,
    ErrorRateSlo,
    LatencyShiftSlo,
    LatencySlo,
    PlaintextRejectedSlo,
    RecoverySlo,
    RetryAmplificationSlo,
    SampleSlo,
    SheddingSlo,
    Slo,
    SloBase,
    SubsetErrorRateSlo,
    SubsetLatencySlo,
    TrafficShareSlo,
)
from harness.scenario.traffic import (
    HttpRoute,
    Subset,
    route_problems,
    shifted_routes,
    subset_problems,
)
from harness.scenario.units import Duration

# --------------------------------------------------------------------------- metadata


class Metadata(Model):
    name: str = Field(description="Scenario name: lowercase letters, digits and '-'.")
    description: str = Field(default="", max_length=MAX_TEXT)
    labels: dict[str, Annotated[str, Field(max_length=MAX_TEXT)]] = Field(
        default_factory=dict, max_length=MAX_ITEMS
    )
    expect: Literal["pass", "fail"] = Field(
        "pass",
        description="'fail' marks a negative control: its SLOs must fail (pytest: strict xfail).",
    )

    _name = field_validator("name")(check_name)


# --------------------------------------------------------------------------- mesh policy


class Retries(Model):
    """Istio ``HTTPRetry``: enforced by the caller's sidecar on its route to the destination."""

    attempts: int = Field(ge=0, le=20, description="Retries after the first try; 0 disables.")
    per_try_timeout: Duration | None = Field(default=None, gt=0)
    retry_on: str | None = Field(
        default=None,
        description="Envoy retry conditions; bare status codes become retriable-status-codes.",
    )
    retry_ignore_previous_hosts: bool | None = None


class TcpSettings(Model):
    max_connections: int | None = Field(default=None, ge=1)
    connect_timeout: Duration | None = Field(default=None, gt=0)


class HttpSettings(Model):
    http1_max_pending_requests: int | None = Field(
        default=None, ge=1, alias="http1MaxPendingRequests"
    )
    http2_max_requests: int | None = Field(default=None, ge=1, alias="http2MaxRequests")
    max_requests_per_connection: int | None = Field(default=None, ge=0)
    max_retries: int | None = Field(default=None, ge=0)


class ConnectionPool(Model):
    tcp: TcpSettings = Field(default_factory=TcpSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)


class OutlierDetection(Model):
    consecutive_5xx_errors: int | None = Field(default=None, ge=0, alias="consecutive5xxErrors")
    consecutive_gateway_errors: int | None = Field(
        default=None, ge=0, alias="consecutiveGatewayErrors"
    )
    interval: Duration | None = Field(default=None, gt=0)
    base_ejection_time: Duration | None = Field(default=None, gt=0)
    max_ejection_percent: int | None = Field(default=None, ge=0, le=100)
    min_health_percent: int | None = Field(default=None, ge=0, le=100)


class LbAlgorithm(StrEnum):
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"
    RANDOM = "RANDOM"


class LoadBalancer(Model):
    simple: LbAlgorithm = Field(default=LbAlgorithm.LEAST_REQUEST, strict=False)


class DestinationPolicy(Model):
    """Mesh policy for calls *to* one service (VirtualService + DestinationRule fields)."""

    timeout: Duration | None = Field(default=None, description="Route timeout (Istio: none).")
    retries: Retries | None = Field(
        default=None,
        description="Omitted: Istio's default (2 retries on connect failures and refused "
        "streams; since Istio 1.24 not on a 503).",
    )
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    load_balancer: LoadBalancer | None = None
    subsets: list[Subset] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="DestinationRule subsets."
    )
    http: list[HttpRoute] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description="VirtualService HTTP routes, first match wins (harness.scenario.traffic).",
    )


class Mesh(Model):
    destinations: dict[str, DestinationPolicy] = Field(
        default_factory=dict, description="Policy per destination service."
    )
    access_log: Literal["full", "report"] = Field(
        default="full",
        description=(
            "The sidecars' JSON access-log fields: full (every field, for people reading "
            "the logs) or report (only what the report's counts, flags and request paths "
            "use: about a third less on disk)."
        ),
    )
    # Security (harness.scenario.security): enforced by the callee's sidecar.
    peer_authentication: PeerAuthentication | None = Field(
        default=None, description="PeerAuthentication modes (mutual TLS) per namespace/service."
    )
    authorization_policies: list[AuthorizationPolicy] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="Istio AuthorizationPolicies."
    )


# --------------------------------------------------------------------------- load / phases


MAX_RATE: Final = 400.0
"""The highest ``load.rate`` one Locust process sustained against the shop app on this
project's 2-core machine when it was otherwise idle: achieved >= 90% of the offered rate, no
errors, 0% late; 450 req/s already failed 22% of its requests (``bench/load_max_rate.py``,
docs/benchmarks.md). Above it the generator, the app and its eight Envoys share too little
CPU for an open-loop schedule to hold; load past it needs Locust workers."""

MAX_WORKERS: Final = 32
"""The most Locust workers a scenario may ask for (``load.workers``); the same bound as
``harness.load.driver.MAX_WORKERS`` (a test keeps them equal)."""


class Load(Model):
    """The load at the ingress.

    ``mode: open`` (default): ``rate`` requests per second on a fixed open-loop arrival
    schedule (wrk2's model), split over ``users`` Locust users; a slow system cannot slow
    the schedule down, and latency is measured from each request's intended start.
    ``mode: concurrency``: ``users`` closed-loop users without pacing (fortio's model, as in
    Istio's circuit-breaking task): always ``users`` requests in flight; no ``rate``.

    ``workers: N`` spreads the users over Locust's distributed mode (a master and N worker
    processes); without it one Locust process runs them all. Each worker runs
    ``users / N`` users, so in open mode ``users`` is a multiple of ``N`` (the derived
    default is rounded up to one), and ``rate`` may go up to ``N`` times the one-process cap.

    ``locustfile: path.py`` (relative to the scenario file) runs the user's own Locust
    User classes unchanged instead of the built-in load; the harness samples every request
    through Locust's event hooks. Those classes pace themselves (their ``wait_time``), so
    there is no ``rate`` (refused) and no open loop: ``users`` (required) is how many
    Locust starts, and latencies carry the coordinated omission of the user's own pacing.
    One Locust process (no ``workers``).
    """

    mode: Literal["open", "concurrency"] = Field(
        default="open",
        description="open: a fixed arrival rate (open loop); concurrency: N users, no pacing.",
    )
    rate: float | None = Field(
        default=None,
        gt=0,
        description=f"open mode: target requests per second at the ingress (at most {MAX_RATE:g}).",
    )
    users: int | None = Field(
        default=None,
        ge=1,
        le=500,
        description="Locust users: schedule streams (open, default derived) or concurrent "
        "requests (concurrency, required).",
    )
    request_timeout: Duration = Field(default=10.0, gt=0, description="Client-side timeout.")
    workers: int | None = Field(
        default=None,
        ge=1,
        le=MAX_WORKERS,
        description="Locust workers (distributed mode: a master + N worker processes); "
        "omitted: one Locust process. Open mode: users must be a multiple of workers.",
    )
    locustfile: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TEXT,
        description="A user's own locustfile (relative to the scenario file), run unchanged; "
        "needs users, refuses rate and workers.",
    )

    @model_validator(mode="after")
    def _mode_fields(self) -> Load:
        if self.locustfile is not None:
            self._check_user_locustfile()
            return self
        if self.mode == "open":
            if self.rate is None:
                raise ValueError(
                    "load.rate is required in open mode (requests per second), "
                    "or set 'mode: concurrency' with 'users: N' for N users without pacing"
                )
            processes = self.workers or 1
            if self.rate > MAX_RATE * processes:
                raise ValueError(
                    f"load.rate {self.rate:g} is above {MAX_RATE * processes:g} req/s, the most "
                    f"{_locust_processes(self.workers)} on this kind of machine "
                    f"({MAX_RATE:g} req/s each, docs/benchmarks.md); lower the rate or set "
                    f"load.workers to {math.ceil(self.rate / MAX_RATE)} or more"
                )
        else:
            if self.rate is not None:
                raise ValueError(
                    "load.rate does not apply in concurrency mode (users send back to back); "
                    "remove it, or use 'mode: open' for a fixed arrival rate"
                )
            if self.users is None:
                raise ValueError(
                    "load.users is required in concurrency mode: the number of requests "
                    "kept in flight (e.g. 'users: 3')"
                )
        self._check_workers()
        return self

    def _check_user_locustfile(self) -> None:
        if not self.locustfile or not self.locustfile.endswith(".py"):
            raise ValueError(
                f"load.locustfile {self.locustfile!r} must name a Python file ending in '.py'"
            )
        if "," in self.locustfile:
            raise ValueError(
                f"load.locustfile {self.locustfile!r} contains a comma, which Locust's -f "
                "reads as a list of files; rename the file or its folder"
            )
        if self.rate is not None:
            raise ValueError(
                "load.rate does not apply with load.locustfile: its User classes pace "
                "themselves (their wait_time); remove rate and set 'users: N'"
            )
        if "mode" in self.model_fields_set:
            raise ValueError(
                "load.mode does not apply with load.locustfile: its User classes pace "
                "themselves; remove mode"
            )
        if self.users is None:
            raise ValueError(
                "load.users is required with load.locustfile: how many of its users Locust "
                "starts (e.g. 'users: 4')"
            )
        if self.workers is not None:
            raise ValueError(
                "load.workers is not supported with load.locustfile (one Locust process); "
                "remove workers"
            )

    @property
    def load_mode(self) -> Literal["open", "concurrency"]:
        """The driver's mode: a user's locustfile is closed loop, like concurrency mode."""
        return "concurrency" if self.locustfile is not None else self.mode

    def _check_workers(self) -> None:
        workers = self.workers
        if workers is None or self.users is None:
            return
        if self.users < workers:
            raise ValueError(
                f"load.users {self.users} is less than load.workers {workers}: a worker "
                f"without users sends nothing; use at least 'users: {workers}' or fewer workers"
            )
        if self.mode == "open" and self.users % workers:
            below = self.users // workers * workers
            above = below + workers
            raise ValueError(
                f"load.users {self.users} is not a multiple of load.workers {workers}: each "
                "worker runs users/workers users, each owning a fixed share of the arrival "
                f"schedule; use 'users: {above}'" + (f" or 'users: {below}'" if below else "")
            )

    def effective_users(self) -> int:
        """``users``, else (open mode) one user per 5 req/s, between 4 and 64, rounded up
        to a multiple of ``workers``."""
        if self.users is not None:
            return self.users
        derived = max(4, min(64, math.ceil((self.rate or 0.0) / 5)))
        workers = self.workers or 1
        return math.ceil(derived / workers) * workers


def _locust_processes(workers: int | None) -> str:
    return "one Locust process sustains" if workers is None else f"{workers} Locust workers sustain"


class Phase(Model):
    name: str
    duration: Duration = Field(description="How long the phase lasts, e.g. '20s'.")

    _name = field_validator("name")(check_name)

    @field_validator("duration")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("a phase lasts longer than 0s")
        return value


# --------------------------------------------------------------------------- scenario


__all__ = [
    "API_VERSION",
    "FAULT_KINDS",
    "MAX_ITEMS",
    "SLO_KINDS",
    "Abort",
    "App",
    "ConfigChange",
    "ConfigPropagationSlo",
    "ControlPlaneFault",
    "Delay",
    "DeniedSlo",
    "Edge",
    "EjectionSlo",
    "ErrorRateSlo",
    "Fault",
    "FaultTiming",
    "Guard",
    "HttpFault",
    "KillFault",
    "LatencyShiftSlo",
    "LatencySlo",
    "PartitionFault",
    "PauseFault",
    "Percentage",
    "PlaintextRejectedSlo",
    "RecoverySlo",
    "RetryAmplificationSlo",
    "SampleSlo",
    "Scenario",
    "SheddingSlo",
    "Slo",
    "SloBase",
    "Step",
    "SubsetErrorRateSlo",
    "SubsetLatencySlo",
    "Target",
    "ToxicFault",
    "ToxicKind",
    "TrafficShareSlo",
    "TrafficShiftFault",
]


def _unknown(kind: str, value: str, valid: Iterable[str]) -> str:
    return f"unknown {kind} {value!r}; valid: {', '.join(sorted(valid))}"


class Scenario(Model):
    """A whole scenario file."""

    api_version: Literal["harness/v1"] = API_VERSION  # required in files (the loader)
    metadata: Metadata
    app: App = Field(default_factory=App)
    mesh: Mesh = Field(default_factory=Mesh)
    load: Load
    phases: list[Phase] = Field(min_length=1, max_length=MAX_ITEMS)
    faults: list[Fault] = Field(default_factory=list, max_length=MAX_ITEMS)
    probes: list[Probe] = Field(default_factory=list, max_length=MAX_ITEMS)
    slos: list[Slo] = Field(min_length=1, max_length=MAX_ITEMS)
    guard: Guard | None = None

    @property
    def duration(self) -> float:
        return sum(phase.duration for phase in self.phases)

    def phase_names(self) -> list[str]:
        return [phase.name for phase in self.phases]

    def fault_name(self, index: int) -> str:
        fault = self.faults[index]
        return fault.name or f"{fault.kind}-{index}"

    @model_validator(mode="after")
    def _cross_references(self, info: ValidationInfo) -> Scenario:
        # The loader passes {"skip_references": True} and reports each problem at its own
        # file:line:col via reference_problems(); Python callers get one combined error.
        if isinstance(info.context, dict) and info.context.get("skip_references"):
            return self
        problems = list(self.reference_problems())
        if problems:
            # One ValueError carrying every problem; the loader maps each to its location.
            raise ValueError(
                "; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems)
            )
        return self

    def reference_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Cross-field problems as (field path, message) pairs."""
        problems: list[tuple[tuple[str | int, ...], str]] = list(self.app.problems())
        for section, mapping in (
            ("replicas", self.app.replicas),
            ("serviceTime", self.app.service_time),
        ):
            for key in mapping:
                problems += self._service_problems(("app", section, key), key)
        for key in self.mesh.destinations:
            problems += self._service_problems(("mesh", "destinations", key), key)
        problems += security_problems(
            self.mesh.peer_authentication,
            self.mesh.authorization_policies,
            self.app.topology.service_names,
        )
        problems += probe_problems(self.probes, self.app.topology.service_names)
        problems += self._traffic_problems()
        seen: set[str] = set()
        for index, phase in enumerate(self.phases):
            if phase.name in seen:
                problems.append((("phases", index, "name"), f"duplicate phase name {phase.name!r}"))
            seen.add(phase.name)
        durations = {phase.name: phase.duration for phase in self.phases}
        for index, fault in enumerate(self.faults):
            problems += self._fault_problems(("faults", index), fault, durations)
        fault_names: set[str] = set()
        for index in range(len(self.faults)):
            name = self.fault_name(index)
            if name in fault_names:
                problems.append((("faults", index, "name"), f"duplicate fault name {name!r}"))
            fault_names.add(name)
        slo_names: set[str] = set()
        for index, slo in enumerate(self.slos):
            if slo.name in slo_names:
                problems.append((("slos", index, "name"), f"duplicate SLO name {slo.name!r}"))
            slo_names.add(slo.name)
            problems += self._slo_problems(("slos", index), slo, durations)
            if getattr(slo, "request", None) is not None and self.load.locustfile is None:
                problems.append(
                    (
                        ("slos", index, "request"),
                        "request selects a Locust request name, which only a user's own "
                        "locustfile gives (load.locustfile); remove request to judge every "
                        "request",
                    )
                )
        return problems

    def _traffic_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Subsets and routes (:mod:`harness.scenario.traffic`)."""
        topology = self.app.topology
        subsets: dict[str, list[Subset]] = {name: [] for name in topology.service_names} | {
            name: policy.subsets for name, policy in self.mesh.destinations.items()
        }
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for key, policy in self.mesh.destinations.items():
            where = ("mesh", "destinations", key)
            problems += subset_problems((*where, "subsets"), key, policy.subsets, topology)
            problems += route_problems((*where, "http"), policy.http, subsets, key)
        return problems

    def _service_problems(
        self, path: tuple[str | int, ...], service: str
    ) -> list[tuple[tuple[str | int, ...], str]]:
        services = self.app.topology.service_names
        if service in services:
            return []
        return [(path, _unknown("service", service, services))]

    def _edge_problems(
        self, path: tuple[str | int, ...], caller: str, callee: str
    ) -> list[tuple[tuple[str | int, ...], str]]:
        if callee not in self.app.topology.service_names:
            return self._service_problems(path, callee)
        callers = self.callers_of(callee)
        if caller not in callers:
            return [
                (path, f"{caller!r} does not call {callee!r}; its callers: {', '.join(callers)}")
            ]
        return []

    def _fault_problems(
        self, where: tuple[str | int, ...], fault: Fault, durations: dict[str, float]
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """``durations``: every phase's duration by name (built once per scenario, so the
        checks stay linear in the number of faults)."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if fault.phase not in durations:
            problems.append(((*where, "phase"), _unknown("phase", fault.phase, durations)))
        else:
            phase_duration = durations[fault.phase]
            begin, finish = fault.window(phase_duration)
            if begin >= phase_duration:
                problems.append(
                    (
                        (*where, "start"),
                        f"starts after its phase {fault.phase!r} ends ({phase_duration:g}s)",
                    )
                )
            elif finish <= begin:
                problems.append(((*where, "duration"), "the fault's window is empty"))
            for s_index, step in enumerate(fault.ramp):
                if step.at >= finish - begin:
                    problems.append(
                        ((*where, "steps", s_index, "at"), "the step starts after the fault ends")
                    )
        if isinstance(fault, PartitionFault):
            problems += self._service_problems((*where, "from", "service"), fault.from_.service)
            problems += self._service_problems((*where, "to", "service"), fault.to.service)
        elif isinstance(fault, TrafficShiftFault):
            problems += self._shift_problems(where, fault)
        elif isinstance(fault, HttpFault | ToxicFault) and fault.source is not None:
            problems += self._edge_problems((*where, "source"), fault.source, fault.target.service)
        elif isinstance(fault, ControlPlaneFault):
            pass  # no service: the control plane
        else:
            problems += self._service_problems((*where, "target", "service"), fault.target.service)
        return problems + self._version_problems(where, getattr(fault, "target", None))

    def _version_problems(
        self, where: tuple[str | int, ...], target: Target | None
    ) -> list[tuple[tuple[str | int, ...], str]]:
        topology = self.app.topology
        if target is None or target.version is None or target.service not in topology.service_names:
            return []
        versions = [variant.version for variant in topology.service(target.service).variants]
        if target.version in versions:
            return []
        return [((*where, "target", "version"), _unknown("version", target.version, versions))]

    def _shift_problems(
        self, where: tuple[str | int, ...], fault: TrafficShiftFault
    ) -> list[tuple[tuple[str | int, ...], str]]:
        service = fault.target.service
        if service not in self.app.topology.service_names:
            return self._service_problems((*where, "target", "service"), service)
        policy = self.mesh.destinations.get(service)
        if policy is None or not shifted_routes(policy.http, fault.subset):
            return [
                (
                    (*where, "subset"),
                    f"no route of {service!r} splits between {fault.subset!r} and another "
                    f"subset: give mesh.destinations.{service}.http a route with two weighted "
                    f"destinations, one of them subset {fault.subset!r}",
                )
            ]
        return []

    def _slo_problems(
        self, where: tuple[str | int, ...], slo: Slo, phases: dict[str, float]
    ) -> list[tuple[tuple[str | int, ...], str]]:
        problems: list[tuple[tuple[str | int, ...], str]] = [
            ((*where, "phases", p_index), _unknown("phase", phase_name, phases))
            for p_index, phase_name in enumerate(slo.phases)
            if phase_name not in phases
        ]
        if isinstance(slo, LatencyShiftSlo) and slo.baseline not in phases:
            problems.append(((*where, "baseline"), _unknown("phase", slo.baseline, phases)))
        edge = getattr(slo, "edge", None)
        if isinstance(edge, Edge):
            problems += self._edge_problems((*where, "edge"), edge.from_, edge.to)
        if isinstance(slo, ConfigPropagationSlo):
            problems += self._change_problems((*where, "change"), slo.change, phases)
            if slo.phases:
                problems.append(
                    (
                        (*where, "phases"),
                        "a configPropagation SLO is judged once, in its change's phase; "
                        "remove phases",
                    )
                )
            changed = [
                other.change.service
                for other in self.slos[: int(where[1])]
                if isinstance(other, ConfigPropagationSlo)
            ]
            if slo.change.service in changed:
                problems.append(
                    (
                        (*where, "change", "service"),
                        f"another configPropagation SLO already changes {slo.change.service!r}'s "
                        "routes (each change replaces the VirtualService); pick another service",
                    )
                )
        if isinstance(slo, DeniedSlo | PlaintextRejectedSlo):
            probes = {probe.name: probe for probe in self.probes}
            probe = probes.get(slo.probe)
            if probe is None:
                problems.append(((*where, "probe"), _unknown("probe", slo.probe, probes)))
            elif isinstance(slo, PlaintextRejectedSlo) and not probe.plaintext:
                problems.append(
                    (
                        (*where, "probe"),
                        f"probe {slo.probe!r} sends as {probe.as_!r}; plaintextRejected "
                        "judges a probe with as: plaintext",
                    )
                )
        if isinstance(slo, TrafficShareSlo | SubsetErrorRateSlo | SubsetLatencySlo):
            policy = self.mesh.destinations.get(slo.edge.to)
            names = {subset.name for subset in policy.subsets} if policy else set()
            if slo.subset not in names:
                problems.append(
                    (
                        (*where, "subset"),
                        f"unknown subset {slo.subset!r} of {slo.edge.to!r}; valid: "
                        + (", ".join(sorted(names)) or "none (declare subsets: in its policy)"),
                    )
                )
        return problems

    def _change_problems(
        self, where: tuple[str | int, ...], change: ConfigChange, phases: dict[str, float]
    ) -> list[tuple[tuple[str | int, ...], str]]:
        if change.phase not in phases:
            return [((*where, "phase"), _unknown("phase", change.phase, phases))]
        if change.at >= phases[change.phase]:
            return [
                (
                    (*where, "at"),
                    f"is after its phase {change.phase!r} ends ({phases[change.phase]:g}s)",
                )
            ]
        problems = self._service_problems((*where, "service"), change.service)
        if not problems and not self.app.topology.callers_of(change.service):
            problems.append(
                (
                    (*where, "service"),
                    f"{change.service!r} has no calling service (only the ingress gateway, "
                    "whose route is another VirtualService); pick a service another one calls",
                )
            )
        return problems

    def control_plane_uses(self) -> list[tuple[tuple[str | int, ...], str]]:
        """What needs a real control plane (``--mesh istio``): each with its field path."""
        uses: list[tuple[tuple[str | int, ...], str]] = [
            (("faults", index, "kind"), f"fault {self.fault_name(index)} (controlPlane)")
            for index, fault in enumerate(self.faults)
            if isinstance(fault, ControlPlaneFault)
        ]
        uses += [
            (("slos", index, "kind"), f"SLO {slo.name} (configPropagation)")
            for index, slo in enumerate(self.slos)
            if isinstance(slo, ConfigPropagationSlo)
        ]
        return uses

    def callers_of(self, service: str) -> tuple[str, ...]:
        """Who calls ``service``: other services, and ``ingress`` for the entry service."""
        topology = self.app.topology
        ingress = ("ingress",) if service == topology.entry else ()
        return (*ingress, *topology.callers_of(service))
