"""The renderer (``harness.kube.render``) and ``harness manifests``: the scenario as the
Kubernetes + Istio objects a real cluster would hold.

Istio kinds are validated against the OpenAPI schemas of Istio's own CRDs (shared reference
data: ``<repo>/../shared/data/istio-1.30.3-crds.yaml``), made strict like ``kubectl apply``'s
field validation; core kinds against the ``kubernetes`` client's model tables. Both checks
are shown to catch a bad object, so a pass means something.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeschema import CrdSchemas, core_errors, go_duration
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import ExitCode
from harness.kube import Manifest, RenderError, RenderOptions, render, to_yaml
from harness.kube.render import DEFAULT_IMAGE, RUN_ID_LABEL, istio_problems, run_namespace
from harness.mesh.envoy import (
    Addr,
    IngressSpec,
    Upstream,
    ingress_bootstrap,
    retry_policy,
)
from harness.scenario import load_scenario
from harness.scenario.models import DestinationPolicy, Scenario

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((REPO / "scenarios").glob("*.yaml"))
CRDS_FILE = "istio-1.30.3-crds.yaml"
ISTIO_KINDS = {
    "Gateway",
    "VirtualService",
    "DestinationRule",
    "PeerAuthentication",
    "AuthorizationPolicy",
}
CORE_KINDS = {"Namespace", "ServiceAccount", "Service", "Deployment"}

BASE: dict[str, Any] = {
    "apiVersion": "harness/v1",
    "metadata": {"name": "render-test"},
    "load": {"rate": 1},
    "phases": [{"name": "only", "duration": "1s"}],
    "slos": [{"kind": "errorRate", "name": "errors", "max": "1%"}],
}


def scenario_with(mesh: dict[str, Any], **extra: Any) -> Scenario:
    return Scenario.model_validate({**BASE, "mesh": {"destinations": mesh}, **extra})


def shared_data_dirs() -> list[Path]:
    """``../shared/data`` beside the repository; from a git worktree, also beside the main
    clone (worktrees live elsewhere, the shared data sits beside the clone)."""
    dirs = [REPO.parent / "shared" / "data"]
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--path-format=absolute", "--git-common-dir"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 0:
        dirs.append(Path(done.stdout.strip()).parent.parent / "shared" / "data")
    return dirs


@pytest.fixture(scope="session")
def crds() -> CrdSchemas:
    candidates = [directory / CRDS_FILE for directory in shared_data_dirs()]
    for path in candidates:
        if path.is_file():
            return CrdSchemas.load(path)
    pytest.fail(
        f"Istio's CRDs ({CRDS_FILE}) are not where the tests look: "
        f"{', '.join(map(str, candidates))}. They are shared reference data kept beside the "
        "clone (../shared/data); put the file there."
    )


def by_kind(objects: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m.name: m for m in objects if m.kind == kind}


def spec(manifest: Manifest) -> dict[str, Any]:
    found = manifest.to_dict()["spec"]
    assert isinstance(found, dict)
    return found


# --------------------------------------------------------------------------- schemas


def test_crd_file_serves_the_kinds_the_renderer_writes(crds: CrdSchemas) -> None:
    for kind in ISTIO_KINDS:
        group = "security.istio.io" if kind.endswith(("Authentication", "Policy")) else None
        api = f"{group or 'networking.istio.io'}/v1"
        assert (api, kind) in crds.kinds(), kind


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_shipped_scenario_renders_objects_the_api_server_accepts(
    crds: CrdSchemas, path: Path
) -> None:
    objects = render(load_scenario(path), RenderOptions(run_id="20261201T120000Z-abcdef"))
    kinds = {m.kind for m in objects}
    assert kinds >= CORE_KINDS and {"Gateway", "VirtualService"} <= kinds
    for manifest in objects:
        data = manifest.to_dict()
        if manifest.kind in ISTIO_KINDS:
            assert crds.errors(data) == [], manifest.ref
        else:
            assert core_errors(data) == [], manifest.ref
    # The CEL rules on the fields we write are all ones the validator evaluates.
    assert not {rule for rule in crds.unchecked_rules if "duration" in rule}


def _every_field_policy() -> Scenario:
    return scenario_with(
        {
            "catalog": {
                "timeout": "2s",
                "retries": {
                    "attempts": 3,
                    "perTryTimeout": "500ms",
                    "retryOn": "5xx,gateway-error,503",
                    "retryIgnorePreviousHosts": False,
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
            },
            "frontend": {"timeout": "3s", "retries": {"attempts": 1}},
        }
    )


def test_every_policy_field_validates(crds: CrdSchemas) -> None:
    for manifest in render(_every_field_policy()):
        if manifest.kind in ISTIO_KINDS:
            assert crds.errors(manifest.to_dict()) == [], manifest.ref


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value

    return mutate


@pytest.mark.parametrize(
    ("kind", "name", "mutate", "expected"),
    [
        ("VirtualService", "catalog", _set("spec.http.0.retries.attemps", 3), "attemps"),
        ("VirtualService", "catalog", _set("spec.http.0.retries.attempts", "3"), "not of type"),
        ("VirtualService", "catalog", _set("spec.http.0.timeout", "0s"), "greater than 1ms"),
        ("VirtualService", "catalog", _set("spec.http.0.timeout", "2 s"), "greater than 1ms"),
        ("VirtualService", "catalog", _set("spec.timeout", "2s"), "timeout"),
        ("VirtualService", "catalog", _set("apiVersion", "networking.istio.io/v2"), "no CRD"),
        (
            "DestinationRule",
            "catalog",
            _set("spec.trafficPolicy.connectionPool.tcp.maxConnection", 1),
            "maxConnection",
        ),
        (
            "DestinationRule",
            "catalog",
            _set("spec.trafficPolicy.outlierDetection.interval", "500us"),
            "greater than 1ms",
        ),
        (
            "DestinationRule",
            "catalog",
            _set("spec.trafficPolicy.loadBalancer.simple", "FASTEST"),
            "FASTEST",
        ),
        ("Gateway", "ingress", _set("spec.servers.0.port.number", "eighty"), "not of type"),
    ],
    ids=[
        "misspelled-field",
        "string-for-integer",
        "zero-timeout",
        "not-a-go-duration",
        "field-at-wrong-level",
        "unserved-version",
        "misspelled-pool-field",
        "sub-millisecond",
        "unknown-enum",
        "gateway-port-type",
    ],
)
def test_crd_validation_catches_bad_objects(
    crds: CrdSchemas, kind: str, name: str, mutate: Mutation, expected: str
) -> None:
    # The control for the tests above: the same objects, spoiled, are refused.
    manifest = by_kind(render(_every_field_policy()), kind)[name]
    data = copy.deepcopy(manifest.to_dict())
    assert crds.errors(data) == []
    mutate(data)
    problems = crds.errors(data)
    assert problems and any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("kind", "mutate", "expected"),
    [
        ("Deployment", _set("spec.template.spec.containers.0.imagePullPolcy", "Never"), "unknown"),
        ("Deployment", _set("spec.replicas", "3"), "expected int"),
        ("Deployment", _set("spec.template.spec.containers.0.ports.0.containerPort", True), "bool"),
        ("Service", _set("spec.ports.0.nmae", "http"), "unknown"),
        ("Deployment", _set("spec.selector", None), "selector"),
    ],
    ids=["misspelled", "string-for-int", "bool-for-int", "service-port-field", "required"],
)
def test_core_validation_catches_bad_objects(kind: str, mutate: Mutation, expected: str) -> None:
    objects = render(_every_field_policy())
    manifest = next(m for m in objects if m.kind == kind)
    data = copy.deepcopy(manifest.to_dict())
    assert core_errors(data) == []
    mutate(data)
    problems = core_errors(data)
    assert problems and any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1ms", 0.001), ("1.5s", 1.5), ("2m", 120.0), ("1h1m", 3660.0), ("0", 0.0), ("2", None)],
)
def test_go_duration_parser(text: str, seconds: float | None) -> None:
    assert go_duration(text) == seconds


# --------------------------------------------------------------------------- core objects


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_core_objects_fit_together(path: Path) -> None:
    scenario = load_scenario(path)
    objects = render(scenario, RenderOptions(namespace="chaos-1", run_id="r1"))
    assert objects[0].kind == "Namespace" and objects[0].name == "chaos-1"
    assert objects[0].labels[RUN_ID_LABEL] == "r1"
    assert objects[0].labels["istio-injection"] == "enabled"
    for manifest in objects[1:]:
        data = manifest.to_dict()
        assert data["apiVersion"] and data["kind"]
        assert data["metadata"] == {  # type: ignore[comparison-overlap]
            "name": manifest.name,
            "namespace": "chaos-1",
            "labels": dict(manifest.labels),
        }
        assert manifest.labels[RUN_ID_LABEL] == "r1"
    topology = scenario.app.topology
    accounts = by_kind(objects, "ServiceAccount")
    services = by_kind(objects, "Service")
    deployments = by_kind(objects, "Deployment")
    assert set(accounts) == set(services) == set(topology.service_names)
    # One Deployment per version of each service (one, labelled v1, without versions).
    versions: dict[str, list[str]] = {}
    replicas: dict[str, int] = {}
    for deployment in deployments.values():
        service = deployment.labels["app"]
        body = spec(deployment)
        versions.setdefault(service, []).append(body["template"]["metadata"]["labels"]["version"])
        replicas[service] = replicas.get(service, 0) + body["replicas"]
    assert set(versions) == set(topology.service_names)
    for service in topology.service_names:
        declared = topology.service(service).variants
        assert versions[service] == [variant.version for variant in declared]
        assert replicas[service] == scenario.app.replicas_of(service)
    for deployment in deployments.values():
        name = deployment.labels["app"]
        body = spec(deployment)
        pod = body["template"]
        # The Deployment's selector and the Service's selector both pick its pods.
        assert body["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert spec(services[name])["selector"].items() <= pod["metadata"]["labels"].items()
        assert pod["spec"]["serviceAccountName"] in accounts
        (container,) = pod["spec"]["containers"]
        assert container["image"] == DEFAULT_IMAGE
        (port,) = spec(services[name])["ports"]
        assert (port["name"], port["port"]) == ("http", 8080)  # Istio: protocol by port name
        assert port["targetPort"] in {p["name"] for p in container["ports"]}


def test_deployment_runs_the_same_sample_app() -> None:
    scenario = scenario_with(
        {}, app={"serviceTime": {"catalog": "7ms"}, "replicas": {"catalog": 4}}
    )
    deployment = by_kind(render(scenario, RenderOptions(image="reg.local/app:1")), "Deployment")
    body = spec(deployment["catalog"])
    (container,) = body["template"]["spec"]["containers"]
    assert body["replicas"] == 4
    assert container["image"] == "reg.local/app:1"
    assert container["command"] == ["python3", "-m", "harness.app.service"]
    args = container["args"]
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    assert pairs["--service"] == "catalog"
    assert pairs["--service-time"] == "7ms"
    assert pairs["--calls"] == "inventory"
    assert pairs["--listen"] == "0.0.0.0:8080"
    assert pairs["--instance"] == "$(POD_NAME)"
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in (
        container["env"]
    )
    frontend = spec(deployment["frontend"])["template"]["spec"]["containers"][0]["args"]
    assert [frontend[i + 1] for i, a in enumerate(frontend) if a == "--calls"] == [
        "catalog",
        "pricing",
    ]
    # The app parses exactly these arguments (PodName stands in for Kubernetes' expansion).
    from harness.app.service import parse_args

    config = parse_args([a.replace("$(POD_NAME)", "catalog-7d9f") for a in args])
    assert (config.service, config.instance, config.service_time) == (
        "catalog",
        "catalog-7d9f",
        0.007,
    )


# --------------------------------------------------------------------------- mesh policy


def test_virtual_service_carries_timeout_and_retries_exactly() -> None:
    objects = render(_every_field_policy())
    vs = spec(by_kind(objects, "VirtualService")["catalog"])
    assert "gateways" not in vs  # bound to the sidecars only
    assert vs["hosts"] == ["catalog"]
    (route,) = vs["http"]
    assert route["route"] == [{"destination": {"host": "catalog", "port": {"number": 8080}}}]
    assert route["timeout"] == "2s"
    assert route["retries"] == {
        "attempts": 3,
        "perTryTimeout": "500ms",
        "retryOn": "5xx,gateway-error,503",
        "retryIgnorePreviousHosts": False,
    }


def test_omitted_fields_stay_omitted_so_istio_defaults_apply() -> None:
    objects = render(
        scenario_with(
            {
                "catalog": {"timeout": "1s"},
                "pricing": {"retries": {"attempts": 2}},
                "inventory": {"loadBalancer": {"simple": "RANDOM"}},
            }
        )
    )
    services = by_kind(objects, "VirtualService")
    (catalog,) = spec(services["catalog"])["http"]
    assert "retries" not in catalog  # Istio's default retry policy, not one of ours
    (pricing,) = spec(services["pricing"])["http"]
    assert pricing["retries"] == {"attempts": 2} and "timeout" not in pricing
    assert "inventory" not in services  # no VirtualService fields: no VirtualService
    rules = by_kind(objects, "DestinationRule")
    assert set(rules) == {"inventory"}
    assert spec(rules["inventory"]) == {
        "host": "inventory",
        "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}},
    }


def test_destination_rule_carries_pool_outlier_and_balancer() -> None:
    rule = spec(by_kind(render(_every_field_policy()), "DestinationRule")["catalog"])
    assert rule == {
        "host": "catalog",
        "trafficPolicy": {
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
                "maxEjectionPercent": 100,
                "minHealthPercent": 50,
                "interval": "1s",
                "baseEjectionTime": "30s",
            },
            "loadBalancer": {"simple": "ROUND_ROBIN"},
        },
    }


def test_ingress_gateway_route_gets_the_entry_services_policy() -> None:
    objects = render(_every_field_policy(), RenderOptions(gateway_selector={"istio": "gw"}))
    gateway = spec(by_kind(objects, "Gateway")["ingress"])
    assert gateway["selector"] == {"istio": "gw"}
    ingress = spec(by_kind(objects, "VirtualService")["ingress"])
    assert ingress["gateways"] == ["ingress"] and ingress["hosts"] == ["*"]
    (route,) = ingress["http"]
    assert route["route"][0]["destination"]["host"] == "frontend"
    assert (route["timeout"], route["retries"]) == ("3s", {"attempts": 1})
    # No policy for the entry service: a bare route, so the gateway gets Istio's defaults.
    bare = spec(by_kind(render(scenario_with({})), "VirtualService")["ingress"])["http"][0]
    assert set(bare) == {"name", "route"}


@pytest.mark.parametrize(
    ("policy", "absent"),
    [
        ({"timeout": "0s"}, "timeout"),
        # perTryTimeout and connectTimeout of 0s are refused by the scenario model itself
        # (tests/test_hardening.py): they can never reach the renderer.
    ],
)
def test_zero_durations_render_as_istio_defaults(
    crds: CrdSchemas, policy: dict[str, Any], absent: str
) -> None:
    # Istio refuses 0s; left out, Istio's default (no timeout / the mesh's 10s connect
    # timeout) is what 0s means to Envoy, and what --mesh envoy programs.
    objects = render(scenario_with({"catalog": policy}))
    text = to_yaml(objects)
    assert absent not in text
    for manifest in objects:
        if manifest.kind in ISTIO_KINDS:
            assert crds.errors(manifest.to_dict()) == [], manifest.ref


@pytest.mark.parametrize(
    ("policy", "field", "message"),
    [
        ({"timeout": "500us"}, "catalog.timeout", "under 1ms"),
        ({"timeout": "1500us"}, "catalog.timeout", "whole milliseconds"),
        ({"retries": {"attempts": 1, "perTryTimeout": "10us"}}, "perTryTimeout", "under 1ms"),
        ({"retries": {"attempts": 0, "retryOn": "5xx"}}, "catalog.retries", "attempts: 0"),
        ({"retries": {"attempts": 1, "retryOn": "5xx,teapot"}}, "retryOn", "'teapot'"),
        ({"retries": {"attempts": 1, "retryOn": "5xx, reset"}}, "retryOn", "' reset'"),
        ({"outlierDetection": {"interval": "500us"}}, "interval", "under 1ms"),
        ({"outlierDetection": {"baseEjectionTime": "500us"}}, "baseEjectionTime", "under 1ms"),
    ],
)
def test_what_istio_refuses_is_refused_with_the_field(
    policy: dict[str, Any], field: str, message: str
) -> None:
    scenario = scenario_with({"catalog": policy})
    with pytest.raises(RenderError) as caught:
        render(scenario)
    (problem,) = caught.value.problems
    assert problem.startswith("mesh.destinations.") and field in problem and message in problem
    assert next(".".join(map(str, p)) for p, _ in istio_problems(scenario)) in problem


def test_retry_on_status_codes_and_every_istio_condition_are_accepted() -> None:
    conditions = "5xx,gateway-error,reset,reset-before-request,connect-failure,503,429"
    assert (
        istio_problems(
            scenario_with({"catalog": {"retries": {"attempts": 1, "retryOn": conditions}}})
        )
        == []
    )


def test_bad_options_are_refused() -> None:
    with pytest.raises(RenderError, match="namespace 'Bad_NS'"):
        render(scenario_with({}), RenderOptions(namespace="Bad_NS"))
    with pytest.raises(RenderError, match="run id"):
        render(scenario_with({}), RenderOptions(run_id="x" * 64))
    with pytest.raises(RenderError, match="image"):
        render(scenario_with({}), RenderOptions(image="two words"))


def test_a_run_gets_its_own_namespace_labelled_with_its_id() -> None:
    run_id = "20261201T153253Z-abc123"
    objects = render(scenario_with({}), RenderOptions.for_run(run_id))
    assert {m.namespace for m in objects[1:]} == {objects[0].name}
    assert objects[0].name == run_namespace(run_id) == "harness-20261201t153253z-abc123"
    assert {m.labels[RUN_ID_LABEL] for m in objects} == {run_id}


def test_no_security_objects_until_the_scenario_has_them() -> None:
    kinds = {m.kind for m in render(_every_field_policy())}
    assert not kinds & {"PeerAuthentication", "AuthorizationPolicy"}


# --------------------------------------------------------------------------- agreement with envoy


def _policy_from_objects(objects: list[Manifest], service: str, vs_name: str) -> DestinationPolicy:
    """The destination policy as Istio reads it back from the rendered objects."""
    fields: dict[str, Any] = {}
    services = by_kind(objects, "VirtualService")
    if vs_name in services:
        # Every route of a destination carries its timeout and retries (harness.kube.traffic).
        route = spec(services[vs_name])["http"][0]
        fields.update({k: v for k, v in route.items() if k in {"timeout", "retries"}})
    rules = by_kind(objects, "DestinationRule")
    if service in rules:
        fields.update(spec(rules[service]).get("trafficPolicy", {}))
    return DestinationPolicy.model_validate(fields)


def _envoy_view(policy: DestinationPolicy | None) -> dict[str, Any]:
    """What --mesh envoy programs for a destination policy (route + cluster of the ingress)."""
    up = Upstream("catalog", (Addr("127.0.0.2", 8080),), policy)
    spec_ = IngressSpec(Addr("127.0.0.1", 8000), "/tmp/a.sock", "/tmp/a.log", up)
    bootstrap = ingress_bootstrap(spec_)
    listener = bootstrap["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return {
        "route": hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"],
        "cluster": bootstrap["static_resources"]["clusters"][0],
        "retry": retry_policy(policy.retries if policy else None),
    }


@pytest.mark.parametrize(
    "scenario",
    [*(load_scenario(p) for p in SCENARIOS), _every_field_policy()],
    ids=[*(p.stem for p in SCENARIOS), "every-field"],
)
def test_rendered_objects_and_envoy_translation_agree(scenario: Scenario) -> None:
    # Read back from the objects as Istio reads them, each destination's policy programs the
    # same Envoy route and cluster as the scenario's own: the renderer drops nothing the
    # translation uses, and both give the gateway the entry service's policy.
    objects = render(scenario)
    entry = scenario.app.topology.entry
    for service in scenario.app.topology.service_names:
        declared = scenario.mesh.destinations.get(service)
        names = ["ingress", service] if service == entry else [service]
        for vs_name in names:
            found = _envoy_view(_policy_from_objects(objects, service, vs_name))
            assert found == _envoy_view(declared), (service, vs_name)


# --------------------------------------------------------------------------- YAML and CLI


def test_yaml_is_the_objects_in_apply_order() -> None:
    objects = render(_every_field_policy())
    documents = list(yaml.safe_load_all(to_yaml(objects)))
    assert documents == [m.to_dict() for m in objects]
    order = [d["kind"] for d in documents]
    assert order[0] == "Namespace"
    assert order.index("ServiceAccount") < order.index("Deployment")
    assert order.index("Gateway") < order.index("VirtualService")


def test_cli_prints_manifests_for_kubectl(tmp_path: Path) -> None:
    path = REPO / "scenarios" / "retries-mask-transient-errors.yaml"
    result = CliRunner().invoke(
        app, ["manifests", str(path), "--namespace", "chaos", "--image", "app:2", "--run-id", "r9"]
    )
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.stdout))
    assert documents == [
        m.to_dict()
        for m in render(
            load_scenario(path), RenderOptions(namespace="chaos", image="app:2", run_id="r9")
        )
    ]


def test_cli_refuses_bad_input_with_exit_2(tmp_path: Path) -> None:
    missing = CliRunner().invoke(app, ["manifests", str(tmp_path / "absent.yaml")])
    assert missing.exit_code == ExitCode.ERROR
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({**BASE, "mesh": {"destinations": {"catalog": {"timeout": "100us"}}}})
    )
    refused = CliRunner().invoke(app, ["manifests", str(bad)])
    assert refused.exit_code == ExitCode.ERROR
    assert "mesh.destinations.catalog.timeout" in refused.stderr
    assert refused.stdout == ""  # nothing half-written for kubectl to apply
    name = CliRunner().invoke(app, ["manifests", str(bad), "--namespace", "UPPER"])
    assert name.exit_code == ExitCode.ERROR
