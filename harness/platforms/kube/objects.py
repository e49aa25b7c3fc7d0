"""The objects of one ``--platform kube`` run: the rendered policy (:func:`harness.kube.render.
render`) with each service's pods as a StatefulSet whose pods carry an Istio sidecar the
harness injects itself, and the run's Sidecars and EnvoyFilters. Pure builders: no I/O.

Why the harness injects (docs/architecture.md, "--platform kube"): no traffic capture.
Capture needs ``istio-init`` (iptables or nftables with NET_ADMIN in every pod) and a
reachable injection webhook; explicit listeners need neither, and are what ``--mesh istio``
already runs. In each pod:

* the app listens on ``0.0.0.0:9080`` and calls every dependency at ``127.0.0.1:8080``
  (the sidecar's egress listener) with ``Host: <service>``;
* the sidecar's inbound listener is port 9090 (the Service's ``targetPort``), forwarding to
  the app on ``127.0.0.1:9080``.

StatefulSets, not Deployments: pods get the instance names of every other platform
(``catalog-0``, ``reviews-v2-1``), so a fault's target and the report read the same.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from harness.kube.render import (
    PORT_NAME,
    RUN_ID_LABEL,
    SERVICE_PORT,
    JsonObject,
    JsonValue,
    Manifest,
)
from harness.platforms.kube.options import partition_services, process_fault_services
from harness.platforms.kube.processes import PROXY_CONTAINER, chaos_container
from harness.platforms.kube.toxics import toxic_sources, toxiproxy_pod
from harness.platforms.local.istio.objects import fault_envoy_filter, observe_envoy_filter
from harness.platforms.local.istio.workloads import GATEWAY_ACCOUNT, Workload
from harness.scenario.models import Scenario

__all__ = [
    "APP_PORT",
    "INBOUND_PORT",
    "KubeImages",
    "MeshEndpoints",
    "gateway_access_log",
    "proxy_container",
    "proxy_volumes",
    "run_objects",
    "statefulset_name",
]

APP_PORT: Final = 9080  # the app, inside its pod
INBOUND_PORT: Final = 9090  # the sidecar's inbound listener: the Service's targetPort
ACCESS_LOG_PATH: Final = "/dev/stdout"  # read back from the pod's log (kubectl logs)
TOKEN_AUDIENCE: Final = "istio-ca"


@dataclass(frozen=True)
class KubeImages:
    """The image references the cluster holds (built locally, never pulled)."""

    app: str
    proxy: str
    pull_policy: str = "Never"
    toxiproxy: str | None = None  # built only where toxiproxy is installed


@dataclass(frozen=True)
class MeshEndpoints:
    """Where the sidecars find istiod: its Service name, and the address pods reach it at
    (a ``hostAliases`` entry: the cluster runs no DNS server)."""

    istiod_host: str = "istiod.istio-system.svc"
    istiod_ip: str | None = None
    xds_port: int = 15012


def statefulset_name(service: str, version: str, versioned: bool) -> str:
    """``catalog``; with declared versions ``reviews-v2`` (its pods: ``<name>-<n>``)."""
    return f"{service}-{version}" if versioned else service


def _proxy_config(endpoints: MeshEndpoints) -> str:
    config: dict[str, Any] = {
        "discoveryAddress": f"{endpoints.istiod_host}:{endpoints.xds_port}",
        "controlPlaneAuthPolicy": "MUTUAL_TLS",
        # The observer reads the outbound clusters' and the fault filters' counters.
        "proxyStatsMatcher": {"inclusionRegexps": [".*"]},
        "concurrency": 1,  # as every Envoy under the other meshes
        "drainDuration": "1s",
        "terminationDrainDuration": "1s",
    }
    return json.dumps(config)


def _field_env(name: str, path: str) -> JsonObject:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def proxy_container(
    namespace: str, images: KubeImages, endpoints: MeshEndpoints, *, router: bool = False
) -> JsonObject:
    """The ``istio-proxy`` container: ``pilot-agent proxy sidecar`` (``router``: ``proxy
    router``, a gateway) with what Istio's injection template gives it (token, root
    certificate, pod facts), explicit listeners."""
    env: list[JsonValue] = [
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("INSTANCE_IP", "status.podIP"),
        _field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        {"name": "CA_ADDR", "value": f"{endpoints.istiod_host}:{endpoints.xds_port}"},
        {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
        {"name": "PROXY_CONFIG", "value": _proxy_config(endpoints)},
        {"name": "ISTIO_META_CLUSTER_ID", "value": "Kubernetes"},
        {"name": "ISTIO_META_APP_CONTAINERS", "value": "app"},
        {"name": "ISTIO_META_INTERCEPTION_MODE", "value": "NONE"},
        {"name": "ECC_SIGNATURE_ALGORITHM", "value": "ECDSA"},
    ]
    return {
        "name": PROXY_CONTAINER,
        "image": images.proxy,
        "imagePullPolicy": images.pull_policy,
        "args": [
            "proxy",
            "router" if router else "sidecar",
            f"--domain={namespace}.svc.cluster.local",
        ],
        "env": env,
        "ports": [{"name": PORT_NAME, "containerPort": INBOUND_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/healthz/ready", "port": 15021},
            "periodSeconds": 1,
            "failureThreshold": 60,
        },
        "volumeMounts": [
            {"name": "istio-envoy", "mountPath": "/etc/istio/proxy"},
            {"name": "istio-data", "mountPath": "/var/lib/istio/data"},
            {"name": "istio-token", "mountPath": "/var/run/secrets/tokens"},
            {"name": "istiod-ca-cert", "mountPath": "/var/run/secrets/istio"},
        ],
    }


def proxy_volumes() -> list[JsonValue]:
    token: JsonObject = {
        "serviceAccountToken": {
            "audience": TOKEN_AUDIENCE,
            "expirationSeconds": 43200,
            "path": "istio-token",
        }
    }
    return [
        {"name": "istio-envoy", "emptyDir": {}},
        {"name": "istio-data", "emptyDir": {}},
        {"name": "istio-token", "projected": {"sources": [token]}},
        {"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}},
    ]


def _app_container(
    scenario: Scenario, service: str, first: int, images: KubeImages, seed: int | None
) -> JsonObject:
    spec = scenario.app.topology.service(service)
    args: list[JsonValue] = [
        "--service",
        service,
        "--instance",
        "$(POD_NAME)",  # Kubernetes expands $(VAR) from the container's env
        "--listen",
        f"0.0.0.0:{APP_PORT}",
        "--sidecar",
        f"127.0.0.1:{SERVICE_PORT}",
        *spec.app_arguments(first),
    ]
    if seed is not None:
        args += ["--seed", str(seed)]
    return {
        "name": "app",
        "image": images.app,
        "imagePullPolicy": images.pull_policy,
        "args": args,
        "env": [_field_env("POD_NAME", "metadata.name")],
        # A startup probe, not a readiness probe: the pod is not Ready before the app serves,
        # but a hung app (a pause fault) stays in the endpoints as on the local platform,
        # where only the mesh's timeouts and outlier detection protect callers from it.
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": APP_PORT},
            "periodSeconds": 1,
            "failureThreshold": 300,
        },
    }


def _statefulsets(
    scenario: Scenario,
    namespace: str,
    labels: Mapping[str, str],
    images: KubeImages,
    endpoints: MeshEndpoints,
    seed: int | None,
) -> list[JsonObject]:
    out: list[JsonObject] = []
    topology = scenario.app.topology
    for service in topology.service_names:
        spec = topology.service(service)
        first = 0
        for variant in spec.variants:
            name = statefulset_name(service, variant.version, spec.versioned)
            pod_labels: JsonObject = {**labels, **variant.pod_labels, "app": service}
            pod_spec: JsonObject = {
                "serviceAccountName": service,
                "terminationGracePeriodSeconds": 2,
                "enableServiceLinks": False,
                "containers": [
                    _app_container(scenario, service, first, images, seed),
                    proxy_container(namespace, images, endpoints),
                ],
                "volumes": proxy_volumes(),
            }
            signals = service in process_fault_services(scenario)
            net_admin = service in partition_services(scenario) | toxic_sources(scenario)
            if signals or net_admin:
                # kill / pause / partition faults act from a helper container
                containers = pod_spec["containers"]
                assert isinstance(containers, list)
                helper = chaos_container(images.app, images.pull_policy, net_admin=net_admin)
                containers.append(helper)
                if signals:
                    pod_spec["shareProcessNamespace"] = True
            if endpoints.istiod_ip:
                pod_spec["hostAliases"] = [
                    {"ip": endpoints.istiod_ip, "hostnames": [endpoints.istiod_host]}
                ]
            out.append(
                {
                    "apiVersion": "apps/v1",
                    "kind": "StatefulSet",
                    "metadata": {
                        "name": name,
                        "namespace": namespace,
                        "labels": dict[str, JsonValue](labels),
                    },
                    "spec": {
                        "replicas": variant.replicas,
                        "serviceName": service,
                        "podManagementPolicy": "Parallel",
                        "selector": {"matchLabels": {"app": service, "version": variant.version}},
                        "template": {
                            "metadata": {
                                "labels": pod_labels,
                                "annotations": {"sidecar.istio.io/inject": "false"},
                            },
                            "spec": pod_spec,
                        },
                    },
                }
            )
            first += variant.replicas
    return out


def sidecar_resource(namespace: str, service: str) -> JsonObject:
    """The Istio ``Sidecar`` of ``service``'s pods: explicit listeners, no capture (see the
    module docstring for the ports)."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": service, "namespace": namespace},
        "spec": {
            "workloadSelector": {"labels": {"app": service}},
            "ingress": [
                {
                    "port": {"number": INBOUND_PORT, "protocol": "HTTP", "name": PORT_NAME},
                    "defaultEndpoint": f"127.0.0.1:{APP_PORT}",
                    "captureMode": "NONE",
                }
            ],
            "egress": [
                {
                    "port": {"number": SERVICE_PORT, "protocol": "HTTP", "name": PORT_NAME},
                    "bind": "127.0.0.1",
                    "captureMode": "NONE",
                    "hosts": ["./*"],
                }
            ],
        },
    }


def _labelled(obj: JsonObject, labels: Mapping[str, str]) -> JsonObject:
    metadata = obj["metadata"]
    assert isinstance(metadata, dict)
    current = metadata.get("labels")
    metadata["labels"] = {**(current if isinstance(current, dict) else {}), **labels}
    return obj


def run_objects(
    scenario: Scenario,
    rendered: Sequence[Manifest],
    *,
    images: KubeImages,
    endpoints: MeshEndpoints,
    seed: int | None = None,
) -> list[JsonObject]:
    """Everything one run applies, in order: the Namespace, the rendered policy without its
    Deployments, a StatefulSet per service version, each service's Sidecar, the fault
    filters (off until a fault flips their runtime keys) and access-log filters. The
    gateway's access-log filter is installed with Istio (:func:`gateway_access_log`): it
    lives in the gateway's namespace, which no run owns."""
    namespace_obj, *rest = rendered
    namespace = namespace_obj.name
    run_id = namespace_obj.labels[RUN_ID_LABEL]
    labels = {key: value for key, value in namespace_obj.labels.items() if key != "istio-injection"}
    objects: list[JsonObject] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": dict[str, JsonValue](labels)},
        }
    ]
    objects += [m.to_dict() for m in rest if m.kind != "Deployment"]
    objects += _statefulsets(scenario, namespace, labels, images, endpoints, seed)
    if toxic_sources(scenario):
        if images.toxiproxy is None:
            raise ValueError("toxic faults need the toxiproxy image (KubeImages.toxiproxy)")
        objects.append(toxiproxy_pod(namespace, images.toxiproxy, images.pull_policy))
    topology = scenario.app.topology
    fields = scenario.mesh.access_log
    for service in topology.service_names:
        objects.append(sidecar_resource(namespace, service))
        callers = [*topology.callers_of(service)]
        if service == topology.entry:
            callers.append("ingress")
        objects.append(fault_envoy_filter(namespace, service, callers))
        pods = Workload(service, service, namespace, "", 0)
        observe = observe_envoy_filter(pods, ACCESS_LOG_PATH, service, fields)
        objects.append(_selecting(observe, {"app": service}))
    return [_labelled(obj, {RUN_ID_LABEL: run_id}) for obj in objects]


def gateway_access_log(namespace: str, selector: Mapping[str, str]) -> JsonObject:
    """The ingress gateway's JSON access log on its stdout, in the harness's format (the
    ``full`` fields), with ``x-harness-source: ingress`` on the requests it sends."""
    gateway = Workload("ingress", GATEWAY_ACCOUNT, namespace, "", 0)
    observe = observe_envoy_filter(gateway, ACCESS_LOG_PATH, "ingress", "full")
    return _selecting(observe, selector)


def _selecting(envoy_filter: JsonObject, labels: Mapping[str, str]) -> JsonObject:
    """``envoy_filter`` applied to the pods with ``labels`` (not one instance)."""
    spec = envoy_filter["spec"]
    assert isinstance(spec, dict)
    spec["workloadSelector"] = {"labels": dict(labels)}
    return envoy_filter
