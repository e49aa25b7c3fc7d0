"""Traffic distribution for ``--mesh envoy``: DestinationRule subsets and VirtualService
HTTP routes on the **caller's** sidecar, with Istio's semantics (issue 12).

Read in the pinned istiod (pilot/pkg/networking/core/route/route.go and
cluster_builder.go ``buildSubsetCluster``; never copied):

* A subset is a cluster of its own, ``outbound|8080|<subset>|<service>`` (istiod:
  ``…|<service>.<namespace>.svc.cluster.local``), holding the endpoints whose pod labels
  include the subset's labels, with the DestinationRule's traffic policy and the SNI
  ``outbound_.8080_.<subset>_.<service>.<namespace>.svc.cluster.local``. The service's
  default cluster (every endpoint) stays.
* Each ``http`` route becomes one Envoy route per ``match`` (one route when it has none),
  in order; headers are matched sorted by name (``exact`` / ``prefix`` string matches; the
  model refuses an empty prefix, which istiod makes a "present" matcher the pinned Envoy
  rejects), a URI prefix is the route's ``prefix`` (else ``/``). A
  route with no match (or a catch-all match) ends the list: nothing after it can match.
* ``sourceLabels``: a match is kept only in the sidecars of callers whose pod labels
  include them (istiod builds routes per proxy). If no route is left, the VirtualService
  does not apply to that caller and it gets the default route.
* One destination → the route's ``cluster``; several → ``weighted_clusters`` with the
  percent weights, a zero weight left out.
* ``mirror`` → ``request_mirror_policies`` with the mirror's cluster, ``runtime_fraction``
  ``mirrorPercentage × 10000`` per MILLION (100 per HUNDRED when not given; 0: none) and
  ``trace_sampled: false``.
* The destination's ``timeout`` and ``retries`` apply to every route.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from harness.app.topology import Topology
from harness.scenario.models import DestinationPolicy
from harness.scenario.traffic import HttpMatch, HttpRoute, Mirror, Subset

Json = dict[str, Any]
Labels = tuple[tuple[str, str], ...]
SERVICE_PORT = 8080


def subset_cluster_name(service: str, subset: str | None) -> str:
    """``outbound|8080|v2|reviews`` (``outbound|8080||reviews`` for no subset)."""
    return f"outbound|{SERVICE_PORT}|{subset or ''}|{service}"


def subset_sni(service: str, subset: str, namespace: str) -> str:
    return f"outbound_.{SERVICE_PORT}_.{subset}_.{service}.{namespace}.svc.cluster.local"


def pod_labels(topology: Topology, service: str, index: int) -> Labels:
    """The labels of ``service``'s pod number ``index`` (``app``, ``version``, its own)."""
    variant = topology.service(service).variant_of(index)
    return tuple(sorted({**variant.pod_labels, "app": service}.items()))


def selects(subset: Subset, labels: Labels) -> bool:
    """True when an endpoint with pod ``labels`` belongs to ``subset``."""
    return subset.labels.items() <= dict(labels).items()


def upstream_services(
    calls: Iterable[str], destinations: Mapping[str, DestinationPolicy]
) -> tuple[str, ...]:
    """The services a caller needs clusters for: those it calls, then the mirror targets of
    their routes (a mirrored copy leaves through the caller's sidecar too)."""
    out = dict.fromkeys(calls)
    for service in list(out):
        policy = destinations.get(service)
        for route in policy.http if policy else ():
            if route.mirror is not None:
                out.setdefault(route.mirror.host)
    return tuple(out)


def subset_clusters(
    base: Json,
    service: str,
    policy: DestinationPolicy | None,
    labels: Mapping[str, Labels],
    namespace: str | None,
) -> list[Json]:
    """The subset clusters of ``service`` built from its default cluster ``base``.
    ``labels``: endpoint address ``host:port`` → that endpoint's pod labels."""
    out: list[Json] = []
    for subset in policy.subsets if policy else ():
        cluster = copy.deepcopy(base)
        name = subset_cluster_name(service, subset.name)
        cluster["name"] = name
        assignment = cluster["load_assignment"]
        assignment["cluster_name"] = name
        for locality in assignment["endpoints"]:
            locality["lb_endpoints"] = [
                ep
                for ep in locality["lb_endpoints"]
                if selects(subset, labels.get(_address(ep), ()))
            ]
        socket = cluster.get("transport_socket")
        if socket is not None and namespace is not None:
            socket["typed_config"]["sni"] = subset_sni(service, subset.name, namespace)
        out.append(cluster)
    return out


def _address(endpoint: Json) -> str:
    sock = endpoint["endpoint"]["address"]["socket_address"]
    return f"{sock['address']}:{sock['port_value']}"


def _header(name: str, match: Any) -> Json:
    if match.exact is not None:
        return {"name": name, "string_match": {"exact": match.exact}}
    return {"name": name, "string_match": {"prefix": match.prefix}}


def _route_match(match: HttpMatch | None) -> Json:
    out: Json = {"prefix": match.uri.prefix if match and match.uri else "/"}
    if match is not None and match.headers:
        out["headers"] = [_header(name, match.headers[name]) for name in sorted(match.headers)]
    return out


def _catch_all(match: Json) -> bool:
    return match == {"prefix": "/"}


def _mirror_policy(mirror: Mirror, percent: float | None) -> Json | None:
    if percent is None:
        fraction: Json = {"numerator": 100}
    elif percent > 0:
        fraction = {"numerator": round(percent * 10000), "denominator": "MILLION"}
    else:
        return None
    return {
        "cluster": subset_cluster_name(mirror.host, mirror.subset),
        "runtime_fraction": {"default_value": fraction},
        "trace_sampled": False,
    }


def weight_key(service: str, route_index: int, subset: str | None) -> str:
    """The runtime key that overrides one weighted cluster's weight in the callers'
    sidecars (Envoy: the route's ``runtime_key_prefix`` + ``.`` + the cluster's name):
    how a traffic shift (progressive delivery) moves weights without a restart."""
    return f"{_weight_prefix(service, route_index)}.{subset_cluster_name(service, subset)}"


def _weight_prefix(service: str, route_index: int) -> str:
    return f"harness.weights.{service}.{route_index}"


def _action(service: str, index: int, route: HttpRoute, template: Json) -> Json:
    action = {k: v for k, v in copy.deepcopy(template).items() if k != "cluster"}
    if len(route.route) == 1:
        action["cluster"] = subset_cluster_name(service, route.route[0].subset)
    else:
        # Deliberate difference: istiod leaves a 0-weight destination out; it stays here
        # (Envoy never picks a weight of 0) so a traffic shift can raise its weight through
        # the runtime key. The differential test reads 0 weights as absent.
        action["weighted_clusters"] = {
            "clusters": [
                {"name": subset_cluster_name(service, d.subset), "weight": d.weight}
                for d in route.route
            ],
            "runtime_key_prefix": _weight_prefix(service, index),
        }
    if route.mirror is not None:
        mirror = _mirror_policy(
            route.mirror, route.mirror_percentage.value if route.mirror_percentage else None
        )
        if mirror is not None:
            action["request_mirror_policies"] = [mirror]
    return action


def _source_ok(match: HttpMatch | None, caller: Labels) -> bool:
    return match is None or match.source_labels.items() <= dict(caller).items()


def routes(service: str, policy: DestinationPolicy, caller: Labels, default: Json) -> list[Json]:
    """The caller's Envoy routes to ``service``; ``default``: the route istiod would give
    without a VirtualService's ``http`` (its action carries the timeout and retries, its
    other keys, e.g. headers to add, are kept on every route)."""
    out: list[Json] = []
    for index, route in enumerate(policy.http):
        name = route.name or f"{service}-{index}"
        matches: list[HttpMatch | None] = list(route.match) or [None]
        for match in matches:
            if not _source_ok(match, caller):
                continue
            entry = copy.deepcopy(default)
            entry["name"] = f"{name}.{match.name}" if match and match.name else name
            entry["match"] = _route_match(match)
            entry["route"] = _action(service, index, route, default["route"])
            out.append(entry)
            if _catch_all(entry["match"]):
                return out
    return out or [default]
