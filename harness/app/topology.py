"""The sample app's topology: which services exist and whom each one calls.

``shop``::

    ingress ─► frontend ─┬─► catalog (3) ─► inventory (2)
                         └─► pricing (1)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the sample app."""

    name: str
    calls: tuple[str, ...]
    replicas: int
    service_time_ms: float


@dataclass(frozen=True)
class Topology:
    """A sample app: its services and the service the ingress routes to."""

    name: str
    entry: str
    services: tuple[ServiceSpec, ...]

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


SHOP = Topology(
    name="shop",
    entry="frontend",
    services=(
        ServiceSpec("frontend", calls=("catalog", "pricing"), replicas=1, service_time_ms=2.0),
        ServiceSpec("catalog", calls=("inventory",), replicas=3, service_time_ms=3.0),
        ServiceSpec("inventory", calls=(), replicas=2, service_time_ms=2.0),
        ServiceSpec("pricing", calls=(), replicas=1, service_time_ms=1.0),
    ),
)

TOPOLOGIES: dict[str, Topology] = {SHOP.name: SHOP}
