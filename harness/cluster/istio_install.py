"""Istio into a cluster from its own Helm charts: ``base``, ``istiod`` and the ingress gateway.

The charts come from the pinned istio module (the toolchain packs them, see
:mod:`harness.toolchain`); ``helm template`` renders them with the values below and the
objects are server-side applied by :class:`~harness.platforms.kube.client.KubeClient`
(owner :data:`ISTIO_OWNER`, so a second install changes only what changed, and an Istio the
harness did not install is never overwritten). Helm never talks to the cluster.

The values (:func:`chart_values`), and why:

* images: ``pilot`` and ``proxyv2`` built locally (full references, content-addressed tags),
  ``imagePullPolicy: Never`` — no registry is reachable;
* istiod: the switches upstream Envoy needs, as every istiod the harness runs
  (:data:`harness.controlplane.istiod.ENVIRONMENT`: no metadata exchange, no ALPN filter, no
  Gateway API), no telemetry filters, cluster stats named as ``--mesh envoy`` names them, every
  proxy stat kept (the SLOs read outbound cluster and fault-filter counters); one replica,
  no autoscaler;
* no injection webhook: the harness writes each pod's sidecar itself, so the chart's
  ``MutatingWebhookConfiguration`` is left out (with it, a namespace labelled
  ``istio-injection=enabled`` would get a second proxy) and istiod does not patch it; no
  validation webhook either (``configValidation: false``): the harness's renderer refuses what
  Istio's validation refuses before anything is applied;
* the gateway ``istio-ingressgateway`` (pods labelled ``istio: ingressgateway``, which the
  rendered Gateway selects) as a NodePort Service: port 80 → node port **30080** (kind maps it
  to ``127.0.0.1:30080``, see ``kind-config.yaml``; ``cluster up --local`` forwards it), target
  port 8080 (istiod binds the gateway listener to the target port: no privileged port). Its
  chart leaves the proxy container to injection (``image: auto``): :func:`gateway_proxy`
  fills it in as Istio's gateway injection template would.

Usage::

    objects = render_istio(toolchain, IstioImages(pilot=..., proxyv2=...))
    install_istio(KubeClient(context, ISTIO_OWNER), objects)
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from harness.controlplane.istiod import (
    ENVIRONMENT,
    ISTIO_NAMESPACE,
    OUTBOUND_CLUSTER_STAT_NAME,
    PROXY_STATS_MATCHER,
)
from harness.errors import ControlPlaneError, ToolMissingError
from harness.platforms.kube.client import KubeClient
from harness.platforms.kube.context import KubeContext
from harness.platforms.kube.objects import gateway_access_log
from harness.toolchain import KUBERNETES_VERSION, Toolchain

__all__ = [
    "GATEWAY",
    "INGRESS_NODE_PORT",
    "ISTIO_OWNER",
    "IstioImages",
    "chart_values",
    "gateway_proxy",
    "helm_commands",
    "install_istio",
    "install_mesh",
    "print_istio_plan",
    "render_istio",
]

ISTIO_OWNER: Final = "harness-istio"  # the harness/run-id label of everything installed here
GATEWAY: Final = "istio-ingressgateway"
GATEWAY_LABEL: Final = {"istio": "ingressgateway"}  # what harness.kube.render's Gateway selects
INGRESS_NODE_PORT: Final = 30080
GATEWAY_TARGET_PORT: Final = 8080
STATUS_PORT: Final = 15021
ISTIOD_ADDRESS: Final = f"istiod.{ISTIO_NAMESPACE}.svc:15012"
# Left out of the rendered charts: the harness injects sidecars itself (see the docstring).
SKIPPED_KINDS: Final = frozenset({"MutatingWebhookConfiguration"})
# Chart, release name, file in the toolchain: in install order.
CHARTS: Final = (
    ("base", "istio-base", "chart-base.tgz"),
    ("istiod", "istiod", "chart-istiod.tgz"),
    ("gateway", GATEWAY, "chart-gateway.tgz"),
)
ESTABLISHED_TIMEOUT_S: Final = 60.0
READY_TIMEOUT_S: Final = 300.0  # istiod and the gateway Ready (images are local: no pull)
ISTIOD_ENV: Final = {
    key: value
    for key, value in ENVIRONMENT.items()
    if key.startswith("PILOT_") or key.endswith("_WEBHOOK_CONFIG_NAME")
}

Log = Callable[[str], None]
JsonObject = dict[str, Any]


@dataclass(frozen=True)
class IstioImages:
    """Full references of the locally built images (``harness.local/<name>:<digest12>``)."""

    pilot: str
    proxyv2: str


def _proxy_config() -> JsonObject:
    return {"discoveryAddress": ISTIOD_ADDRESS, "proxyStatsMatcher": dict(PROXY_STATS_MATCHER)}


def chart_values(images: IstioImages) -> dict[str, JsonObject]:
    """The pinned values of each chart (``base``, ``istiod``, ``gateway``)."""
    shared = {"istioNamespace": ISTIO_NAMESPACE, "imagePullPolicy": "Never"}
    return {
        "base": {"global": shared, "defaultRevision": ""},
        "istiod": {
            "global": {
                **shared,
                "configValidation": False,
                "proxy": {"image": images.proxyv2},
                "proxy_init": {"image": images.proxyv2},
            },
            "pilot": {
                "image": images.pilot,
                "autoscaleEnabled": False,
                "replicaCount": 1,
                "env": dict(ISTIOD_ENV),
            },
            "telemetry": {"enabled": False},
            "meshConfig": {
                "outboundClusterStatName": OUTBOUND_CLUSTER_STAT_NAME,
                "enablePrometheusMerge": False,
                "defaultConfig": _proxy_config(),
            },
        },
        "gateway": {
            "labels": dict(GATEWAY_LABEL),
            "imagePullPolicy": "Never",
            "autoscaling": {"enabled": False},
            "service": {
                "type": "NodePort",
                "ports": [
                    {"name": "status-port", "port": STATUS_PORT, "protocol": "TCP"},
                    {
                        "name": "http2",
                        "port": 80,
                        "targetPort": GATEWAY_TARGET_PORT,
                        "nodePort": INGRESS_NODE_PORT,
                        "protocol": "TCP",
                    },
                ],
            },
        },
    }


def helm_commands(toolchain: Toolchain, values_dir: Path) -> list[list[str]]:
    """The ``helm template`` command of each chart (values files in ``values_dir``)."""
    helm = str(toolchain.path("helm"))
    return [
        [
            helm,
            "template",
            release,
            str(toolchain.path(file)),
            "--namespace",
            ISTIO_NAMESPACE,
            "--kube-version",
            KUBERNETES_VERSION,
            "--values",
            str(values_dir / f"{chart}.values.json"),
        ]
        for chart, release, file in CHARTS
    ]


def render_istio(
    toolchain: Toolchain, images: IstioImages, *, log: Log | None = None
) -> list[JsonObject]:
    """Every object of the three charts, in install order: the ``istio-system`` Namespace,
    the CRDs, then everything else; the gateway's proxy filled in (:func:`gateway_proxy`)."""
    values = chart_values(images)
    objects: list[JsonObject] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ISTIO_NAMESPACE}}
    ]
    with tempfile.TemporaryDirectory(prefix="harness-helm-") as scratch:
        directory = Path(scratch)
        for chart, chart_value in values.items():
            (directory / f"{chart}.values.json").write_text(json.dumps(chart_value))
        for argv in helm_commands(toolchain, directory):
            if log is not None:
                log(f"$ {shlex.join(argv)}")
            objects += _template(argv)
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    rest = [o for o in objects if o["kind"] != "CustomResourceDefinition"]
    ordered = [rest[0], *crds, *rest[1:]]
    installed = [
        gateway_proxy(o, images) if _is_gateway(o) else o
        for o in ordered
        if o["kind"] not in SKIPPED_KINDS
    ]
    # The gateway's JSON access log on its stdout, which a --platform kube run reads back.
    return [*installed, gateway_access_log(ISTIO_NAMESPACE, GATEWAY_LABEL)]


def _template(argv: Sequence[str]) -> list[JsonObject]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except OSError as exc:
        raise ToolMissingError(f"cannot run {argv[0]}: {exc} (harness toolchain install)") from None
    if done.returncode != 0:
        raise ControlPlaneError(
            f"`{shlex.join(argv)}` failed (exit {done.returncode}):\n{done.stderr.strip()}"
        )
    return [doc for doc in yaml.safe_load_all(done.stdout) if isinstance(doc, dict)]


def _is_gateway(item: Mapping[str, Any]) -> bool:
    return bool(item["kind"] == "Deployment" and item["metadata"]["name"] == GATEWAY)


def gateway_proxy(deployment: Mapping[str, Any], images: IstioImages) -> JsonObject:
    """The gateway Deployment with its ``istio-proxy`` container as Istio's gateway injection
    template makes it (``pilot-agent proxy router``, the pod's identity from the downward API,
    a token for istiod's CA, istiod's root certificate, the readiness probe on 15021)."""
    body: JsonObject = json.loads(json.dumps(deployment))
    pod = body["spec"]["template"]["spec"]
    field = {
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
        "INSTANCE_IP": "status.podIP",
        "SERVICE_ACCOUNT": "spec.serviceAccountName",
        "HOST_IP": "status.hostIP",
        "ISTIO_META_NODE_NAME": "spec.nodeName",
    }
    env = [{"name": k, "valueFrom": {"fieldRef": {"fieldPath": v}}} for k, v in field.items()]
    env += [
        {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
        {"name": "CA_ADDR", "value": ISTIOD_ADDRESS},
        {"name": "PROXY_CONFIG", "value": json.dumps(_proxy_config())},
        {"name": "ISTIO_META_CLUSTER_ID", "value": "Kubernetes"},
        {"name": "ISTIO_META_WORKLOAD_NAME", "value": GATEWAY},
        {"name": "ISTIO_META_OWNER", "value": _owner(body)},
    ]
    for container in pod["containers"]:
        if container["name"] != "istio-proxy":
            continue
        container.update(
            image=images.proxyv2,
            imagePullPolicy="Never",
            args=[
                "proxy",
                "router",
                "--domain",
                "$(POD_NAMESPACE).svc.cluster.local",
                "--proxyLogLevel=warning",
                "--log_output_level=default:info",
            ],
            env=[*env, *(container.get("env") or [])],
            readinessProbe={
                "httpGet": {"path": "/healthz/ready", "port": STATUS_PORT},
                "periodSeconds": 2,
                "failureThreshold": 30,
            },
            volumeMounts=[
                # pilot-agent's sockets and certificate files: the root file system is
                # read-only (the chart's securityContext), as under Istio's own template.
                {"name": "workload-socket", "mountPath": "/var/run/secrets/workload-spiffe-uds"},
                {"name": "credential-socket", "mountPath": "/var/run/secrets/credential-uds"},
                {
                    "name": "workload-certs",
                    "mountPath": "/var/run/secrets/workload-spiffe-credentials",
                },
                {"name": "istio-envoy", "mountPath": "/etc/istio/proxy"},
                {"name": "istio-data", "mountPath": "/var/lib/istio/data"},
                {"name": "istio-podinfo", "mountPath": "/etc/istio/pod"},
                {"name": "istio-token", "mountPath": "/var/run/secrets/tokens"},
                {"name": "istiod-ca-cert", "mountPath": "/var/run/secrets/istio"},
            ],
        )
    pod["volumes"] = [*(pod.get("volumes") or []), *_proxy_volumes()]
    return body


def _owner(deployment: Mapping[str, Any]) -> str:
    namespace = deployment["metadata"].get("namespace", ISTIO_NAMESPACE)
    return f"kubernetes://apis/apps/v1/namespaces/{namespace}/deployments/{GATEWAY}"


def _proxy_volumes() -> list[JsonObject]:
    podinfo = [
        {"path": path, "fieldRef": {"fieldPath": f"metadata.{path}"}}
        for path in ("labels", "annotations")
    ]
    token = {"path": "istio-token", "expirationSeconds": 43200, "audience": "istio-ca"}
    return [
        {"name": "workload-socket", "emptyDir": {}},
        {"name": "credential-socket", "emptyDir": {}},
        {"name": "workload-certs", "emptyDir": {}},
        {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}},
        {"name": "istio-data", "emptyDir": {}},
        {"name": "istio-podinfo", "downwardAPI": {"items": podinfo}},
        {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": token}]}},
        {"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}},
    ]


def install_istio(
    client: KubeClient,
    objects: Sequence[Mapping[str, Any]],
    *,
    dry_run: bool = False,
    log: Log | None = None,
) -> None:
    """Apply the rendered objects: the namespace and CRDs first (waiting until the CRDs are
    Established), then the rest. ``dry_run``: the server checks everything, stores nothing
    (a CRD's custom objects cannot be dry-run before the CRD exists: none are rendered)."""
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    rest = [o for o in objects if o["kind"] != "CustomResourceDefinition"]
    first = [o for o in rest if o["kind"] == "Namespace"]
    begun = time.monotonic()
    client.apply([*first, *crds], dry_run=dry_run)
    if crds and not dry_run:
        client.wait_established({o["metadata"]["name"] for o in crds}, ESTABLISHED_TIMEOUT_S)
    client.apply([o for o in rest if o["kind"] != "Namespace"], dry_run=dry_run)
    if log is not None:
        verb = "checked (dry run)" if dry_run else "applied"
        log(f"Istio: {len(objects)} objects {verb} in {time.monotonic() - begun:.1f} s")


def install_mesh(
    context: KubeContext,
    toolchain: Toolchain,
    images: IstioImages,
    *,
    timeout_s: float = READY_TIMEOUT_S,
    log: Log | None = None,
) -> None:
    """Render and install Istio on ``context`` (a guard-admitted, pinned context), then wait
    until istiod and the ingress gateway are Ready: what both ``cluster up`` paths do."""
    client = KubeClient(context, ISTIO_OWNER)
    try:
        install_istio(client, render_istio(toolchain, images, log=log), log=log)
        client.wait_pods_ready(ISTIO_NAMESPACE, count=2, timeout_s=timeout_s)
    finally:
        client.close()
    if log is not None:
        log(f"Istio ready on {context.describe()}")


def print_istio_plan(toolchain: Toolchain, log: Log) -> None:
    """``--dry-run``: the helm commands and every object Istio's install would apply (with
    placeholder image tags: the real ones are digests of images not built yet). Helm only
    renders; nothing reaches a cluster."""
    placeholder = IstioImages(
        pilot="harness.local/pilot:<digest>", proxyv2="harness.local/proxyv2:<digest>"
    )
    objects = render_istio(toolchain, placeholder, log=log)
    log(
        f"# {len(objects)} objects, server-side applied in this order (field manager harness, "
        f"label harness/run-id={ISTIO_OWNER}), then istiod and {GATEWAY} waited for:"
    )
    log(yaml.safe_dump_all(objects, sort_keys=False))
