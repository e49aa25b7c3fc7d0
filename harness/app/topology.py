"""The app's topology as the platforms consume it: services, whom each calls, and how.

These are plain frozen dataclasses (the app floor: no pydantic, so app processes stay
light). A scenario declares its services in YAML (``app.services``) or names a preset
(``app.name: shop``, :file:`harness/app/presets/shop.yaml`, written in the same format);
:mod:`harness.scenario.app` validates either and builds a :class:`Topology`.

``shop``::

    ingress ─► frontend ─┬─► catalog (3) ─► inventory (2)
                         └─► pricing (1)

Each service has one or more :class:`Variant` (versions, as Kubernetes runs one
Deployment per version): instances are numbered per service across its variants in
declaration order, so instance ``reviews-2`` of ``reviews: [v1 ×2, v2 ×1]`` is ``v2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final, Literal

from harness.units import format_duration, parse_duration

__all__ = [
    "DEFAULT_VERSION",
    "Call",
    "CallMode",
    "Distribution",
    "ServiceSpec",
    "ServiceTimeSpec",
    "Topology",
    "Variant",
]

DEFAULT_VERSION: Final = "v1"
"""The ``version`` label of a service that declares no versions (as Istio's samples use)."""
LOGNORMAL_Z99: Final = 2.3263478740408408
"""The standard normal's 0.99 quantile: a lognormal with median m has p99 = m*exp(sigma*z99)."""

Distribution = Literal["fixed", "uniform", "exponential", "lognormal"]
CallMode = Literal["parallel", "sequential"]


@dataclass(frozen=True)
class ServiceTimeSpec:
    """How long an instance works on a request before calling anyone (seconds).

    ``fixed``: always ``value``. ``uniform``: ``value`` ± ``jitter`` (a share of it; the
    shop's times, ``3ms`` = 1.5-4.5 ms). ``exponential``: mean ``value``. ``lognormal``:
    median ``value`` and 99th percentile ``p99``.

    On the app's command line (``--service-time``) it is :meth:`argument`: ``3ms`` (uniform,
    the jitter given apart), ``fixed:3ms``, ``exponential:3ms``, ``lognormal:3ms:20ms``.
    """

    distribution: Distribution = "uniform"
    value: float = 0.0
    jitter: float = 0.5
    p99: float | None = None

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError(f"service time must be >= 0 (got {self.value}s)")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be in [0, 1], e.g. 0.5 for ±50% (got {self.jitter})")
        if self.distribution == "lognormal" and (
            self.p99 is None or self.value <= 0 or self.p99 < self.value
        ):
            raise ValueError(
                f"a lognormal service time needs 0 < p50 <= p99 (got p50 {self.value}s, "
                f"p99 {self.p99}s)"
            )

    @property
    def sigma(self) -> float:
        """The lognormal's sigma (of the log): p99 = p50 * exp(sigma * z99)."""
        if self.p99 is None or self.value <= 0:
            return 0.0
        return math.log(self.p99 / self.value) / LOGNORMAL_Z99

    def argument(self) -> str:
        """The ``--service-time`` text of the app process (see :meth:`parse`)."""
        value = format_duration(self.value)
        if self.distribution == "uniform":
            return value
        if self.distribution == "lognormal":
            return f"lognormal:{value}:{format_duration(self.p99 or 0.0)}"
        return f"{self.distribution}:{value}"

    @classmethod
    def parse(cls, text: str, jitter: float = 0.5) -> ServiceTimeSpec:
        """The inverse of :meth:`argument`; ``jitter`` applies to the uniform form only.

        >>> ServiceTimeSpec.parse("lognormal:3ms:20ms").p99
        0.02
        """
        kind, _, rest = text.partition(":")
        if not rest:
            return cls("uniform", parse_duration(text), jitter=jitter)
        if kind == "lognormal":
            p50, sep, p99 = rest.partition(":")
            if not sep:
                raise ValueError(f"{text!r}: write lognormal:P50:P99, e.g. lognormal:3ms:20ms")
            return cls("lognormal", parse_duration(p50), p99=parse_duration(p99))
        if kind == "fixed":
            return cls("fixed", parse_duration(rest))
        if kind == "exponential":
            return cls("exponential", parse_duration(rest))
        raise ValueError(
            f"{text!r} is not a service time: write 3ms (uniform with --jitter), fixed:3ms, "
            "exponential:3ms or lognormal:3ms:20ms"
        )


@dataclass(frozen=True)
class Call:
    """One dependency call: made on a share ``probability`` of the caller's requests."""

    service: str
    probability: float = 1.0

    def argument(self) -> str:
        """``catalog`` or ``catalog@0.5``: the app's ``--calls`` text."""
        return self.service if self.probability == 1.0 else f"{self.service}@{self.probability!r}"


@dataclass(frozen=True)
class Variant:
    """One version of a service: its instances and how they behave."""

    version: str
    replicas: int
    service_time: ServiceTimeSpec
    error_rate: float = 0.0
    labels: tuple[tuple[str, str], ...] = ()  # extra pod labels; ``version`` is always set

    @property
    def pod_labels(self) -> dict[str, str]:
        return {**dict(self.labels), "version": self.version}


@dataclass(frozen=True)
class ServiceSpec:
    """One service: its versions, whom it calls (``outbound``), and its answers."""

    name: str
    variants: tuple[Variant, ...]
    outbound: tuple[Call, ...] = ()
    call_mode: CallMode = "parallel"
    response_size: int = 0  # bytes of body; 0: as long as the JSON is

    @property
    def calls(self) -> tuple[str, ...]:
        """The services it may call, in declaration order."""
        return tuple(call.service for call in self.outbound)

    @property
    def replicas(self) -> int:
        return sum(variant.replicas for variant in self.variants)

    @property
    def versioned(self) -> bool:
        """True when the scenario declared versions (else one implicit ``v1``)."""
        return len(self.variants) > 1 or self.variants[0].version != DEFAULT_VERSION

    def variant_of(self, index: int) -> Variant:
        """The variant of this service's instance number ``index`` (0-based, across
        variants in declaration order; an index past the end belongs to the last one)."""
        for variant in self.variants:
            if index < variant.replicas:
                return variant
            index -= variant.replicas
        return self.variants[-1]

    def instance_name(self, index: int) -> str:
        """``catalog-0``; with declared versions ``reviews-v2-0`` (numbered per version)."""
        if not self.versioned:
            return f"{self.name}-{index}"
        first = 0
        for variant in self.variants:
            if index < first + variant.replicas:
                return f"{self.name}-{variant.version}-{index - first}"
            first += variant.replicas
        return f"{self.name}-{index}"

    def app_arguments(self, index: int) -> list[str]:
        """What instance ``index`` is told on its command line about its behaviour (every
        platform adds where it listens and where its sidecar is)."""
        variant = self.variant_of(index)
        argv = ["--service-time", variant.service_time.argument()]
        if variant.service_time.distribution == "uniform" and variant.service_time.jitter != 0.5:
            argv += ["--jitter", repr(variant.service_time.jitter)]
        for call in self.outbound:
            argv += ["--calls", call.argument()]
        if self.call_mode != "parallel":
            argv += ["--call-mode", self.call_mode]
        if variant.error_rate:
            argv += ["--error-rate", repr(variant.error_rate)]
        if self.response_size:
            argv += ["--response-size", str(self.response_size)]
        if self.versioned:
            argv += ["--version", variant.version]
        return argv


@dataclass(frozen=True)
class Topology:
    """An app: its services and the service the ingress routes to."""

    name: str
    entry: str
    services: tuple[ServiceSpec, ...] = field(default=())

    def service(self, name: str) -> ServiceSpec:
        for spec in self.services:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.services)

    def callers_of(self, name: str) -> tuple[str, ...]:
        """Services that call ``name`` (the ingress is not a service)."""
        return tuple(spec.name for spec in self.services if name in spec.calls)

    def edges(self) -> tuple[tuple[str, str], ...]:
        """Every caller → callee edge, the ingress edge first."""
        inner = tuple((spec.name, callee) for spec in self.services for callee in spec.calls)
        return (("ingress", self.entry), *inner)
