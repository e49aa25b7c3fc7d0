"""Traffic distribution in the mesh policy, in Istio's vocabulary (issue 12).

A destination's ``subsets`` are DestinationRule subsets (a name and the pod labels that
select it); its ``http`` list is a VirtualService's ordered HTTP routes: ``match``
conditions (headers, URI prefix, the caller's labels), weighted ``route`` destinations by
subset, and a ``mirror`` with ``mirrorPercentage``. The first route whose match holds
wins; with ``http`` given and no route matching, the caller's sidecar answers 404, as
Istio's does.

The destination of a route is always the service the policy is for (Istio's ``host``,
implied); a ``mirror`` names its ``host`` and may name a subset of it.

Cross-references (unknown subsets, subsets that select no version, mirrors to unknown
services, weights) are checked by :func:`traffic_problems`, which
``Scenario.reference_problems()`` calls so each is reported at its file:line:col.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Final

from pydantic import Field, field_validator, model_validator

from harness.app.topology import Topology
from harness.scenario.base import MAX_ITEMS, Model, check_name

MAX_ROUTES: Final = 100
# An HTTP header name as Istio's validation takes it in a match (lowercase token
# characters; ``ValidateHTTPHeaderName``'s rule, which also refuses upper case).
_HEADER = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_LABEL = re.compile(r"([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?")

Problem = tuple[tuple[str | int, ...], str]


class Subset(Model):
    """A DestinationRule subset: the endpoints whose pod labels include ``labels``."""

    name: str = Field(description="The subset's name, e.g. v2 (a DNS label).")
    labels: dict[str, str] = Field(min_length=1, max_length=32)

    _name = field_validator("name")(check_name)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not key or not _LABEL.fullmatch(key) or not _LABEL.fullmatch(text):
                raise ValueError(f"{key}: {text} is not a Kubernetes label selector")
        return value


class StringMatch(Model):
    """Istio ``StringMatch``: exactly one of ``exact`` or ``prefix``."""

    exact: str | None = Field(default=None, max_length=1024)
    # Not empty: istiod turns ``prefix: ""`` into a "header present" matcher that the
    # pinned Envoy rejects (the whole route configuration: measured by the fidelity test).
    prefix: str | None = Field(default=None, min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _one(self) -> StringMatch:
        if (self.exact is None) == (self.prefix is None):
            raise ValueError("give exactly one of exact or prefix")
        return self


class UriMatch(Model):
    """The request path: only ``prefix`` (``/`` matches every path)."""

    prefix: str = Field(pattern=r"^/", max_length=1024)


class HttpMatch(Model):
    """One match condition: every given field must hold (Istio ``HTTPMatchRequest``)."""

    name: str | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict, max_length=32)
    uri: UriMatch | None = None
    source_labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description="The caller's pod labels (app, version, ...) must include these.",
    )

    @field_validator("name")
    @classmethod
    def _match_name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value)

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, StringMatch]) -> dict[str, StringMatch]:
        for name in value:
            if not _HEADER.fullmatch(name):
                raise ValueError(
                    f"{name!r} is not a header name Istio accepts in a match: lowercase "
                    "letters, digits and '-' (no upper case)"
                )
        return value


class RouteDestination(Model):
    """A weighted destination: a subset of the policy's service (none: every endpoint)."""

    subset: str | None = None
    weight: int | None = Field(default=None, ge=0, le=100, description="Percent; sum 100.")


class Mirror(Model):
    """Where a copy of each request goes (its answer is thrown away)."""

    host: str
    subset: str | None = None


class Percent(Model):
    value: float = Field(ge=0, le=100)


class HttpRoute(Model):
    """One VirtualService HTTP route."""

    name: str | None = None
    match: list[HttpMatch] = Field(default_factory=list, max_length=MAX_ITEMS)
    route: list[RouteDestination] = Field(min_length=1, max_length=MAX_ROUTES)
    mirror: Mirror | None = None
    mirror_percentage: Percent | None = Field(
        default=None, description="Share of requests mirrored; omitted: 100%."
    )

    @field_validator("name")
    @classmethod
    def _route_name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value)

    @model_validator(mode="after")
    def _weights(self) -> HttpRoute:
        if len(self.route) > 1:
            weights = [dest.weight for dest in self.route]
            if None in weights or sum(w or 0 for w in weights) != 100:
                raise ValueError(
                    "with several destinations every one needs a weight (percent) and the "
                    f"weights must sum to 100 (they are {weights})"
                )
        elif self.route[0].weight not in (None, 100):
            raise ValueError("a single destination takes every request: weight 100 or none")
        if self.mirror_percentage is not None and self.mirror is None:
            raise ValueError("mirrorPercentage needs a mirror")
        return self


def subset_problems(
    where: tuple[str | int, ...], service: str, subsets: list[Subset], topology: Topology
) -> Iterator[Problem]:
    """Duplicate subset names and subsets that select no version of ``service``."""
    if service not in topology.service_names:
        return
    spec = topology.service(service)
    pods = [{**variant.pod_labels, "app": service} for variant in spec.variants]
    seen: set[str] = set()
    for index, subset in enumerate(subsets):
        if subset.name in seen:
            yield (*where, index, "name"), f"duplicate subset {subset.name!r}"
        seen.add(subset.name)
        if not any(subset.labels.items() <= pod.items() for pod in pods):
            versions = ", ".join(
                " ".join(f"{k}={v}" for k, v in sorted(pod.items())) for pod in pods
            )
            yield (
                (*where, index, "labels"),
                f"selects no pod of {service!r}; its versions' labels: {versions}",
            )


def route_problems(
    where: tuple[str | int, ...],
    routes: list[HttpRoute],
    subsets: Mapping[str, list[Subset]],
    service: str,
) -> Iterator[Problem]:
    """Route destinations and mirrors that name an unknown subset or service.
    ``subsets``: every destination service → its declared subsets."""
    own = {subset.name for subset in subsets.get(service, [])}
    for r_index, route in enumerate(routes):
        for d_index, dest in enumerate(route.route):
            if dest.subset is not None and dest.subset not in own:
                yield (
                    (*where, r_index, "route", d_index, "subset"),
                    _unknown_subset(dest.subset, service, own),
                )
        mirror = route.mirror
        if mirror is None:
            continue
        if mirror.host not in subsets:
            yield (
                (*where, r_index, "mirror", "host"),
                f"unknown service {mirror.host!r}; valid: {', '.join(sorted(subsets))}",
            )
            continue
        theirs = {subset.name for subset in subsets[mirror.host]}
        if mirror.subset is not None and mirror.subset not in theirs:
            yield (
                (*where, r_index, "mirror", "subset"),
                _unknown_subset(mirror.subset, mirror.host, theirs),
            )


def _unknown_subset(subset: str, service: str, valid: set[str]) -> str:
    listed = ", ".join(sorted(valid)) if valid else "none (declare subsets: in its policy)"
    return f"unknown subset {subset!r} of {service!r}; valid: {listed}"


def shifted_routes(routes: list[HttpRoute], subset: str) -> list[int]:
    """The indexes of the routes a traffic shift to ``subset`` changes: those with exactly
    two destinations, one of them ``subset``."""
    return [
        index
        for index, route in enumerate(routes)
        if len(route.route) == 2
        and subset in {dest.subset for dest in route.route}
        and route.route[0].subset != route.route[1].subset
    ]
