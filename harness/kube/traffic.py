"""DestinationRule subsets and VirtualService HTTP routes as Istio objects (issue 12).

Called by :mod:`harness.kube.render` (the single source of truth of the policy as objects):
the scenario's ``subsets`` and ``http`` routes (:mod:`harness.scenario.traffic`) are written
field for field in Istio's spelling; the destination's ``timeout`` and ``retries`` go on
every route, as one VirtualService carries them for the whole service.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Final, TypeAlias

from harness.scenario.models import DestinationPolicy
from harness.scenario.traffic import HttpMatch, HttpRoute, Mirror

JsonValue: TypeAlias = str | int | float | bool | list["JsonValue"] | dict[str, "JsonValue"] | None
JsonObject: TypeAlias = dict[str, JsonValue]
BaseRoute = Callable[[str, str, DestinationPolicy], JsonObject]
SERVICE_PORT: Final = 8080  # the render module's (it imports this one)


def subsets(policy: DestinationPolicy) -> list[JsonValue]:
    return [{"name": s.name, "labels": dict(s.labels)} for s in policy.subsets]


def _destination(host: str, subset: str | None) -> JsonObject:
    out: JsonObject = {"host": host, "port": {"number": SERVICE_PORT}}
    if subset is not None:
        out["subset"] = subset
    return out


def _match(match: HttpMatch) -> JsonObject:
    out: JsonObject = {}
    if match.name is not None:
        out["name"] = match.name
    if match.headers:
        out["headers"] = {
            name: ({"exact": m.exact} if m.exact is not None else {"prefix": m.prefix})
            for name, m in match.headers.items()
        }
    if match.uri is not None:
        out["uri"] = {"prefix": match.uri.prefix}
    if match.source_labels:
        out["sourceLabels"] = dict(match.source_labels)
    return out


def _mirror(mirror: Mirror) -> JsonObject:
    return _destination(mirror.host, mirror.subset)


def http_route(service: str, index: int, route: HttpRoute, base: JsonObject) -> JsonObject:
    """One scenario route → Istio ``HTTPRoute``; ``base``: the policy's timeout/retries."""
    out: JsonObject = {"name": route.name or f"{service}-{index}"}
    if route.match:
        out["match"] = [_match(m) for m in route.match]
    destinations: list[JsonValue] = []
    for dest in route.route:
        item: JsonObject = {"destination": _destination(service, dest.subset)}
        if dest.weight is not None and len(route.route) > 1:
            item["weight"] = dest.weight
        destinations.append(item)
    out["route"] = destinations
    if route.mirror is not None:
        out["mirror"] = _mirror(route.mirror)
        if route.mirror_percentage is not None:
            out["mirrorPercentage"] = {"value": route.mirror_percentage.value}
    for key in ("timeout", "retries"):
        if key in base:
            out[key] = copy.deepcopy(base[key])  # one object per route (no YAML anchors)
    return out


def http_routes(service: str, policy: DestinationPolicy, base_route: BaseRoute) -> list[JsonValue]:
    """The VirtualService's ``http`` list of a destination with routes."""
    base = base_route(service, service, policy)
    return [http_route(service, i, route, base) for i, route in enumerate(policy.http)]
