"""The scenario's SLOs (a discriminated union on ``kind``): what a run is judged on.

``harness.slo.judge`` evaluates each on its typed model; cross-references (phases, edges,
subsets, probes) are checked by ``Scenario.reference_problems()`` in ``models.py``.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import (
    Field,
    field_validator,
)

from harness.journal import SloKind
from harness.scenario.base import (
    MAX_ITEMS,
    MAX_TEXT,
    Model,
    check_name,
)
from harness.scenario.units import Duration, Fraction


class SloBase(Model):
    name: str
    phases: list[str] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="Empty: every phase."
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1)

    _name = field_validator("name")(check_name)


class SampleSlo(SloBase):
    """An SLO judged on the request samples; ``request`` selects one Locust request name.

    Request names exist only with ``load.locustfile`` (the ``name=`` of its requests, else
    their URL path) and are known only once the run has sent them: an SLO whose request
    name never appears in the run is INCONCLUSIVE in every phase, saying so."""

    request: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TEXT,
        description="Only the requests with this Locust name (load.locustfile); "
        "omitted: every request.",
    )


class ErrorRateSlo(SampleSlo):
    """End-to-end error rate at the ingress (non-2xx or transport error) must stay below ``max``."""

    kind: Literal["errorRate"]
    max: Fraction


class LatencySlo(SampleSlo):
    """A latency quantile at the ingress (successful requests) must stay below ``max``."""

    kind: Literal["latency"]
    quantile: float = Field(gt=0, lt=1, description="E.g. 0.99 for p99.")
    max: Duration


class Edge(Model):
    """A mesh edge, caller → callee (the caller may be ``ingress``)."""

    from_: str = Field(alias="from")
    to: str


class LatencyShiftSlo(SampleSlo):
    """How much slower a phase is than ``baseline`` (Hodges–Lehmann shift of successful
    latencies, with its Mann–Whitney interval) must stay below ``max``."""

    kind: Literal["latencyShift"]
    baseline: str = Field(description="The phase to compare against.")
    max: Duration


class RetryAmplificationSlo(SloBase):
    """Upstream attempts per downstream request on an edge must stay below ``max``."""

    kind: Literal["retryAmplification"]
    edge: Edge
    max: float = Field(ge=1)


class EjectionSlo(SloBase):
    """At least ``min`` outlier ejections on the edge within ``within`` of a phase's start."""

    kind: Literal["ejections"]
    edge: Edge
    min: int = Field(default=1, ge=1)
    within: Duration | None = None


class SheddingSlo(SloBase):
    """Circuit-breaker sheds (pending / connection overflow) on the edge: at least ``min``."""

    kind: Literal["sheds"]
    edge: Edge
    min: int = Field(default=1, ge=1)


class TrafficShareSlo(SloBase):
    """The share of the edge's requests routed to ``subset`` must be ``share`` within
    ``tolerance``: PASS when its two-sided Clopper-Pearson interval lies inside
    ``share ± tolerance``, FAIL when it lies wholly outside."""

    kind: Literal["trafficShare"]
    edge: Edge
    subset: str
    share: Fraction = Field(description="The expected share, e.g. 10% for weight 10.")
    tolerance: Fraction = Field(
        default=0.05, gt=0, description="PASS needs the interval within share ± this."
    )


class SubsetErrorRateSlo(SloBase):
    """The error rate of the requests routed to ``subset`` on the edge (5xx answers the
    caller's sidecars passed on) must stay below ``max``: one version's error rate."""

    kind: Literal["subsetErrorRate"]
    edge: Edge
    subset: str
    max: Fraction


class SubsetLatencySlo(SloBase):
    """The ``quantile`` of the latency of the requests routed to ``subset`` on the edge, as
    the caller's sidecar timed them (its outbound access log, whole milliseconds), must stay
    below ``max``: one version's latency. Judged like ``latency``, on the successful ones."""

    kind: Literal["subsetLatency"]
    edge: Edge
    subset: str
    quantile: float = Field(gt=0, lt=1, description="E.g. 0.9 for p90.")
    max: Duration


class RecoverySlo(SloBase):
    """After the faults end, the per-second error rate is back under ``errorRate`` in ``max``."""

    kind: Literal["recoveryTime"]
    max: Duration
    error_rate: Fraction = Field(default=0.01)


class ConfigChange(Model):
    """The harmless, observable policy change a ``configPropagation`` SLO makes: a response
    header added to the routes of ``service``'s VirtualService (its callers' sidecars)."""

    service: str = Field(description="Whose VirtualService changes (it needs a calling service).")
    phase: str = Field(description="The phase in which the change is written.")
    at: Duration = Field(default=0.0, description="Offset from the start of that phase.")


class ConfigPropagationSlo(SloBase):
    """A policy change reaches every affected proxy (istiod's ``/debug/syncz`` SYNCED with
    it, and the header in each proxy's routes) within ``max`` of the moment it can: the
    change's write, or, when a control-plane fault of the scenario is acting then, that
    fault's end. One measurement, judged exactly; not SYNCED by the end of the run: FAIL.
    ``--mesh istio`` only."""

    kind: Literal["configPropagation"]
    change: ConfigChange
    max: Duration


class DeniedSlo(SloBase):
    """Every request of ``probe`` in the phase is refused by the callee's authorization
    (403 ``RBAC: access denied``); any that got through is named (harness.slo.security)."""

    kind: Literal["denied"]
    probe: str = Field(description="The probe (probes[].name) whose requests must be denied.")


class PlaintextRejectedSlo(SloBase):
    """Every request of a ``plaintext`` probe in the phase gets no HTTP answer: the callee's
    sidecar takes mutual TLS only (PeerAuthentication STRICT)."""

    kind: Literal["plaintextRejected"]
    probe: str = Field(description="A probe with as: plaintext.")


Slo = Annotated[
    ErrorRateSlo
    | LatencySlo
    | LatencyShiftSlo
    | RetryAmplificationSlo
    | EjectionSlo
    | SheddingSlo
    | RecoverySlo
    | ConfigPropagationSlo
    | DeniedSlo
    | PlaintextRejectedSlo
    | TrafficShareSlo
    | SubsetErrorRateSlo
    | SubsetLatencySlo,
    Field(discriminator="kind"),
]
SLO_KINDS: tuple[str, ...] = get_args(SloKind)  # the journal records the same kinds


__all__ = [
    "SLO_KINDS",
    "ConfigChange",
    "ConfigPropagationSlo",
    "DeniedSlo",
    "Edge",
    "EjectionSlo",
    "ErrorRateSlo",
    "LatencyShiftSlo",
    "LatencySlo",
    "PlaintextRejectedSlo",
    "RecoverySlo",
    "RetryAmplificationSlo",
    "SampleSlo",
    "SheddingSlo",
    "Slo",
    "SloBase",
    "SubsetErrorRateSlo",
    "SubsetLatencySlo",
    "TrafficShareSlo",
]
