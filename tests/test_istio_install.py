"""Istio's Helm charts rendered with the harness's values and applied to the real API server.

``helm template`` runs the pinned helm on the pinned charts (both from the toolchain); every
object it renders is server-side applied by KubeClient to the toolchain's kube-apiserver, which
validates each against its schema (Deployments, webhooks, RBAC, Istio's CRDs themselves).
No kubelet runs here: nothing starts, the objects are only stored.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import kubernetes.client
import pytest

from harness.cluster.istio_install import (
    GATEWAY,
    INGRESS_NODE_PORT,
    ISTIO_OWNER,
    IstioImages,
    install_istio,
    render_istio,
)
from harness.controlplane import KubeControlPlane, kube_control_plane
from harness.errors import ControlPlaneError, ToolMissingError
from harness.kube.render import RUN_ID_LABEL
from harness.platforms.kube.client import KubeClient
from harness.platforms.kube.context import pin_context
from harness.toolchain import Toolchain, installed

pytestmark = pytest.mark.controlplane

IMAGES = IstioImages(
    pilot="harness.local/pilot:0123456789ab", proxyv2="harness.local/proxyv2:ba9876543210"
)


@pytest.fixture(scope="module")
def toolchain() -> Toolchain:
    try:
        chain = installed()
        chain.path("helm")
    except ToolMissingError as exc:
        pytest.fail(f"{exc}\n(the controlplane tests need the pinned toolchain: .ci/run)")
    return chain


@pytest.fixture(scope="module")
def objects(toolchain: Toolchain) -> list[dict]:  # type: ignore[type-arg]
    return render_istio(toolchain, IMAGES)


@pytest.fixture(scope="module")
def kube(toolchain: Toolchain) -> Iterator[KubeControlPlane]:
    # No CRDs up front: the base chart brings Istio's own.
    with kube_control_plane(toolchain, istio_crds=False) as plane:
        yield plane


def by_kind(objects: list[dict], kind: str) -> list[dict]:  # type: ignore[type-arg]
    return [o for o in objects if o["kind"] == kind]


def test_the_charts_render_with_our_images_and_settings(objects: list[dict]) -> None:  # type: ignore[type-arg]
    kinds = Counter(o["kind"] for o in objects)
    assert kinds["CustomResourceDefinition"] >= 14
    assert kinds["MutatingWebhookConfiguration"] == 0  # the harness injects sidecars itself
    assert objects[0]["kind"] == "Namespace"
    assert {o["kind"] for o in objects[1 : kinds["CustomResourceDefinition"] + 1]} == {
        "CustomResourceDefinition"
    }
    deployments = {d["metadata"]["name"]: d for d in by_kind(objects, "Deployment")}
    assert set(deployments) == {"istiod", GATEWAY}
    images = {
        c["name"]: (c["image"], c.get("imagePullPolicy"))
        for d in deployments.values()
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {
        "discovery": (IMAGES.pilot, "Never"),
        "istio-proxy": (IMAGES.proxyv2, "Never"),
    }
    istiod_env = {
        e["name"]: e.get("value")
        for e in deployments["istiod"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert istiod_env["PILOT_ENABLE_METADATA_EXCHANGE"] == "false"
    assert istiod_env["PILOT_ENABLE_ALPN_FILTER"] == "false"
    assert istiod_env["INJECTION_WEBHOOK_CONFIG_NAME"] == ""
    mesh = next(c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"] == "istio")[
        "data"
    ]["mesh"]
    assert "outboundClusterStatName: outbound|%SERVICE_PORT%|%SUBSET_NAME%|%SERVICE_NAME%" in mesh
    assert "inclusionRegexps" in mesh
    gateway_service = next(
        s for s in by_kind(objects, "Service") if s["metadata"]["name"] == GATEWAY
    )
    assert gateway_service["spec"]["type"] == "NodePort"
    http = next(p for p in gateway_service["spec"]["ports"] if p["port"] == 80)
    assert (http["nodePort"], http["targetPort"]) == (INGRESS_NODE_PORT, 8080)
    assert gateway_service["spec"]["selector"]["istio"] == "ingressgateway"
    pod = deployments[GATEWAY]["spec"]["template"]["spec"]
    proxy = pod["containers"][0]
    assert proxy["args"][:2] == ["proxy", "router"]
    # The root file system is read-only: every path pilot-agent writes is a mounted volume.
    mounts = {m["mountPath"]: m["name"] for m in proxy["volumeMounts"]}
    assert {v["name"] for v in pod["volumes"]} >= set(mounts.values())
    assert "/var/run/secrets/workload-spiffe-uds" in mounts  # its SDS socket (failed without)
    config = json.loads(next(e["value"] for e in proxy["env"] if e["name"] == "PROXY_CONFIG"))
    assert config["proxyStatsMatcher"] == {"inclusionRegexps": [".*"]}


def test_every_chart_object_is_accepted_by_the_api_server(
    kube: KubeControlPlane,
    objects: list[dict],  # type: ignore[type-arg]
) -> None:
    context = pin_context(kube.kubeconfig, allow=["harness"], environ={})
    client = KubeClient(context, ISTIO_OWNER)
    try:
        install_istio(client, objects)
        install_istio(client, objects)  # idempotent: the same objects again
    finally:
        client.close()

    apps = kubernetes.client.AppsV1Api(kube.client)
    gateway = apps.read_namespaced_deployment(GATEWAY, "istio-system")
    assert gateway.metadata.labels[RUN_ID_LABEL] == ISTIO_OWNER
    assert gateway.spec.template.spec.containers[0].image == IMAGES.proxyv2
    istiod = apps.read_namespaced_deployment("istiod", "istio-system")
    assert istiod.spec.template.spec.containers[0].image == IMAGES.pilot
    crds = kubernetes.client.ApiextensionsV1Api(kube.client).list_custom_resource_definition()
    istio_crds = [c for c in crds.items if c.spec.group.endswith("istio.io")]
    assert len(istio_crds) == len(by_kind(objects, "CustomResourceDefinition"))
    # Everything it applied is labelled, cluster-scoped objects included.
    roles = kubernetes.client.RbacAuthorizationV1Api(kube.client).list_cluster_role(
        label_selector=f"{RUN_ID_LABEL}={ISTIO_OWNER}"
    )
    assert len(roles.items) == len(by_kind(objects, "ClusterRole"))


def test_an_istio_the_harness_did_not_install_is_left_alone(
    toolchain: Toolchain,
    objects: list[dict],  # type: ignore[type-arg]
) -> None:
    with kube_control_plane(toolchain, istio_crds=True) as plane:  # CRDs applied, unlabelled
        context = pin_context(plane.kubeconfig, allow=["harness"], environ={})
        client = KubeClient(context, ISTIO_OWNER)
        try:
            with pytest.raises(
                ControlPlaneError, match=r"CustomResourceDefinition .* exists and is not"
            ):
                install_istio(client, objects)
        finally:
            client.close()
        # Refused before the first write: not even the namespace was created.
        names = kubernetes.client.CoreV1Api(plane.client).list_namespace().items
        assert "istio-system" not in {n.metadata.name for n in names}
