"""The objects a cluster's controllers and an operator would add for a ``--mesh istio`` run,
beside the rendered policy (:func:`harness.kube.render.render`): each instance's
``Sidecar`` (explicit listeners, no capture), the EndpointSlices, and the harness's
EnvoyFilters (source address binding, inbound fault filters). Pure builders: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Final

from harness.kube.render import NETWORKING, PORT_NAME, SERVICE_PORT, JsonObject, JsonValue
from harness.mesh.envoy import AccessLogFields, _fault_filter, access_log_format
from harness.platforms.local.istio.workloads import (
    APP_PORT,
    GATEWAY_ACCOUNT,
    INSTANCE_LABEL,
    Workload,
)

__all__ = [
    "endpoint_slice",
    "fault_envoy_filter",
    "fault_filter",
    "observe_envoy_filter",
    "sidecar_resource",
    "source_bind_filter",
]


def sidecar_resource(workload: Workload, egress_ip: str) -> JsonObject:
    """The Istio ``Sidecar`` of one instance: explicit listeners, no traffic capture.

    Ingress: the Service port on the instance's own address, forwarded to the app on that
    address (``0.0.0.0:<port>`` means "the instance IP" to istiod). Egress: the Service
    port on a loopback address of the instance's own, for every service of the mesh; the
    app calls it with ``Host: <service>`` (docs/architecture.md says why not capture)."""
    port: JsonObject = {"number": SERVICE_PORT, "protocol": "HTTP", "name": PORT_NAME}
    return {
        "apiVersion": NETWORKING,
        "kind": "Sidecar",
        "metadata": {"name": workload.name, "namespace": workload.namespace},
        "spec": {
            "workloadSelector": {"labels": {INSTANCE_LABEL: workload.name}},
            "ingress": [
                {
                    "port": dict(port),
                    "bind": workload.ip,
                    "defaultEndpoint": f"0.0.0.0:{APP_PORT}",
                    "captureMode": "NONE",
                }
            ],
            "egress": [
                {"port": dict(port), "bind": egress_ip, "captureMode": "NONE", "hosts": ["./*"]}
            ],
        },
    }


def endpoint_slice(
    namespace: str,
    service: str,
    workloads: Sequence[Workload],
    via: Mapping[str, str] | None = None,
) -> JsonObject:
    """What the EndpointSlice controller would write for ``service``: its ready pods.

    ``via``: pod name → the address its callers reach it at instead of its own (a toxic
    proxy in front of its sidecar). The endpoint still names its Pod, so istiod takes the
    identity (ServiceAccount, ``tlsMode``: mutual TLS through the proxy) from the Pod."""
    via = via or {}
    endpoints: list[JsonValue] = [
        {
            "addresses": [via.get(w.name, w.ip)],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "targetRef": {"kind": "Pod", "name": w.name, "namespace": namespace},
        }
        for w in workloads
    ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-harness",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": PORT_NAME, "port": SERVICE_PORT, "protocol": "TCP"}],
    }


def source_bind_filter(workload: Workload) -> JsonObject:
    """An ``EnvoyFilter`` making ``workload``'s outbound connections leave from its own
    address, as they do from a pod's own IP in a cluster. Without it every connection in the
    shared namespace would leave from the callee's address (the kernel's choice for a local
    destination), and a partition (nft on source and destination addresses) could not tell
    callers apart."""
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": f"harness-bind-{workload.name}", "namespace": workload.namespace},
        "spec": {
            "workloadSelector": {"labels": {INSTANCE_LABEL: workload.name}},
            "configPatches": [
                {
                    "applyTo": "CLUSTER",
                    "match": {"context": context},
                    "patch": {
                        "operation": "MERGE",
                        "value": {
                            "upstream_bind_config": {
                                "source_address": {"address": workload.ip, "port_value": 0}
                            }
                        },
                    },
                }
                for context in ("SIDECAR_OUTBOUND", "GATEWAY")
            ],
        },
    }


HCM: Final = "envoy.filters.network.http_connection_manager"
HCM_TYPE: Final = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)


def _source_account(source: str) -> str:
    return GATEWAY_ACCOUNT if source == "ingress" else source


def fault_filter(source: str | None) -> JsonObject:
    """The runtime-switched fault filter of :mod:`harness.mesh.envoy`, for an Istio sidecar.

    Under Istio the caller sets no ``x-harness-source``; the callee knows its caller from
    the mTLS peer certificate, which its inbound connection manager puts in
    ``x-forwarded-client-cert`` (``URI=spiffe://cluster.local/ns/<ns>/sa/<caller>``)."""
    config: JsonObject = json.loads(json.dumps(_fault_filter(source)))
    typed = config["typed_config"]
    assert isinstance(typed, dict)
    if source is not None:
        account = re.escape(_source_account(source))
        typed["headers"] = [
            {
                "name": "x-forwarded-client-cert",
                "string_match": {
                    "safe_regex": {"regex": f".*URI=spiffe://[^;,]*/sa/{account}([;,].*)?"}
                },
            }
        ]
    return config


def fault_envoy_filter(namespace: str, service: str, sources: Sequence[str]) -> JsonObject:
    """An ``EnvoyFilter`` giving ``service``'s inbound sidecars the harness's fault filters
    (off until their runtime keys are flipped, exactly as under ``--mesh envoy``) and the
    inbound stat prefix ``inbound_<service>`` the fault injector reads.

    A VirtualService ``fault:`` would not do: istiod puts it in the *caller's* outbound
    route and then drops that route's retries and timeout, the very policy under test."""
    listener: JsonObject = {"filterChain": {"filter": {"name": HCM}}}
    router_match: JsonObject = {
        "filterChain": {"filter": {"name": HCM, "subFilter": {"name": "envoy.filters.http.router"}}}
    }
    patches: list[JsonValue] = [
        {
            "applyTo": "NETWORK_FILTER",
            "match": {"context": "SIDECAR_INBOUND", "listener": listener},
            "patch": {
                "operation": "MERGE",
                "value": {"typed_config": {"@type": HCM_TYPE, "stat_prefix": f"inbound_{service}"}},
            },
        }
    ]
    for source in (None, *dict.fromkeys(sources)):
        patches.append(
            {
                "applyTo": "HTTP_FILTER",
                "match": {"context": "SIDECAR_INBOUND", "listener": router_match},
                "patch": {"operation": "INSERT_BEFORE", "value": fault_filter(source)},
            }
        )
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": f"harness-faults-{service}", "namespace": namespace},
        "spec": {"workloadSelector": {"labels": {"app": service}}, "configPatches": patches},
    }


SOURCE_HEADER: Final = "x-harness-source"
FILE_ACCESS_LOG_TYPE: Final = (
    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
)


def _access_log(path: str, direction: str, fields: AccessLogFields) -> JsonObject:
    """Envoy's JSON file access log in the format :mod:`harness.observe.access_logs` parses
    (:data:`harness.mesh.envoy.ACCESS_LOG_FORMAT`), ``dir`` fixed per listener."""
    fmt: dict[str, JsonValue] = {**access_log_format(fields), "dir": direction}
    return {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": FILE_ACCESS_LOG_TYPE,
            "path": path,
            "log_format": {"json_format": fmt},
        },
    }


def observe_envoy_filter(
    workload: Workload, access_log: str, source: str, fields: AccessLogFields = "full"
) -> JsonObject:
    """An ``EnvoyFilter`` giving ``workload``'s proxy what the observer reads under
    ``--mesh envoy`` too: JSON access logs to ``access_log`` (``dir``: inbound / outbound,
    or ingress at the gateway) and an ``x-harness-source: <source>`` header on the requests
    it sends, which the callee's inbound log records as the edge's caller."""
    gateway = source == "ingress"
    contexts = (
        {"GATEWAY": "ingress"}
        if gateway
        else {
            "SIDECAR_INBOUND": "inbound",
            "SIDECAR_OUTBOUND": "outbound",
        }
    )
    patches: list[JsonValue] = [
        {
            "applyTo": "NETWORK_FILTER",
            "match": {"context": context, "listener": {"filterChain": {"filter": {"name": HCM}}}},
            "patch": {
                "operation": "MERGE",
                "value": {
                    "typed_config": {
                        "@type": HCM_TYPE,
                        "access_log": [_access_log(access_log, direction, fields)],
                    }
                },
            },
        }
        for context, direction in contexts.items()
    ]
    patches.append(
        {
            "applyTo": "ROUTE_CONFIGURATION",
            "match": {"context": "GATEWAY" if gateway else "SIDECAR_OUTBOUND"},
            "patch": {
                "operation": "MERGE",
                "value": {
                    "request_headers_to_add": [
                        {
                            "header": {"key": SOURCE_HEADER, "value": source},
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                        }
                    ]
                },
            },
        }
    )
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": f"harness-observe-{workload.name}", "namespace": workload.namespace},
        "spec": {
            "workloadSelector": {"labels": {INSTANCE_LABEL: workload.name}},
            "configPatches": patches,
        },
    }
