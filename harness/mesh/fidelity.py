"""Differential fidelity: the resilience fields of two Envoy ``/config_dump`` documents.

:func:`resilience_view` reads one Envoy's ``/config_dump`` (dynamic resources from istiod,
or the static bootstrap of :mod:`harness.mesh.envoy` loaded into Envoy) and returns, per
edge, the fields that decide how the proxy behaves under a fault, as **effective** values:
a field Envoy leaves out is replaced by the default Envoy applies (``timeout`` 15 s,
``num_retries`` 1, circuit breakers 1024/1024/1024/3, ...), so "left out" and "set to the
default" compare equal, and durations are seconds. :func:`compare` lines the two views up
and returns every difference as a readable line.

Edges, named the same on both sides:

* ``→ <service>:<port>``: an outbound route (found through the cluster it points to) and
  that cluster, plus the connection manager of the listener holding the route. Cluster
  names are mapped explicitly: istiod's ``outbound|8080||catalog.<ns>.svc.cluster.local``
  and the translation's ``outbound|8080||catalog`` are both ``catalog:8080``.
* ``inbound:<port>``: the inbound route to ``inbound|<port>||`` and that cluster, plus
  its connection manager. istiod's ``virtualInbound`` catch-all (to
  ``InboundPassthroughCluster``) serves no service port and is not an edge.

Compared: route ``timeout``, ``idle_timeout``, ``max_stream_duration``; the retry policy
(``retry_on`` as a set, ``num_retries``, ``per_try_timeout``, ``per_try_idle_timeout``,
host predicates, ``host_selection_retry_max_attempts``, ``retriable_status_codes``, retriable
headers, back-off, retry priority), from the route or else its virtual host; ``hedge_policy``;
the cluster's ``connect_timeout``, ``lb_policy`` (and least-request settings), circuit
breakers per priority (and retry budget), outlier detection, panic threshold, upstream
protocol, ``max_requests_per_connection``, upstream ``idle_timeout`` and
``max_connection_duration``; the connection manager's ``stream_idle_timeout``,
``request_timeout``, ``request_headers_timeout``, downstream ``idle_timeout``,
``max_connection_duration`` and ``max_requests_per_connection``; and mutual TLS: per
outbound edge the cluster's TLS origination (mode, SNI, accepted SANs, ALPN; istiod's
``tlsMode: istio`` transport socket match, the one in-mesh endpoints get), per inbound edge
the TLS filter chains (client certificate required, ALPN) and their transport
(``inbound.transport``: ``tls``, ``plaintext``, or both for PERMISSIVE) — compared where the
scenario sets a PeerAuthentication mode; without one istiod's default PERMISSIVE keeps a
plain-text chain the translation (STRICT) has not (docs/istio-semantics.md); and the
inbound RBAC filters (``inbound.rbac``, :func:`harness.mesh.rbac.rbac_view`: actions and
policies by name, and/or sets sorted, Envoy's defaults dropped).

Ignored, because they decide no resilience outcome: names of listeners, routes and virtual
hosts, stat prefixes and ``alt_stat_name``, metadata, decorators, tracing, access logs,
HTTP filters other than RBAC (the harness's fault filters are compared by the fault tests),
certificates (SDS from istiod, files from the harness), TLS versions and ciphers, header
manipulation, ``max_grpc_timeout`` and
``grpc_timeout_header_max`` (gRPC only), cluster discovery type (STATIC vs EDS) and
endpoints, ``upstream_bind_config``, and every service the caller does not call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from harness.mesh import fidelity_routes, routing
from harness.mesh.envoy import (
    SERVICE_PORT,
    Addr,
    IngressSpec,
    SidecarSpec,
    Upstream,
    WorkloadTls,
    fault_sources_of,
    ingress_bootstrap,
    sidecar_bootstrap,
)
from harness.mesh.rbac import plaintext_service, rbac_filters, rbac_view
from harness.scenario.models import Scenario

Json = dict[str, Any]
View = dict[str, dict[str, Any]]  # edge → field → effective value

# Envoy's defaults for the fields it leaves out of a config dump (envoy/api/envoy/config/...).
_ROUTE_TIMEOUT_S: Final = Decimal(15)
_NUM_RETRIES: Final = 1
_HOST_SELECTION_ATTEMPTS: Final = 1
_BACKOFF_BASE_S: Final = Decimal("0.025")
_CONNECT_TIMEOUT_S: Final = Decimal(5)
_UPSTREAM_IDLE_S: Final = Decimal(3600)
_STREAM_IDLE_S: Final = Decimal(300)
_PANIC_THRESHOLD: Final = 50.0
_THRESHOLDS: Final[Mapping[str, int]] = {
    "max_connections": 1024,
    "max_pending_requests": 1024,
    "max_requests": 1024,
    "max_retries": 3,
}
_OUTLIER: Final[Mapping[str, Any]] = {
    "consecutive_5xx": 5,
    "enforcing_consecutive_5xx": 100,
    "consecutive_gateway_failure": 5,
    "enforcing_consecutive_gateway_failure": 0,
    "consecutive_local_origin_failure": 5,
    "enforcing_consecutive_local_origin_failure": 100,
    "split_external_local_origin_errors": False,
    "interval": Decimal(10),
    "base_ejection_time": Decimal(30),
    "max_ejection_time": Decimal(300),
    "max_ejection_percent": 10,
    "enforcing_success_rate": 100,
    "success_rate_minimum_hosts": 5,
    "success_rate_request_volume": 100,
    "enforcing_failure_percentage": 0,
}
HTTP_OPTIONS: Final = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HCM: Final = "envoy.filters.network.http_connection_manager"


def seconds(value: Any) -> Decimal | None:
    """``"0.200s"`` → Decimal("0.2"); None stays None (proto3 Duration JSON)."""
    if value is None:
        return None
    text = str(value)
    if not text.endswith("s"):
        raise ValueError(f"{value!r}: not a protobuf Duration")
    return Decimal(text[:-1]).normalize()


def _seconds_or(value: Any, default: Decimal | None) -> Decimal | None:
    return default if value is None else seconds(value)


def _disabled_if_zero(value: Any) -> Decimal | None:
    """A duration where 0 and "not set" both mean "no limit"."""
    parsed = seconds(value)
    return None if parsed is None or parsed == 0 else parsed


def edge_of_cluster(name: str) -> str | None:
    """``outbound|8080||catalog.ns.svc.cluster.local`` and ``outbound|8080||catalog`` →
    ``→ catalog:8080``; ``inbound|8080||`` → ``inbound:8080``; anything else → None."""
    parts = name.split("|")
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    direction, port, _subset, host = parts
    if direction == "inbound":
        return f"inbound:{port}"
    if direction == "outbound" and host:
        service = host.split(".", 1)[0] if host.endswith(".svc.cluster.local") else host
        return f"→ {service}:{port}"
    return None


# --------------------------------------------------------------------------- routes


def retry_view(policy: Json | None) -> dict[str, Any] | None:
    """A route's ``retry_policy`` as effective values (None: no retries)."""
    if policy is None:
        return None
    backoff = policy.get("retry_back_off") or {}
    base = _seconds_or(backoff.get("base_interval"), _BACKOFF_BASE_S)
    assert base is not None
    conditions = [c.strip() for c in str(policy.get("retry_on", "")).split(",") if c.strip()]
    return {
        "retry_on": tuple(sorted(set(conditions))),
        "num_retries": int(policy.get("num_retries", _NUM_RETRIES)),
        "per_try_timeout": _disabled_if_zero(policy.get("per_try_timeout")),
        "per_try_idle_timeout": _disabled_if_zero(policy.get("per_try_idle_timeout")),
        "retry_host_predicate": tuple(
            sorted(str(p.get("name")) for p in policy.get("retry_host_predicate", []))
        ),
        "host_selection_retry_max_attempts": int(
            policy.get("host_selection_retry_max_attempts", _HOST_SELECTION_ATTEMPTS)
        ),
        "retriable_status_codes": tuple(
            sorted(int(c) for c in policy.get("retriable_status_codes", []))
        ),
        "retriable_headers": _canonical(policy.get("retriable_headers")),
        "retriable_request_headers": _canonical(policy.get("retriable_request_headers")),
        "retry_priority": (policy.get("retry_priority") or {}).get("name"),
        "back_off": (base, _seconds_or(backoff.get("max_interval"), base * 10)),
        "rate_limited_retry_back_off": _canonical(policy.get("rate_limited_retry_back_off")),
    }


def _canonical(value: Any) -> Any:
    """Any JSON value as a hashable, order-stable one (None stays None)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _canonical(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_canonical(v) for v in value)
    return value


def route_view(action: Json, virtual_host: Json) -> dict[str, Any]:
    """One route's resilience fields; its virtual host's retry policy applies when the route
    has none (Envoy's rule)."""
    policy = action.get("retry_policy", virtual_host.get("retry_policy"))
    duration = (action.get("max_stream_duration") or {}).get("max_stream_duration")
    return {
        "route.timeout": _seconds_or(action.get("timeout"), _ROUTE_TIMEOUT_S),
        "route.idle_timeout": _disabled_if_zero(action.get("idle_timeout")),
        "route.max_stream_duration": _disabled_if_zero(duration),
        "route.hedge_policy": _canonical(
            action.get("hedge_policy", virtual_host.get("hedge_policy"))
        ),
        **{f"retry.{k}": v for k, v in _flat_retry(retry_view(policy)).items()},
    }


def _flat_retry(view: dict[str, Any] | None) -> dict[str, Any]:
    if view is None:
        return {"policy": None}
    return {"policy": "set", **view}


# --------------------------------------------------------------------------- clusters


def _http_options(cluster: Json) -> Json:
    options = cluster.get("typed_extension_protocol_options", {}).get(HTTP_OPTIONS, {})
    return options if isinstance(options, dict) else {}


def _upstream_protocol(options: Json) -> str:
    if "explicit_http_config" in options:
        explicit = options["explicit_http_config"]
        return "http2" if "http2_protocol_options" in explicit else "http1"
    if "use_downstream_protocol_config" in options:
        return "downstream"
    if "auto_config" in options:
        return "auto"
    return "http1"


def _thresholds(cluster: Json) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for threshold in cluster.get("circuit_breakers", {}).get("thresholds", []):
        priority = threshold.get("priority", "DEFAULT")
        for name, default in _THRESHOLDS.items():
            found[f"circuit_breakers.{priority}.{name}"] = int(threshold.get(name, default))
        found[f"circuit_breakers.{priority}.retry_budget"] = _canonical(
            threshold.get("retry_budget")
        )
    if not any(key.startswith("circuit_breakers.DEFAULT.") for key in found):
        for name, default in _THRESHOLDS.items():
            found[f"circuit_breakers.DEFAULT.{name}"] = default
        found["circuit_breakers.DEFAULT.retry_budget"] = None
    return found


def _outlier(cluster: Json) -> dict[str, Any]:
    detection = cluster.get("outlier_detection")
    if detection is None:
        return {"outlier_detection": None}
    view: dict[str, Any] = {"outlier_detection": "set"}
    for name, default in _OUTLIER.items():
        value = detection.get(name)
        if isinstance(default, Decimal):
            view[f"outlier_detection.{name}"] = _seconds_or(value, default)
        elif isinstance(default, bool):
            view[f"outlier_detection.{name}"] = bool(value) if value is not None else default
        else:
            view[f"outlier_detection.{name}"] = int(value) if value is not None else default
    return view


def _panic_threshold(cluster: Json) -> float:
    threshold = cluster.get("common_lb_config", {}).get("healthy_panic_threshold")
    if threshold is None:
        return _PANIC_THRESHOLD
    return float(threshold.get("value", 0.0))


def cluster_view(cluster: Json) -> dict[str, Any]:
    options = _http_options(cluster)
    common = options.get("common_http_protocol_options", {})
    per_connection = common.get(
        "max_requests_per_connection", cluster.get("max_requests_per_connection")
    )
    return {
        "cluster.connect_timeout": _seconds_or(cluster.get("connect_timeout"), _CONNECT_TIMEOUT_S),
        "cluster.lb_policy": cluster.get("lb_policy", "ROUND_ROBIN"),
        "cluster.least_request_lb_config": _canonical(cluster.get("least_request_lb_config")),
        "cluster.healthy_panic_threshold": _panic_threshold(cluster),
        "cluster.upstream_protocol": _upstream_protocol(options),
        "cluster.max_requests_per_connection": (
            None if per_connection is None else int(per_connection)
        ),
        "cluster.idle_timeout": _seconds_or(common.get("idle_timeout"), _UPSTREAM_IDLE_S),
        "cluster.max_connection_duration": _disabled_if_zero(common.get("max_connection_duration")),
        **_thresholds(cluster),
        **_outlier(cluster),
    }


TLS_SOCKET: Final = "envoy.transport_sockets.tls"


def _exact_sans(context: Json) -> tuple[str, ...]:
    """The SANs a TLS context accepts, wherever the validation context sits (istiod: the
    combined context's default, untyped; the translation: typed URI matchers)."""
    common = context.get("common_tls_context", {})
    validation = common.get("validation_context") or common.get(
        "combined_validation_context", {}
    ).get("default_validation_context", {})
    found = [m.get("exact") for m in validation.get("match_subject_alt_names", [])]
    found += [
        m.get("matcher", {}).get("exact")
        for m in validation.get("match_typed_subject_alt_names", [])
    ]
    return tuple(sorted(str(san) for san in found if san))


def _has_certificate(context: Json) -> bool:
    common = context.get("common_tls_context", {})
    return bool(common.get("tls_certificates") or common.get("tls_certificate_sds_secret_configs"))


def _upstream_socket(cluster: Json) -> Json | None:
    """The transport socket in-mesh endpoints get: istiod's ``tlsMode: istio`` match, else
    the cluster's own."""
    for match in cluster.get("transport_socket_matches", []):
        if match.get("match", {}).get("tlsMode") == "istio":
            return dict(match.get("transport_socket", {}))
    socket = cluster.get("transport_socket")
    return dict(socket) if socket else None


def upstream_tls_view(cluster: Json) -> dict[str, Any]:
    socket = _upstream_socket(cluster)
    if socket is None or socket.get("name") != TLS_SOCKET:
        return {"tls.origination": "none"}
    context = socket.get("typed_config", {})
    return {
        "tls.origination": "mutual" if _has_certificate(context) else "simple",
        "tls.sni": context.get("sni"),
        "tls.accepted_sans": _exact_sans(context),
        "tls.alpn": tuple(context.get("common_tls_context", {}).get("alpn_protocols", [])),
    }


def downstream_tls_view(chain: Json) -> dict[str, Any] | None:
    """TLS fields of an inbound filter chain; None for a plain-text chain."""
    socket = chain.get("transport_socket", {})
    if socket.get("name") != TLS_SOCKET:
        return None
    context = socket.get("typed_config", {})
    return {
        "tls.require_client_certificate": bool(context.get("require_client_certificate")),
        "tls.client_ca": bool(
            context.get("common_tls_context", {}).get("validation_context")
            or context.get("common_tls_context", {}).get("combined_validation_context")
        ),
        "tls.alpn": tuple(context.get("common_tls_context", {}).get("alpn_protocols", [])),
    }


def _hcm_view(hcm: Json) -> dict[str, Any]:
    common = hcm.get("common_http_protocol_options", {})
    per_connection = common.get("max_requests_per_connection")
    return {
        "listener.stream_idle_timeout": _seconds_or(hcm.get("stream_idle_timeout"), _STREAM_IDLE_S),
        "listener.request_timeout": _disabled_if_zero(hcm.get("request_timeout")),
        "listener.request_headers_timeout": _disabled_if_zero(hcm.get("request_headers_timeout")),
        "listener.idle_timeout": _seconds_or(common.get("idle_timeout"), _UPSTREAM_IDLE_S),
        "listener.max_connection_duration": _disabled_if_zero(
            common.get("max_connection_duration")
        ),
        "listener.max_requests_per_connection": (
            None if per_connection is None else int(per_connection)
        ),
    }


# --------------------------------------------------------------------------- the dump


@dataclass(frozen=True)
class _Dump:
    listeners: tuple[Json, ...]
    clusters: Mapping[str, Json]
    routes: Mapping[str, Json]
    # cluster → whether any endpoint selects istiod's ``tlsMode: istio`` socket match (only
    # in a dump read with ``?include_eds``; a cluster missing here is not decided by it).
    istio_tls_endpoints: Mapping[str, bool] = field(default_factory=dict)


def _section(dump: Json, kind: str) -> Json:
    for config in dump.get("configs", []):
        if str(config.get("@type", "")).endswith(f".{kind}"):
            return dict(config)
    return {}


def _read_dump(dump: Json) -> _Dump:
    listeners_dump = _section(dump, "ListenersConfigDump")
    listeners = [entry["listener"] for entry in listeners_dump.get("static_listeners", [])]
    listeners += [
        entry["active_state"]["listener"]
        for entry in listeners_dump.get("dynamic_listeners", [])
        if "active_state" in entry
    ]
    clusters_dump = _section(dump, "ClustersConfigDump")
    clusters = [entry["cluster"] for entry in clusters_dump.get("static_clusters", [])]
    clusters += [entry["cluster"] for entry in clusters_dump.get("dynamic_active_clusters", [])]
    routes_dump = _section(dump, "RoutesConfigDump")
    routes = [
        entry["route_config"]
        for key in ("static_route_configs", "dynamic_route_configs")
        for entry in routes_dump.get(key, [])
    ]
    return _Dump(
        tuple(listeners),
        {cluster["name"]: cluster for cluster in clusters},
        {route.get("name", ""): route for route in routes},
        _endpoint_tls(_section(dump, "EndpointsConfigDump")),
    )


def _endpoint_tls(endpoints_dump: Json) -> dict[str, bool]:
    """Cluster → whether any of its endpoints carries ``tlsMode: istio``: istiod strips it
    from the endpoints of a workload whose PeerAuthentication is DISABLE, which is how
    auto-mTLS sends plaintext to it while the cluster keeps its TLS socket match."""
    found: dict[str, bool] = {}
    for entry in endpoints_dump.get("dynamic_endpoint_configs", []):
        config = entry.get("endpoint_config", {})
        marks = [
            endpoint.get("metadata", {})
            .get("filter_metadata", {})
            .get("envoy.transport_socket_match", {})
            .get("tlsMode")
            for locality in config.get("endpoints", [])
            for endpoint in locality.get("lb_endpoints", [])
        ]
        if marks:
            found[config.get("cluster_name", "")] = "istio" in marks
    return found


def _hcms(listener: Json) -> Iterator[tuple[Json, Json]]:
    """(filter chain, connection manager) of every HTTP filter chain of ``listener``."""
    for chain in listener.get("filter_chains", []):
        for network_filter in chain.get("filters", []):
            if network_filter.get("name") == HCM:
                yield chain, network_filter.get("typed_config", {})


def _route_config(hcm: Json, dump: _Dump) -> Json:
    if "route_config" in hcm:
        return dict(hcm["route_config"])
    name = hcm.get("rds", {}).get("route_config_name")
    return dict(dump.routes.get(name, {})) if name is not None else {}


def _edge_fields(dump: _Dump) -> Iterator[tuple[str, dict[str, Any]]]:
    """(edge, fields) for every route to an outbound or inbound cluster, in every
    connection manager of every listener."""
    for listener in dump.listeners:
        for chain, hcm in _hcms(listener):
            listener_fields = _hcm_view(hcm)
            downstream = downstream_tls_view(chain)
            for virtual_host in _route_config(hcm, dump).get("virtual_hosts", []):
                for route in virtual_host.get("routes", []):
                    action = route.get("route", {})
                    cluster = next(iter(fidelity_routes.route_clusters(action)), "")
                    edge = edge_of_cluster(cluster)
                    if edge is None:
                        continue
                    fields = {**listener_fields, **route_view(action, virtual_host)}
                    if edge.startswith("inbound:"):
                        # Per chain; a PERMISSIVE listener's chains merge into both values.
                        fields["inbound.transport"] = "plaintext" if downstream is None else "tls"
                        fields["inbound.rbac"] = rbac_view(hcm.get("http_filters", []))
                        fields.update(downstream or {})
                    else:
                        fields.update(
                            fidelity_routes.traffic_fields(
                                virtual_host, dump.clusters, _cluster_fields
                            )
                        )
                    if cluster in dump.clusters:
                        fields.update(cluster_view(dump.clusters[cluster]))
                        if not edge.startswith("inbound:"):
                            tls = upstream_tls_view(dump.clusters[cluster])
                            if not dump.istio_tls_endpoints.get(cluster, True):
                                tls = {"tls.origination": "none"}
                            fields.update(tls)
                    else:
                        fields["cluster"] = f"missing: {cluster}"
                    yield edge, fields


def _cluster_fields(cluster: Json) -> Iterator[tuple[str, Any]]:
    yield from cluster_view(cluster).items()
    yield from upstream_tls_view(cluster).items()


def resilience_view(dump: Json) -> View:
    """Edge → field → effective value, for one Envoy's ``/config_dump``.

    Where one edge is served by several routes (istiod's inbound listener has a TLS and a
    plain-text filter chain), a field whose values differ keeps all of them, sorted, so
    the comparison shows the ambiguity instead of picking one."""
    seen: dict[str, dict[str, list[Any]]] = {}
    for edge, fields in _edge_fields(_read_dump(dump)):
        bucket = seen.setdefault(edge, {})
        for name, value in fields.items():
            values = bucket.setdefault(name, [])
            if value not in values:
                values.append(value)
    return {
        edge: {
            name: values[0] if len(values) == 1 else tuple(sorted(map(str, values)))
            for name, values in fields.items()
        }
        for edge, fields in seen.items()
    }


# --------------------------------------------------------------------------- comparing


@dataclass(frozen=True)
class Difference:
    role: str
    edge: str
    field: str
    istio: Any
    envoy: Any

    def line(self) -> str:
        return (
            f"{self.role} {self.edge}: {self.field}: "
            f"istiod {show(self.istio)} | translation {show(self.envoy)}"
        )


_ABSENT: Final = "<no such edge>"


def show(value: Any) -> str:
    if isinstance(value, Decimal):
        return f"{value:f}s"
    if isinstance(value, tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if value is None:
        return "none"
    return str(value)


def compare(role: str, edges: Iterable[str], istio: View, envoy: View) -> list[Difference]:
    """Every field of ``edges`` whose value differs between istiod's and the translation's
    view of one proxy role (an edge missing on one side is one difference)."""
    found: list[Difference] = []
    for edge in edges:
        mine, theirs = istio.get(edge), envoy.get(edge)
        if mine is None or theirs is None:
            if mine is not theirs:
                found.append(
                    Difference(
                        role,
                        edge,
                        "edge",
                        "present" if mine is not None else _ABSENT,
                        "present" if theirs is not None else _ABSENT,
                    )
                )
            continue
        for name in sorted(set(mine) | set(theirs)):
            a, b = mine.get(name, _ABSENT), theirs.get(name, _ABSENT)
            if a != b:
                found.append(Difference(role, edge, name, a, b))
    return found


# --------------------------------------------------------------------------- the scenario

INGRESS: Final = "ingress"
_NOWHERE: Final = Addr("127.0.0.1", 0)  # listeners on any free loopback port
_DISCARD: Final = Addr("127.0.0.1", 9)  # endpoints: never called


def role_edges(scenario: Scenario) -> dict[str, tuple[str, ...]]:
    """Proxy role (service name, or ``ingress``) → the edges it serves: its inbound port
    (sidecars) and one outbound edge per service it calls."""
    topology = scenario.app.topology
    roles: dict[str, tuple[str, ...]] = {INGRESS: (f"→ {topology.entry}:{SERVICE_PORT}",)}
    for service in topology.service_names:
        calls = topology.service(service).calls
        roles[service] = (
            f"inbound:{SERVICE_PORT}",
            *(f"→ {callee}:{SERVICE_PORT}" for callee in calls),
        )
    return roles


def translation_bootstraps(
    scenario: Scenario, directory: str, tls: Mapping[str, WorkloadTls] | None = None
) -> dict[str, Json]:
    """Proxy role → the bootstrap :mod:`harness.mesh.envoy` writes for it, with every
    listener on a free loopback port and the admin API on ``<directory>/<role>.sock`` (so
    it loads into a real Envoy anywhere). Policies, upstreams and fault sources are those
    ``LocalDeployment`` gives; endpoints and addresses decide no resilience field. ``tls``:
    role → its mesh certificate files (mutual TLS as ``LocalDeployment`` programs it)."""
    topology = scenario.app.topology
    destinations = scenario.mesh.destinations
    tls = tls or {}

    peer = scenario.mesh.peer_authentication

    def upstream(service: str) -> Upstream:
        plaintext = plaintext_service(peer, service)
        return Upstream(service, (_DISCARD,), destinations.get(service), plaintext)

    def security(service: str) -> dict[str, Any]:
        identity = tls.get(service)
        namespace = identity.namespace if identity is not None else "default"
        policies = scenario.mesh.authorization_policies
        return {
            "rbac_filters": tuple(rbac_filters(policies, service, namespace)),
            "plaintext_inbound": plaintext_service(peer, service),
        }

    bootstraps = {
        INGRESS: ingress_bootstrap(
            IngressSpec(
                listen=_NOWHERE,
                admin_socket=f"{directory}/{INGRESS}.sock",
                access_log=f"{directory}/{INGRESS}.jsonl",
                upstream=upstream(topology.entry),
                tls=tls.get(INGRESS),
            )
        )
    }
    for service in topology.service_names:
        calls = topology.service(service).calls
        bootstraps[service] = sidecar_bootstrap(
            SidecarSpec(
                instance=f"{service}-0",
                service=service,
                inbound=_NOWHERE,
                app=_DISCARD,
                outbound=_NOWHERE if calls else None,
                admin_socket=f"{directory}/{service}.sock",
                access_log=f"{directory}/{service}.jsonl",
                upstreams=tuple(
                    upstream(callee) for callee in routing.upstream_services(calls, destinations)
                ),
                fault_sources=fault_sources_of(topology, service),
                policy=destinations.get(service),
                tls=tls.get(service),
                **security(service),
                labels=routing.pod_labels(topology, service, 0),
            )
        )
    return bootstraps


def differences(
    scenario: Scenario, istio: Mapping[str, Json], envoy: Mapping[str, Json]
) -> list[Difference]:
    """Every resilience field that differs between istiod's and the translation's
    ``/config_dump`` of each proxy role of ``scenario``."""
    found: list[Difference] = []
    for role, edges in role_edges(scenario).items():
        if role not in istio or role not in envoy:
            found.append(
                Difference(
                    role,
                    "*",
                    "config_dump",
                    "present" if role in istio else _ABSENT,
                    "present" if role in envoy else _ABSENT,
                )
            )
            continue
        found.extend(
            d
            for d in compare(
                role, edges, resilience_view(istio[role]), resilience_view(envoy[role])
            )
            if not known_transport_difference(scenario, d)
        )
    return found


def known_transport_difference(scenario: Scenario, difference: Difference) -> bool:
    """Without a PeerAuthentication mode, istiod's default is PERMISSIVE (a TLS and a
    plain-text chain) and the translation's is STRICT (docs/istio-semantics.md): that
    difference is known; any mode the scenario sets is compared."""
    peer = scenario.mesh.peer_authentication
    unset = peer is None or peer.mode_of(difference.role) is None
    return difference.field == "inbound.transport" and unset
