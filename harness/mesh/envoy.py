"""Envoy bootstraps written the way istiod would program the sidecars.

Where each policy lives decides what a fault does, so this follows Istio exactly:

* VirtualService fields (``timeout``, ``retries``) → the **caller's** outbound route.
* DestinationRule fields (``connectionPool``, ``outlierDetection``, ``loadBalancer``) → the
  **caller's** outbound cluster for the destination; the connection pool also → the
  **callee's** inbound cluster (istiod's ``buildInboundCluster``).
* Every inbound route retries ``reset-before-request`` twice (Istio ≥ 1.24).
* Auto-mTLS between proxies (istiod's default): the callee's inbound listener terminates TLS
  and requires a client certificate from the mesh CA; the caller's outbound cluster (and the
  ingress gateway's) originates TLS with its own certificate, SNI
  ``outbound_.8080_._.<service>.<namespace>.svc.cluster.local`` and the callee's SPIFFE id as
  the only accepted SAN. The certificates are files the harness makes per run
  (:mod:`harness.mesh.identity`); istiod sends them over SDS.
* Injected HTTP faults → fault filters on the **callee's** inbound listener, every one switched
  off until the harness flips its runtime keys with ``POST /runtime_modify``. The fault thus
  sits one hop away from the retrying caller: a VirtualService fault acts in the caller's
  own fault filter, before its router, so the caller would never retry an injected abort
  and its route timeout would not cover an injected delay (Istio's ``TranslateRoute``).

Every rule is read in the pinned istio module; docs/istio-semantics.md lists them with the
differences that stay.

Names follow Istio: clusters ``outbound|8080||<service>`` and ``inbound|8080||``; stat
prefixes ``inbound_<service>`` / ``outbound``. Every admin API is a Unix socket, so the
harness reaches it from outside the run's network namespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final, Literal

from harness.app.topology import Topology
from harness.mesh import routing
from harness.scenario.models import DestinationPolicy, LbAlgorithm, Retries

SERVICE_PORT = 8080
# Istio's defaults (pilot/pkg/networking/core/route/retry/retry.go, ``cachedDefaultPolicy``):
# used when a route sets no retries. Since Istio 1.24 the default lists no status code: the
# retriable_status_codes list is empty, so a 503 answer is not retried by default.
ISTIO_DEFAULT_RETRY_ON = (
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
)
ISTIO_DEFAULT_RETRIES = 2
ISTIO_HOST_SELECTION_RETRY_MAX_ATTEMPTS = 5
# Every inbound route of a sidecar (pilot/pkg/networking/core/route/route.go,
# ``BuildDefaultHTTPInboundRoute``, non-gRPC ports): retry a request its app reset before
# the request was sent, twice, with no other field set.
ISTIO_INBOUND_RETRY_ON = "reset-before-request"
ISTIO_INBOUND_RETRIES = 2
# The mesh's ``connectTimeout`` default (pkg/config/mesh/mesh.go, ``DefaultMeshConfig``).
ISTIO_DEFAULT_CONNECT_TIMEOUT_S = 10.0
UNLIMITED = 4294967295  # Istio programs circuit-breaker thresholds to "unlimited" by default.
# istiod disables the HTTP connection manager's stream idle timeout on every listener
# (pilot/pkg/networking/core/listener_builder.go: ``StreamIdleTimeout = 0s``); Envoy's own
# default (5 min) would cut a hung request that no route timeout covers.
ISTIO_STREAM_IDLE_TIMEOUT = "0s"
# Envoy reads an integer runtime override of a fractional percent as a whole percentage
# (denominator HUNDRED, and anything above 100 as "always"), whatever the filter's own
# denominator: runtime-switched faults therefore work in whole percents.
FAULT_DENOMINATOR = "HUNDRED"
ACCESS_LOG_FORMAT: dict[str, str] = {
    "start": "%START_TIME(%s.%3f)%",
    "dir": "%DYNAMIC_METADATA(harness:dir)%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "authority": "%REQ(:AUTHORITY)%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "ms": "%DURATION%",
    "upstream_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
    "cluster": "%UPSTREAM_CLUSTER%",
    "upstream": "%UPSTREAM_HOST%",
    "downstream": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "rid": "%REQ(X-REQUEST-ID)%",
    "source": "%REQ(X-HARNESS-SOURCE)%",
}
AccessLogFields = Literal["full", "report"]
REPORT_FIELDS: Final = frozenset(
    {"start", "dir", "path", "authority", "status", "flags", "ms", "attempts", "cluster"}
    | {"upstream", "rid", "source"}
)
"""The fields :mod:`harness.observe.access_logs` reads (the counts, flags and request paths of
the report); ``method``, ``details``, ``upstream_ms`` and ``downstream`` are for people."""


def access_log_format(fields: AccessLogFields = "full") -> dict[str, str]:
    """The JSON access-log format: every field, or (``report``) only :data:`REPORT_FIELDS`."""
    return {k: v for k, v in ACCESS_LOG_FORMAT.items() if fields == "full" or k in REPORT_FIELDS}


@dataclass(frozen=True)
class Addr:
    host: str
    port: int

    def envoy(self) -> dict[str, Any]:
        return {"socket_address": {"address": self.host, "port_value": self.port}}


@dataclass(frozen=True)
class WorkloadTls:
    """One proxy's mesh identity as files: its certificate (SPIFFE URI SAN) and key, the
    run's CA, and the namespace the SPIFFE ids and SNI names are spelled in."""

    namespace: str
    certificate_chain: str
    private_key: str
    trusted_ca: str


@dataclass(frozen=True)
class Upstream:
    """A destination service as seen from one caller."""

    service: str
    endpoints: tuple[Addr, ...]
    policy: DestinationPolicy | None = None
    # Auto-mTLS: plaintext to a service whose PeerAuthentication is DISABLE (harness.mesh.rbac).
    plaintext: bool = False
    # Each endpoint's pod labels (parallel to ``endpoints``): what subsets select.
    endpoint_labels: tuple[routing.Labels, ...] = ()


@dataclass(frozen=True)
class SidecarSpec:
    """Everything needed to write one instance's sidecar bootstrap."""

    instance: str
    service: str
    inbound: Addr
    app: Addr
    outbound: Addr | None
    admin_socket: str
    access_log: str
    upstreams: tuple[Upstream, ...] = ()
    access_log_fields: AccessLogFields = "full"
    fault_sources: tuple[str, ...] = ()
    bind_ip: str | None = None  # source address for outbound connections (for partitions)
    # The policy for calls to this instance's own service: its connection pool also limits
    # the inbound cluster, as istiod does.
    policy: DestinationPolicy | None = None
    tls: WorkloadTls | None = None  # None: plain HTTP between proxies (benchmarks only)
    # Security (harness.mesh.rbac): the RBAC filters istiod puts first on the inbound chain,
    # and a plaintext inbound listener (PeerAuthentication DISABLE).
    rbac_filters: tuple[dict[str, Any], ...] = ()
    plaintext_inbound: bool = False
    labels: routing.Labels = ()  # this instance's pod labels (routes' ``sourceLabels``)


@dataclass(frozen=True)
class IngressSpec:
    listen: Addr
    admin_socket: str
    access_log: str
    upstream: Upstream
    bind_ip: str | None = None
    access_log_fields: AccessLogFields = "full"
    tls: WorkloadTls | None = None  # mTLS to the entry service's sidecars


@dataclass(frozen=True)
class FaultKeys:
    """Runtime keys of one fault filter (all ``0`` = off)."""

    abort_percent: str
    abort_http_status: str
    delay_percent: str
    delay_duration_ms: str

    def all(self) -> tuple[str, ...]:
        return (
            self.abort_percent,
            self.abort_http_status,
            self.delay_percent,
            self.delay_duration_ms,
        )


def fault_keys(source: str | None) -> FaultKeys:
    """Runtime keys of the inbound fault filter for calls from ``source`` (None: any caller)."""
    prefix = "harness.fault.any" if source is None else f"harness.fault.from.{source}"
    return FaultKeys(
        abort_percent=f"{prefix}.abort_percent",
        abort_http_status=f"{prefix}.abort_http_status",
        delay_percent=f"{prefix}.delay_percent",
        delay_duration_ms=f"{prefix}.delay_duration_ms",
    )


def fault_sources_of(topology: Topology, service: str) -> tuple[str, ...]:
    """The callers a per-source fault filter of ``service`` is made for: the services that
    call it, and the ingress gateway for the entry service (one place, so the deployment and
    the fidelity check program the same filters)."""
    gateway = ("ingress",) if service == topology.entry else ()
    return (*topology.callers_of(service), *gateway)


def percent_to_runtime(percent: float) -> int:
    """50.0 (%) → 50: the runtime value Envoy reads as a whole percentage."""
    if not 0 <= percent <= 100 or percent != int(percent):
        raise ValueError(f"{percent!r}: runtime fault switches take whole percentages 0–100")
    return int(percent)


# Istio's parseRetryOn takes a retryOn part as a status code when strconv.Atoi reads it and
# Go's http.StatusText knows it; Python's HTTPStatus lists the same codes, and the pattern is
# what Atoi accepts (ASCII digits, optional sign).
_KNOWN_STATUS_CODES = frozenset(int(status) for status in HTTPStatus)
_ATOI = re.compile(r"[+-]?[0-9]+")


def _status_code(part: str) -> int | None:
    """``"503"`` → 503; None for a retry condition (``"5xx"``) or an unknown code (``"599"``)."""
    if _ATOI.fullmatch(part) is None:
        return None
    code = int(part)
    return code if code in _KNOWN_STATUS_CODES else None


def _type_url(message: str) -> str:
    """The ``@type`` of a typed config: ``type.googleapis.com/<proto message>``."""
    return f"type.googleapis.com/{message}"


def _seconds(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") + "s"


def retry_policy(retries: Retries | None, *, hash_policy: bool = False) -> dict[str, Any] | None:
    """Istio's ``HTTPRetry`` → Envoy ``RetryPolicy`` (None: retries disabled).

    Follows ``ConvertPolicy`` in Istio's pilot/pkg/networking/core/route/retry/retry.go: no
    ``retries`` → the default policy (2 retries, ``ISTIO_DEFAULT_RETRY_ON``, no status codes:
    503 is not retried since Istio 1.24); ``attempts`` alone keeps the default conditions;
    bare status codes in ``retryOn`` become ``retriable_status_codes``. An empty
    ``retriable_status_codes`` list is left out, as Envoy's config dump does.
    """
    policy: dict[str, Any] = {
        "num_retries": ISTIO_DEFAULT_RETRIES,
        "retry_on": ISTIO_DEFAULT_RETRY_ON,
        "host_selection_retry_max_attempts": ISTIO_HOST_SELECTION_RETRY_MAX_ATTEMPTS,
    }
    previous_hosts = [
        {
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {
                "@type": _type_url(
                    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                )
            },
        }
    ]
    if not hash_policy:
        policy["retry_host_predicate"] = previous_hosts
    if retries is None:
        return policy
    if retries.attempts <= 0:
        return None
    policy["num_retries"] = retries.attempts
    if retries.retry_on:
        words: list[str] = []
        codes: list[int] = []
        for part in (p.strip() for p in retries.retry_on.split(",")):
            if not part:
                continue
            code = _status_code(part)
            if code is not None:
                codes.append(code)
            else:
                words.append(part)
        if codes and "retriable-status-codes" not in words:
            words.append("retriable-status-codes")
        policy["retry_on"] = ",".join(words)
        if codes:
            policy["retriable_status_codes"] = codes
    if retries.per_try_timeout is not None:
        policy["per_try_timeout"] = _seconds(retries.per_try_timeout)
    if retries.retry_ignore_previous_hosts is not None:
        if retries.retry_ignore_previous_hosts:
            policy["retry_host_predicate"] = previous_hosts
        else:
            policy.pop("retry_host_predicate", None)
    return policy


def outbound_cluster_name(service: str) -> str:
    return f"outbound|{SERVICE_PORT}||{service}"


# --------------------------------------------------------------------------- mutual TLS
# Read in the pinned istiod: pilot/pkg/networking/core/cluster_tls.go (ISTIO_MUTUAL upstream
# context, ``defaultUpstreamCommonTLSContext``), pilot/pkg/security/authn/utils/utils.go
# (``BuildInboundTLS``, ``SupportedCiphers``), pilot/pkg/networking/util/util.go (ALPN lists).
TRUST_DOMAIN = "cluster.local"
# An in-mesh HTTP/1.1 cluster: ``ALPNInMesh``. istiod adds ``istio-peer-exchange`` only with
# metadata exchange on, and the harness's istiod runs with PILOT_ENABLE_METADATA_EXCHANGE=false
# (harness/controlplane/istiod.py: Envoy without Istio's filters); the differential test
# reads ``["istio"]`` from it.
ISTIO_UPSTREAM_ALPN = ("istio",)
# The inbound HTTP filter chain (``ALPNHttp``; the peer-exchange list is for TCP ports).
ISTIO_INBOUND_ALPN = ("h2", "http/1.1")
ISTIO_INBOUND_CIPHERS = (
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
)
TLS_SOCKET = "envoy.transport_sockets.tls"


def workload_spiffe_id(namespace: str, service: str) -> str:
    """The identity istiod's CA gives a pod of ``service`` (its ServiceAccount is named after
    the service, as the renderer writes it)."""
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service}"


def mesh_sni(service: str, namespace: str) -> str:
    """The SNI istiod sets on an auto-mTLS cluster: its ``BuildDNSSrvSubsetKey`` name."""
    return f"outbound_.{SERVICE_PORT}_._.{service}.{namespace}.svc.cluster.local"


def _tls_certificates(tls: WorkloadTls) -> list[dict[str, Any]]:
    return [
        {
            "certificate_chain": {"filename": tls.certificate_chain},
            "private_key": {"filename": tls.private_key},
        }
    ]


def upstream_tls_socket(tls: WorkloadTls, service: str) -> dict[str, Any]:
    """The caller's side of auto-mTLS to ``service``: its own certificate, the run CA, the
    callee's SPIFFE id as the only accepted SAN, istiod's SNI and ALPN."""
    context = {
        "@type": _type_url("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"),
        "common_tls_context": {
            "tls_params": {
                "tls_minimum_protocol_version": "TLSv1_2",
                "tls_maximum_protocol_version": "TLSv1_3",
            },
            "alpn_protocols": list(ISTIO_UPSTREAM_ALPN),
            "tls_certificates": _tls_certificates(tls),
            "validation_context": {
                "trusted_ca": {"filename": tls.trusted_ca},
                "match_typed_subject_alt_names": [
                    {
                        "san_type": "URI",
                        "matcher": {"exact": workload_spiffe_id(tls.namespace, service)},
                    }
                ],
            },
        },
        "sni": mesh_sni(service, tls.namespace),
    }
    return {"name": TLS_SOCKET, "typed_config": context}


def downstream_tls_socket(tls: WorkloadTls) -> dict[str, Any]:
    """The callee's side: TLS terminated on the inbound listener, a client certificate from
    the run CA required (istiod's STRICT-mode inbound chain; see istio-semantics.md)."""
    context = {
        "@type": _type_url("envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"),
        "common_tls_context": {
            "tls_params": {
                "tls_minimum_protocol_version": "TLSv1_2",
                "tls_maximum_protocol_version": "TLSv1_3",
                "cipher_suites": list(ISTIO_INBOUND_CIPHERS),
            },
            "alpn_protocols": list(ISTIO_INBOUND_ALPN),
            "tls_certificates": _tls_certificates(tls),
            "validation_context": {"trusted_ca": {"filename": tls.trusted_ca}},
        },
        "require_client_certificate": True,
    }
    return {"name": TLS_SOCKET, "typed_config": context}


def _apply_connection_pool(cluster: dict[str, Any], policy: DestinationPolicy | None) -> None:
    """A DestinationRule's ``connectionPool`` on a cluster, outbound or inbound alike.

    Follows ``applyConnectionPool`` in Istio's pilot/pkg/networking/core/
    cluster_traffic_policy.go: the mesh connect timeout unless ``tcp.connectTimeout`` is set,
    circuit-breaker thresholds "unlimited" unless a field is > 0 (so ``maxRetries: 0`` does
    not disable retries), ``maxRequestsPerConnection`` only when > 0.
    """
    pool = policy.connection_pool if policy else None
    tcp = pool.tcp if pool else None
    http = pool.http if pool else None
    # Deliberate difference: Istio copies any connectTimeout (its CRD refuses < 1ms); a 0s
    # here would make Envoy refuse the cluster, so it falls back to the mesh default (the
    # renderer leaves a 0s connectTimeout out, which gives the same default).
    connect_timeout = (tcp.connect_timeout if tcp else None) or ISTIO_DEFAULT_CONNECT_TIMEOUT_S

    def limit(value: int | None) -> int:
        return value if value else UNLIMITED

    cluster["connect_timeout"] = _seconds(connect_timeout)
    cluster["circuit_breakers"] = {
        "thresholds": [
            {
                "max_connections": limit(tcp.max_connections if tcp else None),
                "max_pending_requests": limit(http.http1_max_pending_requests if http else None),
                "max_requests": limit(http.http2_max_requests if http else None),
                "max_retries": limit(http.max_retries if http else None),
                # No track_remaining: istiod leaves it off (features.DisableTrackRemainingMetrics
                # defaults to true in pilot/pkg/features/pilot.go); it only adds gauges.
            }
        ]
    }
    if http is not None and http.max_requests_per_connection:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _type_url("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"),
                "common_http_protocol_options": {
                    "max_requests_per_connection": http.max_requests_per_connection
                },
                "explicit_http_config": {"http_protocol_options": {}},
            }
        }


def _outbound_cluster(
    upstream: Upstream, bind_ip: str | None, tls: WorkloadTls | None = None
) -> dict[str, Any]:
    policy = upstream.policy or DestinationPolicy()
    algorithm = policy.load_balancer.simple if policy.load_balancer else LbAlgorithm.LEAST_REQUEST
    cluster: dict[str, Any] = {
        "name": outbound_cluster_name(upstream.service),
        "type": "STATIC",
        "lb_policy": algorithm.value,
        "load_assignment": {
            "cluster_name": outbound_cluster_name(upstream.service),
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": addr.envoy()}} for addr in upstream.endpoints
                    ]
                }
            ],
        },
        # istiod disables Envoy's panic mode (default 50%) on every outbound cluster: with
        # PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS (default true, pilot/pkg/features/
        # experimental.go) every service "supports unhealthy endpoints", and applyLoadBalancer
        # (cluster_traffic_policy.go) then sets healthy_panic_threshold 0. With every host
        # ejected or unhealthy, requests fail with "no healthy upstream" instead of being
        # spread over the unhealthy hosts.
        "common_lb_config": {"healthy_panic_threshold": {"value": 0.0}},
    }
    _apply_connection_pool(cluster, policy)
    outlier = policy.outlier_detection
    if outlier is not None:
        detection: dict[str, Any] = {"enforcing_success_rate": 0}
        if outlier.consecutive_5xx_errors is not None:
            detection["consecutive_5xx"] = outlier.consecutive_5xx_errors
            detection["enforcing_consecutive_5xx"] = (
                100 if outlier.consecutive_5xx_errors > 0 else 0
            )
        if outlier.consecutive_gateway_errors is not None:
            detection["consecutive_gateway_failure"] = outlier.consecutive_gateway_errors
            detection["enforcing_consecutive_gateway_failure"] = (
                100 if outlier.consecutive_gateway_errors > 0 else 0
            )
        if outlier.interval is not None:
            detection["interval"] = _seconds(outlier.interval)
        if outlier.base_ejection_time is not None:
            detection["base_ejection_time"] = _seconds(outlier.base_ejection_time)
        # Istio (applyOutlierDetection) only sets a maxEjectionPercent > 0; 0 leaves Envoy's 10%.
        if outlier.max_ejection_percent:
            detection["max_ejection_percent"] = outlier.max_ejection_percent
        cluster["outlier_detection"] = detection
        # Istio (applyOutlierDetection): with outlier detection, minHealthPercent (default 0)
        # is the panic threshold.
        cluster["common_lb_config"]["healthy_panic_threshold"] = {
            "value": float(outlier.min_health_percent or 0)
        }
    if bind_ip is not None:
        cluster["upstream_bind_config"] = {"source_address": {"address": bind_ip, "port_value": 0}}
    if tls is not None and not upstream.plaintext:
        cluster["transport_socket"] = upstream_tls_socket(tls, upstream.service)
    return cluster


def _access_log(path: str, direction: str, fields: AccessLogFields) -> list[dict[str, Any]]:
    fmt = access_log_format(fields)
    fmt["dir"] = direction
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": _type_url("envoy.extensions.access_loggers.file.v3.FileAccessLog"),
                "path": path,
                "log_format": {"json_format": fmt},
            },
        }
    ]


def _fault_filter(source: str | None) -> dict[str, Any]:
    keys = fault_keys(source)
    config: dict[str, Any] = {
        "@type": _type_url("envoy.extensions.filters.http.fault.v3.HTTPFault"),
        "abort": {
            "http_status": 503,
            "percentage": {"numerator": 0, "denominator": FAULT_DENOMINATOR},
        },
        "delay": {
            "fixed_delay": "0.001s",
            "percentage": {"numerator": 0, "denominator": FAULT_DENOMINATOR},
        },
        "abort_percent_runtime": keys.abort_percent,
        "abort_http_status_runtime": keys.abort_http_status,
        "delay_percent_runtime": keys.delay_percent,
        "delay_duration_runtime": keys.delay_duration_ms,
    }
    if source is not None:
        config["headers"] = [{"name": "x-harness-source", "string_match": {"exact": source}}]
    # Named like the runtime keys, so a caller service called "any" gets a filter of its own.
    name = "any" if source is None else f"from.{source}"
    return {"name": f"envoy.filters.http.fault.{name}", "typed_config": config}


_ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": _type_url("envoy.extensions.filters.http.router.v3.Router")},
}


def _hcm(
    stat_prefix: str,
    routes: dict[str, Any],
    filters: list[dict[str, Any]],
    access_log: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": _type_url(
                "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
            ),
            "stat_prefix": stat_prefix,
            "codec_type": "AUTO",
            "route_config": routes,
            "http_filters": [*filters, _ROUTER],
            "access_log": access_log,
            "generate_request_id": True,
            "stream_idle_timeout": ISTIO_STREAM_IDLE_TIMEOUT,
            "preserve_external_request_id": True,
            "normalize_path": True,
        },
    }


def _outbound_route(upstream: Upstream, source: str) -> dict[str, Any]:
    policy = upstream.policy or DestinationPolicy()
    action: dict[str, Any] = {
        "cluster": outbound_cluster_name(upstream.service),
        # Istio: no route timeout unless the VirtualService sets one.
        "timeout": _seconds(policy.timeout) if policy.timeout is not None else "0s",
    }
    retry = retry_policy(policy.retries)
    if retry is not None:
        action["retry_policy"] = retry
    return {
        "name": upstream.service,
        "domains": [upstream.service, f"{upstream.service}:*"],
        "routes": [
            {
                "match": {"prefix": "/"},
                "route": action,
                "request_headers_to_add": [
                    {
                        "header": {"key": "x-harness-source", "value": source},
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    }
                ],
            }
        ],
    }


def _bootstrap(
    node_id: str,
    cluster: str,
    admin_socket: str,
    listeners: list[dict[str, Any]],
    clusters: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "node": {"id": node_id, "cluster": cluster},
        "admin": {"address": {"pipe": {"path": admin_socket, "mode": 0o600}}},
        "layered_runtime": {
            "layers": [
                {"name": "static", "static_layer": {}},
                {"name": "admin", "admin_layer": {}},
            ]
        },
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def _inbound_listener(spec: SidecarSpec, cluster: str) -> dict[str, Any]:
    """The callee side: every request to the app through the fault filters."""
    # A source listed twice would stack two filters on the same runtime keys: the fault would
    # hit twice (two 50% aborts abort 75%, two delays add up), so each source gets one filter.
    sources = dict.fromkeys(spec.fault_sources)
    # The RBAC filters come first (istiod's order): a denied request meets no fault.
    faults = [*spec.rbac_filters, _fault_filter(None), *(_fault_filter(src) for src in sources)]
    routes = {
        "name": "inbound",
        "virtual_hosts": [
            {
                "name": "inbound",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"prefix": "/"},
                        "route": {
                            "cluster": cluster,
                            "timeout": "0s",
                            "retry_policy": {
                                "retry_on": ISTIO_INBOUND_RETRY_ON,
                                "num_retries": ISTIO_INBOUND_RETRIES,
                            },
                        },
                    }
                ],
            }
        ],
    }
    hcm = _hcm(
        f"inbound_{spec.service}",
        routes,
        faults,
        _access_log(spec.access_log, "inbound", spec.access_log_fields),
    )
    chain: dict[str, Any] = {"filters": [hcm]}
    if spec.tls is not None and not spec.plaintext_inbound:
        chain["transport_socket"] = downstream_tls_socket(spec.tls)
    return {"name": "virtualInbound", "address": spec.inbound.envoy(), "filter_chains": [chain]}


def _inbound_cluster(spec: SidecarSpec, cluster: str) -> dict[str, Any]:
    """The app behind its sidecar. istiod's buildInboundCluster applies the service's own
    DestinationRule connection pool (and only that: no outlier detection, no load balancer)
    to the inbound cluster."""
    local_app: dict[str, Any] = {
        "name": cluster,
        "type": "STATIC",
        "load_assignment": {
            "cluster_name": cluster,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": spec.app.envoy()}}]}],
        },
    }
    _apply_connection_pool(local_app, spec.policy)
    return local_app


def _routed(upstream: Upstream, spec: SidecarSpec) -> dict[str, Any]:
    """The caller's virtual host for ``upstream``: its VirtualService ``http`` routes
    (:mod:`harness.mesh.routing`), else the one default route."""
    host = _outbound_route(upstream, spec.service)
    policy = upstream.policy
    if policy is not None and policy.http:
        host["routes"] = routing.routes(upstream.service, policy, spec.labels, host["routes"][0])
    return host


def _outbound_clusters(upstream: Upstream, spec: SidecarSpec) -> list[dict[str, Any]]:
    """The default cluster of ``upstream``, then one per DestinationRule subset."""
    base = _outbound_cluster(upstream, spec.bind_ip, spec.tls)
    labels = {
        f"{addr.host}:{addr.port}": pod
        for addr, pod in zip(upstream.endpoints, upstream.endpoint_labels, strict=False)
    }
    namespace = spec.tls.namespace if spec.tls else None
    return [
        base,
        *routing.subset_clusters(base, upstream.service, upstream.policy, labels, namespace),
    ]


def _outbound_listener(spec: SidecarSpec, outbound: Addr) -> dict[str, Any]:
    """The caller side: one route per service the app calls, with its policy."""
    routes = {
        "name": str(SERVICE_PORT),
        "virtual_hosts": [_routed(up, spec) for up in spec.upstreams],
    }
    hcm = _hcm(
        "outbound", routes, [], _access_log(spec.access_log, "outbound", spec.access_log_fields)
    )
    return {
        "name": "virtualOutbound",
        "address": outbound.envoy(),
        "filter_chains": [{"filters": [hcm]}],
    }


def sidecar_bootstrap(spec: SidecarSpec) -> dict[str, Any]:
    """The bootstrap of one app instance's sidecar (inbound + outbound listeners)."""
    inbound_cluster = f"inbound|{SERVICE_PORT}||"
    listeners = [_inbound_listener(spec, inbound_cluster)]
    clusters = [_inbound_cluster(spec, inbound_cluster)]
    if spec.outbound is not None and spec.upstreams:
        listeners.append(_outbound_listener(spec, spec.outbound))
        for up in spec.upstreams:
            clusters.extend(_outbound_clusters(up, spec))
    return _bootstrap(spec.instance, spec.service, spec.admin_socket, listeners, clusters)


def ingress_bootstrap(spec: IngressSpec) -> dict[str, Any]:
    """The ingress gateway: every request goes to the entry service with its route policy.

    In Istio a VirtualService without ``gateways:`` binds to sidecars only; the gateway's
    route comes from the VirtualService bound to the Gateway. The renderer
    (:mod:`harness.kube.render`) writes that one (``ingress``) with the entry service's
    ``timeout`` and ``retries`` (none given: Istio's defaults), and the entry service's
    DestinationRule applies to the gateway's cluster as to any caller's: this is the same.
    """
    route = _outbound_route(spec.upstream, "ingress")
    route["domains"] = ["*"]
    routes = {"name": "ingress", "virtual_hosts": [route]}
    listener = {
        "name": "ingress",
        "address": spec.listen.envoy(),
        "filter_chains": [
            {
                "filters": [
                    _hcm(
                        "ingress",
                        routes,
                        [],
                        _access_log(spec.access_log, "ingress", spec.access_log_fields),
                    )
                ]
            }
        ],
    }
    return _bootstrap(
        "ingress",
        "ingress",
        spec.admin_socket,
        [listener],
        [_outbound_cluster(spec.upstream, spec.bind_ip, spec.tls)],
    )


@dataclass
class EnvoyCommand:
    """argv for one Envoy process."""

    config_path: str
    log_path: str
    concurrency: int = 1
    extra: list[str] = field(default_factory=list)

    def argv(self, binary: str) -> list[str]:
        return [
            binary,
            "-c",
            self.config_path,
            "--concurrency",
            str(self.concurrency),
            "--disable-hot-restart",
            # Access logs reach disk within 250 ms (Envoy's default is 10 s).
            "--file-flush-interval-msec",
            "250",
            "--log-level",
            "warn",
            "--log-path",
            self.log_path,
            *self.extra,
        ]
