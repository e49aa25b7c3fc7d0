"""Differential fidelity of traffic distribution: the routing fields of an edge (issue 12).

:mod:`harness.mesh.fidelity` compares per edge the fields that decide resilience; this adds
the ones that decide *where* a request goes, read from a virtual host of an Envoy
``/config_dump`` (istiod's or the translation's, :mod:`harness.mesh.routing`):

* ``route.table``: every route of the virtual host in order: its match (path prefix or
  exact path, header matchers), its target (one cluster, or weighted clusters with their
  weights) and its mirror policies (cluster, percentage, ``trace_sampled``).
* ``subset <name>.<field>``: the cluster view (policy and TLS origination, SNI included) of
  every subset cluster a route of the virtual host sends to.

Cluster names are mapped as for edges: istiod's
``outbound|8080|v2|reviews.<ns>.svc.cluster.local`` and the translation's
``outbound|8080|v2|reviews`` are both ``reviews:8080/v2``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any

Json = dict[str, Any]
_DENOMINATORS = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}


def cluster_key(name: str) -> str:
    """``outbound|8080|v2|reviews.ns.svc.cluster.local`` → ``reviews:8080/v2``; other names
    (``PassthroughCluster``, ``inbound|8080||``) unchanged."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] != "outbound":
        return name
    _, port, subset, host = parts
    service = host.split(".", 1)[0] if host.endswith(".svc.cluster.local") else host
    return f"{service}:{port}" + (f"/{subset}" if subset else "")


def subset_of(name: str) -> str | None:
    parts = name.split("|")
    return parts[2] or None if len(parts) == 4 and parts[0] == "outbound" else None


def route_clusters(action: Json) -> list[str]:
    """The clusters a route action sends to (one, or every weighted cluster with a weight:
    one of weight 0 is never picked, and istiod leaves it out)."""
    if isinstance(action.get("cluster"), str):
        return [action["cluster"]]
    weighted = action.get("weighted_clusters", {}).get("clusters", [])
    return [str(c.get("name")) for c in weighted if int(c.get("weight", 0)) > 0]


def _percent(fraction: Json) -> Decimal:
    value = fraction.get("default_value", {})
    size = _DENOMINATORS[str(value.get("denominator", "HUNDRED"))]
    return (Decimal(int(value.get("numerator", 0))) * 100 / size).normalize()


def _match(match: Json) -> tuple[Any, ...]:
    headers = []
    for header in match.get("headers", []):
        spec = {k: v for k, v in header.items() if k != "name"}
        headers.append((header.get("name"), tuple(sorted((k, str(v)) for k, v in spec.items()))))
    return (
        ("prefix", match.get("prefix")),
        ("path", match.get("path")),
        ("headers", tuple(headers)),
    )


def _target(action: Json) -> tuple[Any, ...]:
    if isinstance(action.get("cluster"), str):
        return ("cluster", cluster_key(action["cluster"]))
    weighted = action.get("weighted_clusters", {}).get("clusters", [])
    return (
        "weighted",
        tuple(
            sorted(
                (cluster_key(str(c.get("name"))), int(c.get("weight", 0)))
                for c in weighted
                if int(c.get("weight", 0)) > 0  # never picked: istiod leaves it out
            )
        ),
    )


def _mirrors(action: Json) -> tuple[Any, ...]:
    return tuple(
        (
            cluster_key(str(m.get("cluster"))),
            _percent(m.get("runtime_fraction", {"default_value": {"numerator": 100}})),
            bool(m.get("trace_sampled", True)),
        )
        for m in action.get("request_mirror_policies", [])
    )


def route_table(virtual_host: Json) -> tuple[Any, ...]:
    return tuple(
        (_match(route.get("match", {})), _target(route["route"]), _mirrors(route["route"]))
        for route in virtual_host.get("routes", [])
        if "route" in route
    )


def traffic_fields(
    virtual_host: Json,
    clusters: Mapping[str, Json],
    cluster_fields: Callable[[Json], Iterator[tuple[str, Any]]],
) -> dict[str, Any]:
    """The routing fields of the edge served by ``virtual_host``; ``cluster_fields``: one
    cluster's compared fields (policy and TLS)."""
    fields: dict[str, Any] = {"route.table": route_table(virtual_host)}
    for route in virtual_host.get("routes", []):
        for name in route_clusters(route.get("route", {})):
            subset = subset_of(name)
            if subset is None:
                continue
            if name not in clusters:
                fields[f"subset {subset}.cluster"] = f"missing: {cluster_key(name)}"
                continue
            for key, value in cluster_fields(clusters[name]):
                fields[f"subset {subset}.{key}"] = value
    return fields
