"""The objects of a ``--platform kube`` run (pure builders) and what the platform refuses
before anything exists. The API server's acceptance of these objects is tested against a
real kube-apiserver in tests/test_kube_apply.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.errors import PlatformError
from harness.kube.render import RUN_ID_LABEL, RenderOptions, render
from harness.platforms.kube.objects import (
    APP_PORT,
    INBOUND_PORT,
    KubeImages,
    MeshEndpoints,
    gateway_access_log,
    run_objects,
)
from harness.platforms.kube.options import check_kube_support, unsupported_on_kube
from harness.scenario import load_scenario
from harness.scenario.models import Scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
IMAGES = KubeImages(
    app="harness.local/app:0123456789ab",
    proxy="harness.local/proxyv2:ba98",
    toxiproxy="harness.local/toxiproxy:c0ffee",
)
RUN_ID = "20261202T010000Z-abcdef"


def objects_of(name: str, istiod_ip: str | None = "198.18.0.7") -> list[dict[str, Any]]:
    scenario = load_scenario(SCENARIOS / name)
    rendered = render(scenario, RenderOptions.for_run(RUN_ID))
    return run_objects(
        scenario, rendered, images=IMAGES, endpoints=MeshEndpoints(istiod_ip=istiod_ip), seed=7
    )


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_pods_are_statefulsets_named_as_the_instances_of_every_platform() -> None:
    objects = objects_of("retries-mask-transient-errors.yaml")
    assert objects[0]["kind"] == "Namespace"
    assert "istio-injection" not in objects[0]["metadata"]["labels"]  # the harness injects
    assert not by_kind(objects, "Deployment")
    sets = by_kind(objects, "StatefulSet")
    assert {name: s["spec"]["replicas"] for name, s in sets.items()} == {
        "frontend": 1,
        "catalog": 3,
        "inventory": 2,
        "pricing": 1,
    }
    for obj in objects:
        assert obj["metadata"]["labels"][RUN_ID_LABEL] == RUN_ID, obj["metadata"]["name"]


def test_versioned_services_get_one_statefulset_per_version() -> None:
    sets = by_kind(objects_of("weighted-split-90-10.yaml"), "StatefulSet")
    assert set(sets) == {"frontend", "reviews-v1", "reviews-v2"}
    selector = sets["reviews-v2"]["spec"]["selector"]["matchLabels"]
    assert selector == {"app": "reviews", "version": "v2"}


def test_the_sidecar_ports_line_up_with_the_service_and_the_app() -> None:
    objects = objects_of("retries-mask-transient-errors.yaml")
    catalog = by_kind(objects, "StatefulSet")["catalog"]["spec"]["template"]["spec"]
    app, proxy = catalog["containers"]
    assert proxy["name"] == "istio-proxy" and proxy["image"] == IMAGES.proxy
    assert app["image"] == IMAGES.app and app["imagePullPolicy"] == "Never"
    # The Service's targetPort is the port name "http": the sidecar's inbound listener.
    service = by_kind(objects, "Service")["catalog"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert proxy["ports"] == [{"name": "http", "containerPort": INBOUND_PORT, "protocol": "TCP"}]
    sidecar = by_kind(objects, "Sidecar")["catalog"]["spec"]
    assert sidecar["ingress"][0]["port"]["number"] == INBOUND_PORT
    assert sidecar["ingress"][0]["defaultEndpoint"] == f"127.0.0.1:{APP_PORT}"
    assert sidecar["egress"][0]["bind"] == "127.0.0.1"
    args = app["args"]
    assert args[args.index("--listen") + 1] == f"0.0.0.0:{APP_PORT}"
    assert args[args.index("--sidecar") + 1] == "127.0.0.1:8080"
    assert args[args.index("--seed") + 1] == "7"
    assert catalog["hostAliases"] == [
        {"ip": "198.18.0.7", "hostnames": ["istiod.istio-system.svc"]}
    ]


def test_every_service_gets_its_fault_and_access_log_filters() -> None:
    filters = by_kind(objects_of("retries-mask-transient-errors.yaml"), "EnvoyFilter")
    for service in ("frontend", "catalog", "inventory"):
        faults = filters[f"harness-faults-{service}"]["spec"]
        assert faults["workloadSelector"] == {"labels": {"app": service}}
        observe = filters[f"harness-observe-{service}"]["spec"]
        assert observe["workloadSelector"] == {"labels": {"app": service}}
        logs = [
            p["patch"]["value"]["typed_config"]["access_log"][0]["typed_config"]["path"]
            for p in observe["configPatches"]
            if p["applyTo"] == "NETWORK_FILTER"
        ]
        assert logs and set(logs) == {"/dev/stdout"}


def test_the_gateway_access_log_selects_the_gateway_pods() -> None:
    spec = gateway_access_log("istio-ingress", {"istio": "ingressgateway"})
    assert spec["metadata"]["namespace"] == "istio-ingress"
    assert spec["spec"]["workloadSelector"] == {"labels": {"istio": "ingressgateway"}}


def test_without_an_istiod_address_no_host_alias_is_written() -> None:
    sets = by_kind(objects_of("retries-mask-transient-errors.yaml", None), "StatefulSet")
    assert "hostAliases" not in sets["catalog"]["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("control-plane-outage.yaml", "kind 'controlPlane'"),
        ("control-plane-outage.yaml", "configPropagation"),
        ("authz-holds-under-chaos.yaml", "probes"),
    ],
)
def test_what_kube_cannot_run_yet_is_refused_before_anything_exists(name: str, why: str) -> None:
    scenario = load_scenario(SCENARIOS / name)
    assert any(why in problem for problem in unsupported_on_kube(scenario))
    with pytest.raises(PlatformError, match="cannot run on --platform kube"):
        check_kube_support(scenario)


def test_the_retry_pair_and_the_process_faults_run_on_kube() -> None:
    for name in (
        "retries-mask-transient-errors.yaml",
        "retries-mask-transient-errors-negative.yaml",
        "kill-instance-restart.yaml",
        "pause-instance-timeouts.yaml",
        "pause-instance-timeouts-negative.yaml",
        "partition-outlier-ejection.yaml",
        "partition-outlier-ejection-negative.yaml",
        "latency-toxic-timeouts.yaml",
        "latency-toxic-timeouts-negative.yaml",
        "canary-bad-version-is-stopped.yaml",
        "canary-bad-version-is-stopped-negative.yaml",
    ):
        assert unsupported_on_kube(load_scenario(SCENARIOS / name)) == []


def test_only_pods_a_process_fault_targets_get_the_helper_container() -> None:
    sets = by_kind(objects_of("pause-instance-timeouts.yaml"), "StatefulSet")
    inventory = sets["inventory"]["spec"]["template"]["spec"]
    assert inventory["shareProcessNamespace"] is True
    app, proxy, chaos = inventory["containers"]
    assert (app["name"], proxy["name"], chaos["name"]) == ("app", "istio-proxy", "harness-chaos")
    # The app image's Python, as root (signals to the sidecar's uid 1337), no added
    # capabilities and no privilege.
    assert chaos["image"] == IMAGES.app and chaos["imagePullPolicy"] == "Never"
    assert chaos["securityContext"] == {"runAsUser": 0, "runAsGroup": 0}
    for service in ("frontend", "catalog"):
        spec = sets[service]["spec"]["template"]["spec"]
        assert "shareProcessNamespace" not in spec
        assert [c["name"] for c in spec["containers"]] == ["app", "istio-proxy"]


def test_both_sides_of_a_partition_get_a_helper_with_net_admin_and_nothing_more() -> None:
    sets = by_kind(objects_of("partition-outlier-ejection.yaml"), "StatefulSet")
    for service in ("frontend", "catalog"):
        spec = sets[service]["spec"]["template"]["spec"]
        chaos = spec["containers"][2]
        assert chaos["name"] == "harness-chaos"
        assert chaos["securityContext"]["capabilities"] == {"add": ["NET_ADMIN"]}
        assert "privileged" not in chaos["securityContext"]
        assert "shareProcessNamespace" not in spec  # no process fault here
        # Only the helper: the app and the sidecar keep their defaults.
        assert all("securityContext" not in c for c in spec["containers"][:2])
    inventory = sets["inventory"]["spec"]["template"]["spec"]
    assert [c["name"] for c in inventory["containers"]] == ["app", "istio-proxy"]


def test_a_toxic_edge_gets_the_run_toxiproxy_pod_and_net_admin_in_its_source_pods() -> None:
    objects = objects_of("latency-toxic-timeouts.yaml")
    (pod,) = by_kind(objects, "Pod").values()
    assert pod["metadata"]["name"] == "harness-toxiproxy"
    assert pod["metadata"]["labels"][RUN_ID_LABEL] == RUN_ID
    (container,) = pod["spec"]["containers"]
    assert container["image"] == IMAGES.toxiproxy
    # The API only on the pod's loopback (reached by port-forward), no sidecar, no token.
    assert container["args"] == ["-host", "127.0.0.1", "-port", "8474"]
    assert pod["spec"]["automountServiceAccountToken"] is False
    sets = by_kind(objects, "StatefulSet")
    frontend = sets["frontend"]["spec"]["template"]["spec"]["containers"]
    assert frontend[2]["securityContext"]["capabilities"] == {"add": ["NET_ADMIN"]}
    catalog = sets["catalog"]["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in catalog] == ["app", "istio-proxy"]  # the callee is untouched


def test_toxic_edges_are_planned_as_on_the_local_platform() -> None:
    from harness.platforms.base import InstanceInfo
    from harness.platforms.kube.toxics import plan_edges

    scenario = load_scenario(SCENARIOS / "latency-toxic-timeouts.yaml")
    instances = [
        InstanceInfo(f"catalog-{i}", "catalog", i, f"198.18.0.{i + 5}", 9090, 9080)
        for i in range(3)
    ]
    assert plan_edges(scenario, instances) == {
        ("frontend", "catalog-0"): ("frontend->catalog-0", 10000)
    }


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"source": "ingress", "target": {"service": "frontend", "instances": 1}}, "'ingress'"),
        (
            {
                "kind": "partition",
                "from": {"service": "frontend"},
                "to": {"service": "catalog", "instances": 1},
                "mode": "drop",
                "toxic": None,
                "source": None,
                "target": None,
                "latency": None,
            },
            "a partition beside a toxic",
        ),
    ],
)
def test_toxic_combinations_kube_cannot_steer_are_refused(change: dict[str, Any], why: str) -> None:
    import yaml

    raw = yaml.safe_load((SCENARIOS / "latency-toxic-timeouts.yaml").read_text())
    fault = {**raw["faults"][0], **change, "name": "second"}
    fault = {key: value for key, value in fault.items() if value is not None}
    if change.get("kind") == "partition":
        raw["faults"].append(fault)
    else:
        raw["faults"][0] = fault
    scenario = Scenario.model_validate(raw)
    assert any(why in problem for problem in unsupported_on_kube(scenario))


def test_a_hung_app_is_not_taken_out_of_the_endpoints_by_the_kubelet() -> None:
    """A startup probe gates readiness until the app serves; no readiness probe afterwards,
    so a paused app stays an endpoint (as on the local platform) and only the mesh's
    timeouts protect its callers."""
    sets = by_kind(objects_of("pause-instance-timeouts.yaml"), "StatefulSet")
    app = sets["inventory"]["spec"]["template"]["spec"]["containers"][0]
    assert app["startupProbe"]["httpGet"] == {"path": "/healthz", "port": APP_PORT}
    assert "readinessProbe" not in app and "livenessProbe" not in app


def test_without_a_kubeconfig_a_run_finds_the_cluster_harness_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.platforms.kube.platform import default_kubeconfig_for_runs

    for name in ("KUBECONFIG", "HARNESS_CLUSTER_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_kubeconfig_for_runs() is None  # nothing anywhere: the guard says so
    made = {}
    for name in ("kind-harness", "harness-local"):
        made[name] = tmp_path / "cache/harness/clusters" / name / "kubeconfig"
        made[name].parent.mkdir(parents=True)
        made[name].write_text("{}")
        assert default_kubeconfig_for_runs() == made[name].resolve()  # --local's first
    kubectl = tmp_path / "home/.kube/config"
    kubectl.parent.mkdir(parents=True)
    kubectl.write_text("{}")
    assert default_kubeconfig_for_runs() is None  # kubectl's own wins, as kubectl reads it
