"""Declared topologies: the app section's model and checks, the shop preset, and the
platforms' view of them (instance plan, app arguments, Kubernetes Deployments)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.app.topology import ServiceTimeSpec
from harness.errors import ScenarioError
from harness.kube.render import RenderOptions, render
from harness.scenario import load_scenario_text, scenario_json_schema
from harness.scenario.app import App

# Line numbers in the expectations below refer to this text (line 1 is apiVersion).
DECLARED = """\
apiVersion: harness/v1
metadata: {name: fan-out}
app:
  entry: gateway
  services:
    - name: gateway
      calls: [orders, {service: search, probability: 0.5}]
    - name: orders
      serviceTime: {distribution: lognormal, p50: 4ms, p99: 30ms}
      calls: [stock, payments]
      callMode: sequential
    - name: search
      serviceTime: {distribution: exponential, mean: 2ms}
      calls: [stock]
    - name: stock
      errorRate: 1%
      responseSize: 512
      versions:
        - {name: v1, replicas: 2}
        - {name: v2, serviceTime: {distribution: fixed, value: 9ms}, errorRate: 0.2}
    - name: payments
      serviceTime: 3ms
load: {rate: 10}
phases: [{name: steady, duration: 5s}]
slos: [{name: errors, kind: errorRate, max: 1%}]
"""


def edited(*edits: tuple[str, str]) -> str:
    text = DECLARED
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def problems_of(text: str) -> list[str]:
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(text, source="t.yaml")
    return caught.value.problems


# --------------------------------------------------------------------------- the model


def test_declared_topology_loads_with_calls_distributions_and_versions() -> None:
    topology = load_scenario_text(DECLARED).app.topology

    assert topology.entry == "gateway"
    assert topology.service_names == ("gateway", "orders", "search", "stock", "payments")
    gateway = topology.service("gateway")
    assert gateway.calls == ("orders", "search")
    assert [call.probability for call in gateway.outbound] == [1.0, 0.5]
    orders = topology.service("orders")
    assert orders.call_mode == "sequential"
    assert orders.variants[0].service_time == ServiceTimeSpec("lognormal", 0.004, p99=0.03)
    stock = topology.service("stock")
    assert stock.replicas == 3
    assert [stock.instance_name(i) for i in range(3)] == ["stock-v1-0", "stock-v1-1", "stock-v2-0"]
    v1, v2 = stock.variant_of(1), stock.variant_of(2)
    assert (v1.version, v1.error_rate, v1.service_time.value) == ("v1", 0.01, 0.001)
    assert (v2.version, v2.error_rate) == ("v2", 0.2)
    assert v2.service_time == ServiceTimeSpec("fixed", 0.009)
    assert topology.callers_of("stock") == ("orders", "search")
    assert topology.service("payments").variants[0].service_time == ServiceTimeSpec(
        "uniform", 0.003, 0.5
    )


def test_shop_preset_is_the_shop_of_before() -> None:
    """The shipped scenarios' SLOs rest on these numbers: the preset must keep them."""
    shop = App(name="shop").topology
    assert App().topology == shop  # no app section: the shop

    assert shop.entry == "frontend"
    assert [(s.name, s.calls, s.replicas) for s in shop.services] == [
        ("frontend", ("catalog", "pricing"), 1),
        ("catalog", ("inventory",), 3),
        ("inventory", (), 2),
        ("pricing", (), 1),
    ]
    assert [s.variants[0].service_time for s in shop.services] == [
        ServiceTimeSpec("uniform", value, 0.5) for value in (0.002, 0.003, 0.002, 0.001)
    ]
    # The app processes are told exactly what they were told before declared topologies.
    assert shop.service("frontend").app_arguments(0) == [
        "--service-time", "2ms", "--calls", "catalog", "--calls", "pricing",
    ]  # fmt: skip
    assert [shop.service("catalog").instance_name(i) for i in range(3)] == [
        "catalog-0", "catalog-1", "catalog-2",
    ]  # fmt: skip


def test_overrides_apply_to_the_preset() -> None:
    app = App(name="shop", replicas={"catalog": 5}, service_time={"pricing": "10ms"})

    assert app.replicas_of("catalog") == 5
    assert app.topology.service("pricing").variants[0].service_time.value == 0.01


def test_versioned_service_arguments_name_the_version_and_its_behaviour() -> None:
    stock = load_scenario_text(DECLARED).app.topology.service("stock")

    assert stock.app_arguments(2) == [
        "--service-time", "fixed:9ms", "--error-rate", "0.2", "--response-size", "512",
        "--version", "v2",
    ]  # fmt: skip
    orders = load_scenario_text(DECLARED).app.topology.service("orders")
    assert orders.app_arguments(0) == [
        "--service-time", "lognormal:4ms:30ms", "--calls", "stock", "--calls", "payments",
        "--call-mode", "sequential",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "text", ["3ms", "fixed:3ms", "exponential:2ms", "lognormal:4ms:30ms", "lognormal:1ms:1ms"]
)
def test_service_time_argument_round_trips(text: str) -> None:
    assert ServiceTimeSpec.parse(text).argument() == text


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        (
            (("calls: [stock, payments]", "calls: [stock, paymens]"),),
            "t.yaml:10:22: app.services[1].calls[1]: unknown service 'paymens'; "
            "did you mean 'payments'?",
        ),
        (
            (("calls: [stock]", "calls: [search]"),),
            "t.yaml:14:15: app.services[2].calls[0]: 'search' calls itself",
        ),
        (
            (("      responseSize: 512", "      responseSize: 512\n      calls: [orders]"),),
            "t.yaml:18:15: app.services[3].calls[0]: calls form a cycle: orders → stock → orders",
        ),
        (
            (("calls: [orders, {service: search, probability: 0.5}]", "calls: [orders]"),),
            "t.yaml:12:13: app.services[2].name: service 'search' is never called",
        ),
        (
            (("- name: payments", "- name: orders"),),
            "t.yaml:21:13: app.services[4].name: duplicate service name 'orders'",
        ),
        (
            (("p99: 30ms", "p99: 3ms"),),
            "t.yaml:9:61: app.services[1].serviceTime.p99: p99 (3ms) is below p50 (4ms)",
        ),
        (
            (("probability: 0.5", "probability: 1.5"),),
            "t.yaml:7:54: app.services[0].calls[1].probability: expected less than or equal to 1",
        ),
        (
            (("      responseSize: 512", "      responseSize: 512\n      replicas: 2"),),
            "t.yaml:18:17: app.services[3].replicas: with versions, replicas are given per version",
        ),
        (
            (("  entry: gateway", "  entry: gateaway"),),
            "t.yaml:4:10: app.entry: unknown service 'gateaway'; did you mean 'gateway'?",
        ),
        (
            (("  entry: gateway", "  name: shop"),),
            "t.yaml:4:9: app.name: give either a preset name or services, not both",
        ),
        (
            (("{distribution: exponential, mean: 2ms}", "{distribution: exponential, p50: 2ms}"),),
            "t.yaml:13:20: app.services[2].serviceTime: a exponential service time needs mean; "
            "p50 not used",
        ),
        (
            (("- {name: v1, replicas: 2}", "- {name: v2, replicas: 2}"),),
            "t.yaml:20:18: app.services[3].versions[1].name: duplicate version 'v2'",
        ),
    ],
)
def test_topology_problems_are_located(edits: tuple[tuple[str, str], ...], expected: str) -> None:
    problems = problems_of(edited(*edits))

    assert any(problem.startswith(expected) for problem in problems), problems


def test_every_graph_problem_is_reported_at_once() -> None:
    text = edited(
        ("calls: [stock, payments]", "calls: [stock, nowhere]"),
        ("calls: [stock]", "calls: [search]"),
    )

    problems = problems_of(text)

    assert len(problems) == 2, problems


def test_unknown_service_in_a_fault_names_the_declared_services() -> None:
    text = DECLARED + ("faults:\n  - {kind: kill, phase: steady, target: {service: frontend}}\n")

    (problem,) = problems_of(text)

    assert problem.startswith("t.yaml:27:51: faults[0].target.service: unknown service")
    assert "gateway" in problem


def test_the_json_schema_accepts_a_declared_topology() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(scenario_json_schema())

    assert list(validator.iter_errors(yaml.safe_load(DECLARED))) == []
    bad = yaml.safe_load(edited(("callMode: sequential", "callMode: serial")))
    assert len(list(validator.iter_errors(bad))) == 1


@st.composite
def acyclic_apps(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Services s0..sN-1 where every call goes forward and each service but s0 has a caller:
    a DAG the entry s0 reaches whole."""
    n = draw(st.integers(2, 9))
    calls: list[set[int]] = [set() for _ in range(n)]
    for j in range(1, n):
        calls[draw(st.integers(0, j - 1))].add(j)
        for i in draw(st.sets(st.integers(0, j - 1), max_size=2)):
            calls[i].add(j)
    return [{"name": f"s{i}", "calls": [f"s{j}" for j in sorted(calls[i])]} for i in range(n)]


@settings(max_examples=40, deadline=None)
@given(acyclic_apps(), st.data())
def test_every_dag_the_entry_reaches_is_accepted_and_a_call_back_to_it_is_a_cycle(
    services: list[dict[str, Any]], data: st.DataObject
) -> None:
    assert App.model_validate({"services": services}).problems() == []

    back = data.draw(st.integers(1, len(services) - 1))
    services[back]["calls"].append("s0")
    problems = App.model_validate({"services": services}).problems()

    assert [loc for loc, _ in problems] == [
        ("app", "services", back, "calls", len(services[back]["calls"]) - 1, "service")
    ]
    assert "cycle" in problems[0][1] and problems[0][1].count("s0") == 2


# --------------------------------------------------------------------------- Kubernetes


def _deployments(manifests: list[Any]) -> dict[str, dict[str, Any]]:
    return {m.name: m.body for m in manifests if m.kind == "Deployment"}


def test_render_writes_one_deployment_per_version_with_its_label() -> None:
    scenario = load_scenario_text(DECLARED)

    deployments = _deployments(render(scenario, RenderOptions()))

    assert set(deployments) == {"gateway", "orders", "search", "stock-v1", "stock-v2", "payments"}
    v2 = deployments["stock-v2"]["spec"]
    assert v2["replicas"] == 1
    assert v2["selector"]["matchLabels"] == {"app": "stock", "version": "v2"}
    assert v2["template"]["metadata"]["labels"]["version"] == "v2"
    args = v2["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--service-time") + 1] == "fixed:9ms"
    assert args[args.index("--error-rate") + 1] == "0.2"
    assert deployments["stock-v1"]["spec"]["replicas"] == 2
    assert deployments["gateway"]["spec"]["selector"]["matchLabels"]["version"] == "v1"
