"""The scenario's faults (a discriminated union on ``kind``) and its guard.

Each fault has a phase, an optional window inside it (``start``, ``duration``) and a target;
``harness.faults`` turns each into an injector. Cross-references (phases, services,
instances) are checked by ``Scenario.reference_problems()`` in ``models.py``.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Annotated, Literal, get_args

from pydantic import (
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from harness.journal import FaultKind
from harness.scenario.base import (
    MAX_ITEMS,
    Model,
    check_optional_name,
)
from harness.scenario.units import Duration, Fraction


class Percentage(Model):
    """Istio's ``Percent``: ``{value: 50}`` means 50% of requests."""

    value: float = Field(ge=0, le=100)


class Abort(Model):
    http_status: int = Field(ge=200, le=599)
    percentage: Percentage = Field(default_factory=lambda: Percentage(value=100))


class Delay(Model):
    fixed_delay: Duration
    percentage: Percentage = Field(default_factory=lambda: Percentage(value=100))


class Target(Model):
    """Which instances of a service a fault hits (its blast radius)."""

    service: str
    version: str | None = Field(
        default=None, description="Only the instances of this version (its version label)."
    )
    instances: int | str | None = Field(
        default=None,
        description="How many instances: a count (1), a percentage ('50%'), or omitted for all.",
    )

    @field_validator("instances")
    @classmethod
    def _instances(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 1:
            raise ValueError("instances must be at least 1 (an empty selection hits nothing)")
        if isinstance(value, str):
            if not re.fullmatch(r"\d+(\.\d+)?%", value.strip()):
                raise ValueError(f"{value!r}: write a count like 1 or a percentage like '50%'")
            if float(value.strip()[:-1]) <= 0:
                raise ValueError(f"{value!r} selects no instance; give more than 0%")
        return value

    def count(self, replicas: int) -> int:
        """How many of ``replicas`` instances are selected (at least 1 when non-empty)."""
        if self.instances is None:
            return replicas
        if isinstance(self.instances, int):
            return min(self.instances, replicas)
        share = float(self.instances.strip()[:-1]) / 100.0
        return min(replicas, math.ceil(share * replicas))


class Step(Model):
    """From ``at`` (after the fault starts) on, the fault acts at ``percentage`` intensity."""

    at: Duration
    percentage: float = Field(ge=0, le=100)


class FaultTiming(Model):
    """When a fault acts: within its phase, from ``start`` for ``duration`` (default: the rest)."""

    name: str | None = None
    phase: str = Field(description="The phase the fault belongs to.")

    _name = field_validator("name")(check_optional_name)
    start: Duration = Field(default=0.0, description="Offset from the start of the phase.")
    duration: Duration | None = Field(
        default=None, description="How long it lasts (default: until the phase ends)."
    )

    def window(self, phase_duration: float) -> tuple[float, float]:
        """(start, end) offsets within the phase."""
        end = phase_duration if self.duration is None else self.start + self.duration
        return self.start, min(end, phase_duration)

    @property
    def ramp(self) -> tuple[Step, ...]:
        """The intensity steps of a fault that ramps (``steps``); none for the others."""
        return ()


class HttpFault(FaultTiming):
    """HTTP delay / abort injected by the destination instances' sidecars (Envoy fault filter).

    With ``source`` only calls from that service are hit. The fault sits in the callee's
    sidecar, one hop away from the caller, so the caller's retries and timeouts still apply.
    ``steps`` ramp the share of requests hit (e.g. 10% → 30% → 60%).
    """

    kind: Literal["http"]
    target: Target
    source: str | None = Field(default=None, description="Only calls from this service.")
    abort: Abort | None = None
    delay: Delay | None = None
    steps: list[Step] = Field(default_factory=list, max_length=MAX_ITEMS)

    @property
    def ramp(self) -> tuple[Step, ...]:
        return tuple(self.steps)

    @model_validator(mode="after")
    def _something(self) -> HttpFault:
        if self.abort is None and self.delay is None:
            raise ValueError("an http fault needs 'abort', 'delay' or both")
        shares = [p.percentage.value for p in (self.abort, self.delay) if p is not None]
        shares += [step.percentage for step in self.steps]
        fractional = [share for share in shares if share != int(share)]
        if fractional:
            # Envoy's runtime reads an integer override as whole percent; a fraction cannot
            # be switched on at run time exactly.
            raise ValueError(
                f"percentages {', '.join(f'{f:g}' for f in fractional)} are not whole: "
                "HTTP faults are switched through Envoy's runtime, which takes whole percents "
                "(0-100)"
            )
        return self


class ToxicKind(StrEnum):
    LATENCY = "latency"
    BANDWIDTH = "bandwidth"
    SLOW_CLOSE = "slow_close"
    TIMEOUT = "timeout"
    RESET_PEER = "reset_peer"
    SLICER = "slicer"
    LIMIT_DATA = "limit_data"


_TOXIC_FIELDS: dict[ToxicKind, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # toxic → (required fields, optional fields)
    ToxicKind.LATENCY: (("latency",), ("jitter",)),
    ToxicKind.BANDWIDTH: (("rate",), ()),
    ToxicKind.SLOW_CLOSE: (("delay",), ()),
    ToxicKind.TIMEOUT: ((), ("timeout",)),
    ToxicKind.RESET_PEER: ((), ("timeout",)),
    ToxicKind.SLICER: (("average_size",), ("size_variation", "delay")),
    ToxicKind.LIMIT_DATA: (("bytes",), ()),
}


class ToxicFault(FaultTiming):
    """An L4 toxic (toxiproxy) on the edge ``source`` → ``target``, between the caller's
    sidecar and the callee's instances. Toxicity applies per connection, not per request."""

    kind: Literal["toxic"]
    toxic: ToxicKind = Field(strict=False)
    source: str = Field(description="The calling service (the edge's caller).")
    target: Target
    stream: Literal["upstream", "downstream"] = Field(
        default="downstream",
        description="downstream: callee → caller bytes; upstream: the other way.",
    )
    toxicity: float = Field(default=1.0, ge=0, le=1, description="Share of connections hit.")
    latency: Duration | None = None
    jitter: Duration | None = None
    rate: int | None = Field(default=None, ge=1, description="bandwidth: KB/s.")
    delay: Duration | None = None
    timeout: Duration | None = None
    average_size: int | None = Field(default=None, ge=1)
    size_variation: int | None = Field(default=None, ge=0)
    bytes: int | None = Field(default=None, ge=0)
    steps: list[Step] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="Toxicity ramp (percent)."
    )

    @property
    def ramp(self) -> tuple[Step, ...]:
        return tuple(self.steps)

    @model_validator(mode="after")
    def _fields_fit_the_toxic(self) -> ToxicFault:
        required, optional = _TOXIC_FIELDS[self.toxic]
        every = {f for req, opt in _TOXIC_FIELDS.values() for f in (*req, *opt)}
        missing = [to_camel(f) for f in required if getattr(self, f) is None]
        stray = [
            to_camel(f) for f in every - {*required, *optional} if getattr(self, f) is not None
        ]
        problems = []
        if missing:
            problems.append(f"a {self.toxic.value} toxic needs {', '.join(missing)}")
        if stray:
            allowed = [to_camel(f) for f in (*required, *optional)] or ["no attributes"]
            problems.append(
                f"{', '.join(sorted(stray))} not used by a {self.toxic.value} toxic "
                f"(it takes {', '.join(allowed)})"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class PartitionFault(FaultTiming):
    """A packet-level cut between instances (nftables in the run's network namespace).

    ``drop``: packets vanish, callers see connect timeouts. ``reject``: callers see TCP
    resets / refused connections. ``oneway`` cuts only ``from`` → ``to`` packets.
    """

    kind: Literal["partition"]
    from_: Target = Field(alias="from")
    to: Target
    mode: Literal["drop", "reject"] = "drop"
    direction: Literal["oneway", "both"] = "both"


class KillFault(FaultTiming):
    """SIGKILL the selected instances' app (or sidecar); optionally restart after a delay."""

    kind: Literal["kill"]
    target: Target
    process: Literal["app", "sidecar"] = "app"
    restart_after: Duration | None = Field(
        default=None, description="Start it again after this long (like a pod restart)."
    )


class PauseFault(FaultTiming):
    """SIGSTOP the selected instances' app (or sidecar) for the fault's window: a hang."""

    kind: Literal["pause"]
    target: Target
    process: Literal["app", "sidecar"] = "app"


class ControlPlaneFault(FaultTiming):
    """An outage of the mesh's control plane (``--mesh istio`` only): ``kill`` (SIGKILL,
    started again when the window ends), ``pause`` (SIGSTOP: a hung process) of istiod or of
    the Kubernetes API server, or ``partition``: the sidecars cut from istiod's xDS port
    (nft), istiod itself running. The data plane should keep serving with its last
    configuration meanwhile."""

    kind: Literal["controlPlane"]
    component: Literal["istiod", "apiserver"] = "istiod"
    action: Literal["kill", "pause", "partition"] = "kill"

    @model_validator(mode="after")
    def _partition_is_istiod(self) -> ControlPlaneFault:
        if self.action == "partition" and self.component != "istiod":
            raise ValueError(
                "action partition cuts the sidecars from istiod's xDS port; the sidecars never "
                "talk to the API server: use component istiod, or kill / pause the apiserver"
            )
        return self


class TrafficShiftFault(FaultTiming):
    """Progressive delivery: shift ``weight`` percent of the target's routed traffic to
    ``subset`` (the rest to the other destination of each two-destination route that names
    it), then ``steps`` (percentage = the subset's weight, e.g. 10 → 50 → 100). The revert
    (the fault's end, or a guard) restores the scenario's own weights: the stable route."""

    kind: Literal["trafficShift"]
    target: Target = Field(description="The destination whose routes shift (no instances).")
    subset: str = Field(description="The subset that gets the weight (the canary).")
    weight: int = Field(ge=0, le=100, description="Its first weight, percent.")
    steps: list[Step] = Field(default_factory=list, max_length=MAX_ITEMS)

    @property
    def ramp(self) -> tuple[Step, ...]:
        return tuple(self.steps)

    @model_validator(mode="after")
    def _whole(self) -> TrafficShiftFault:
        if self.target.instances is not None:
            raise ValueError("a traffic shift acts on the callers' routes: give no instances")
        if any(step.percentage != int(step.percentage) for step in self.steps):
            raise ValueError("route weights are whole percents: give whole step percentages")
        return self


Fault = Annotated[
    HttpFault
    | ToxicFault
    | PartitionFault
    | KillFault
    | PauseFault
    | ControlPlaneFault
    | TrafficShiftFault,
    Field(discriminator="kind"),
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)  # the journal records the same kinds


class Guard(Model):
    """Stop every fault early when the end-to-end error rate stays above ``errorRate`` for
    ``for`` (consecutive seconds). ``action: abort`` (the default): the run is then marked
    aborted and fails. ``action: rollback``: the canary analysis of progressive delivery —
    the reverts put traffic back on the stable route, no fault starts again, the run goes
    on and its SLOs decide (the journal records the rollback)."""

    error_rate: Fraction = Field(description="E.g. 50%.")
    for_: Duration = Field(default=5.0, alias="for")
    action: Literal["abort", "rollback"] = "abort"


__all__ = [
    "FAULT_KINDS",
    "Abort",
    "ControlPlaneFault",
    "Delay",
    "Fault",
    "FaultTiming",
    "Guard",
    "HttpFault",
    "KillFault",
    "PartitionFault",
    "PauseFault",
    "Percentage",
    "Step",
    "Target",
    "ToxicFault",
    "ToxicKind",
    "TrafficShiftFault",
]
