"""KubeClient against the real kube-apiserver of the pinned toolchain (Istio's CRDs applied).

What the Kubernetes platform writes must be accepted by a real API server: every object
``render`` produces for every shipped scenario is applied here. The safety rules are checked
on the same server: a namespace or cluster object the harness did not make is never changed
or deleted. (No kubelet runs here, so a pod's status is written by the test as a kubelet
would write it.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import kubernetes.client
import pytest

from harness.controlplane import KubeControlPlane, kube_control_plane
from harness.errors import ControlPlaneError, ToolMissingError
from harness.kube.render import RUN_ID_LABEL, RenderOptions, render, run_namespace
from harness.platforms.kube.client import KubeClient
from harness.platforms.kube.context import KubeContext, pin_context
from harness.scenario import load_scenario

pytestmark = pytest.mark.controlplane

SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.yaml"))


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeControlPlane]:
    try:
        with kube_control_plane() as plane:
            yield plane
    except ToolMissingError as exc:
        pytest.fail(f"{exc}\n(the controlplane tests need the pinned toolchain: .ci/run)")


@pytest.fixture(scope="module")
def context(kube: KubeControlPlane) -> KubeContext:
    # The control plane's kubeconfig carries no harness marker: allow-listed by name.
    return pin_context(kube.kubeconfig, allow=["harness"], environ={})


@contextlib.contextmanager
def client_for(context: KubeContext, owner: str) -> Iterator[KubeClient]:
    client = KubeClient(context, owner)
    try:
        yield client
    finally:
        client.close()


def core(kube: KubeControlPlane) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(kube.client)


def rbac(kube: KubeControlPlane) -> kubernetes.client.RbacAuthorizationV1Api:
    return kubernetes.client.RbacAuthorizationV1Api(kube.client)


def test_every_shipped_scenario_applies_cleanly(
    kube: KubeControlPlane, context: KubeContext
) -> None:
    assert len(SCENARIOS) >= 10
    applied = 0
    for number, path in enumerate(SCENARIOS):
        run_id = f"20261202T000000Z-{number:06x}"
        objects = [m.to_dict() for m in render(load_scenario(path), RenderOptions.for_run(run_id))]
        with client_for(context, run_id) as client:
            client.apply(objects)
        applied += len(objects)
        namespace = core(kube).read_namespace(run_namespace(run_id))
        assert namespace.metadata.labels[RUN_ID_LABEL] == run_id, path.name
        custom = kubernetes.client.CustomObjectsApi(kube.client)
        services = core(kube).list_namespaced_service(run_namespace(run_id)).items
        assert {s.metadata.labels[RUN_ID_LABEL] for s in services} == {run_id}
        gateways = custom.list_namespaced_custom_object(
            "networking.istio.io", "v1", run_namespace(run_id), "gateways"
        )["items"]
        assert [g["metadata"]["name"] for g in gateways] == ["ingress"], path.name
    assert applied > 10 * len(SCENARIOS)


def test_apply_is_idempotent_and_takes_back_its_own_fields(
    kube: KubeControlPlane, context: KubeContext
) -> None:
    run_id = "run-takeback"
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": run_namespace(run_id)},
        "data": {"mode": "ours"},
    }
    with client_for(context, run_id) as client:
        client.create_namespace(run_namespace(run_id))
        client.apply([config])
        client.apply([config])  # again: no change, no error
        # Someone else's field manager takes our field; our next apply forces it back.
        core(kube).patch_namespaced_config_map(
            "settings",
            run_namespace(run_id),
            {"data": {"mode": "theirs"}},
            field_manager="kubectl-edit",
        )
        client.apply([config])

    live = core(kube).read_namespaced_config_map("settings", run_namespace(run_id))
    assert live.data == {"mode": "ours"}
    assert live.metadata.labels[RUN_ID_LABEL] == run_id


def test_a_namespace_or_object_the_harness_did_not_make_is_never_touched(
    kube: KubeControlPlane, context: KubeContext
) -> None:
    core(kube).create_namespace({"metadata": {"name": "theirs", "labels": {"team": "a"}}})
    rbac(kube).create_cluster_role({"metadata": {"name": "their-role"}, "rules": []})
    in_theirs = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "theirs"},
        "data": {"a": "b"},
    }
    their_role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "their-role"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}],
    }
    with client_for(context, "run-intruder") as client:
        with pytest.raises(ControlPlaneError, match="namespace theirs exists and is not"):
            client.create_namespace("theirs")
        with pytest.raises(ControlPlaneError, match="namespace theirs exists and is not"):
            client.apply([in_theirs])
        with pytest.raises(ControlPlaneError, match="ClusterRole their-role exists and is not"):
            client.apply([their_role])

    theirs = core(kube).read_namespace("theirs")
    assert theirs.metadata.labels == {"team": "a", "kubernetes.io/metadata.name": "theirs"}
    assert core(kube).list_namespaced_config_map("theirs").items == []
    assert rbac(kube).read_cluster_role("their-role").rules is None


def test_delete_owned_removes_the_runs_namespace_and_labelled_cluster_objects_only(
    kube: KubeControlPlane, context: KubeContext
) -> None:
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "run-doomed-reader"},
        "rules": [],
    }
    for owner in ("run-doomed", "run-spared"):
        with client_for(context, owner) as client:
            client.create_namespace(run_namespace(owner))
    with client_for(context, "run-doomed") as client:
        client.apply([role])
        report = client.delete_owned()

    assert report.namespaces == [f"namespaces/{run_namespace('run-doomed')}"]
    assert report.objects == ["clusterroles/run-doomed-reader"]
    assert report.left_alone == []
    # No namespace controller runs here: a deleted namespace stays Terminating.
    assert core(kube).read_namespace(run_namespace("run-doomed")).status.phase == "Terminating"
    assert core(kube).read_namespace(run_namespace("run-spared")).status.phase == "Active"
    names = {r.metadata.name for r in rbac(kube).list_cluster_role().items}
    assert "run-doomed-reader" not in names
    assert core(kube).read_namespace("default").status.phase == "Active"


def test_wait_pods_ready_follows_the_pods_status(
    kube: KubeControlPlane, context: KubeContext
) -> None:
    namespace = run_namespace("run-pods")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app-0", "namespace": namespace},
        "spec": {"containers": [{"name": "app", "image": "harness.local/app:x"}]},
    }
    with client_for(context, "run-pods") as client:
        client.create_namespace(namespace)
        client.apply([pod])
        with pytest.raises(ControlPlaneError, match=r"0 of 1 pods Ready .*app-0"):
            client.wait_pods_ready(namespace, count=1, timeout_s=1.5)
        status = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
        core(kube).patch_namespaced_pod_status("app-0", namespace, status)
        client.wait_pods_ready(namespace, count=1, timeout_s=30)
        never = {
            "status": {
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {
                        "name": "app",
                        "image": "harness.local/app:x",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "no"}},
                    }
                ],
            }
        }
        core(kube).patch_namespaced_pod_status("app-0", namespace, never)
        with pytest.raises(ControlPlaneError, match="app-0/app: ErrImageNeverPull"):
            client.wait_pods_ready(namespace, count=1, timeout_s=60)


def test_what_a_kube_run_applies_is_accepted(kube: KubeControlPlane, context: KubeContext) -> None:
    """The objects ``--platform kube`` really applies (:func:`run_objects`: StatefulSets with
    the injected sidecar, Sidecars, EnvoyFilters) for every shipped scenario it can run."""
    from harness.platforms.kube.objects import KubeImages, MeshEndpoints, run_objects
    from harness.platforms.kube.options import unsupported_on_kube

    images = KubeImages(
        app="harness.local/app:0123456789ab",
        proxy="harness.local/proxyv2:0a",
        toxiproxy="harness.local/toxiproxy:0b",
    )
    runnable = 0
    for number, path in enumerate(SCENARIOS):
        scenario = load_scenario(path)
        if unsupported_on_kube(scenario):
            continue
        runnable += 1
        run_id = f"20261202T010000Z-{number:06x}"
        rendered = render(scenario, RenderOptions.for_run(run_id))
        objects = run_objects(scenario, rendered, images=images, endpoints=MeshEndpoints())
        with client_for(context, run_id) as client:
            client.apply(objects)
        namespace = run_namespace(run_id)
        apps = kubernetes.client.AppsV1Api(kube.client)
        sets = apps.list_namespaced_stateful_set(namespace).items
        assert {s.metadata.name for s in sets} == {
            o["metadata"]["name"] for o in objects if o["kind"] == "StatefulSet"
        }, path.name
        custom = kubernetes.client.CustomObjectsApi(kube.client)
        filters = custom.list_namespaced_custom_object(
            "networking.istio.io", "v1alpha3", namespace, "envoyfilters"
        )["items"]
        assert len(filters) == 2 * len(scenario.app.topology.service_names), path.name
    assert runnable >= 5
