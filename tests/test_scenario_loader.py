"""The scenario loader: strict YAML, located errors with suggestions, round trips, the schema."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.errors import ScenarioError
from harness.scenario import Scenario, load_scenario, load_scenario_text, scenario_json_schema
from harness.scenario.app import App
from harness.scenario.models import FAULT_KINDS, MAX_RATE, SLO_KINDS, LbAlgorithm

# Line numbers in the expectations below refer to this text (line 1 is apiVersion).
EXAMPLE = """\
apiVersion: harness/v1
metadata:
  name: retries-mask-transient-errors
  description: One catalog instance aborts half its requests; retries keep errors under 1%.
app:
  name: shop
  replicas: {catalog: 3, inventory: 2}
mesh:
  destinations:
    catalog:
      timeout: 2s
      retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,connect-failure"}
load:
  rate: 40
phases:
  - {name: baseline, duration: 8s}
  - {name: fault, duration: 20s}
  - {name: recovery, duration: 8s}
faults:
  - name: catalog-aborts
    kind: http
    phase: fault
    target: {service: catalog, instances: 1}
    abort: {httpStatus: 503, percentage: {value: 50}}
slos:
  - {name: e2e-error-rate, kind: errorRate, max: 1%, phases: [fault]}
  - {name: p99-latency, kind: latency, quantile: 0.99, max: 800ms}
"""


def edited(*edits: tuple[str, str]) -> str:
    """EXAMPLE with each ``old`` text (which must occur exactly once) replaced by ``new``."""
    text = EXAMPLE
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def problems_of(text: str, source: str = "example.yaml") -> list[str]:
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(text, source=source)
    assert caught.value.source == source
    return caught.value.problems


def test_example_loads_with_units_parsed() -> None:
    scenario = load_scenario_text(EXAMPLE)

    assert scenario.metadata.name == "retries-mask-transient-errors"
    retries = scenario.mesh.destinations["catalog"].retries
    assert retries is not None
    assert (retries.attempts, retries.per_try_timeout) == (3, 0.5)
    assert scenario.faults[0].abort is not None
    assert scenario.faults[0].abort.percentage.value == 50
    assert [slo.max for slo in scenario.slos] == [0.01, 0.8]
    assert scenario.duration == 36.0


def test_load_scenario_reads_a_file_and_names_it_in_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(EXAMPLE, encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(edited(("kind: http", "kind: htp")), encoding="utf-8")

    assert load_scenario(good) == load_scenario_text(EXAMPLE)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(str(bad))
    assert caught.value.problems[0].startswith(f"{bad}:21:11: faults[0].kind: ")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(
            ("      timeout: 2s", "     timeout: 2s"),
            "example.yaml:12:14: invalid YAML: mapping values are not allowed here",
            id="bad-indentation",
        ),
        pytest.param(
            ("kind: http", "kind: htp"),
            "example.yaml:21:11: faults[0].kind: unknown fault kind 'htp'; did you mean 'http'? "
            f"valid kinds: {', '.join(FAULT_KINDS)}",
            id="unknown-fault-kind",
        ),
        pytest.param(
            ("kind: latency,", "kind: latncy,"),
            "example.yaml:27:31: slos[1].kind: unknown SLO kind 'latncy'; did you mean 'latency'? "
            f"valid kinds: {', '.join(SLO_KINDS)}",
            id="unknown-slo-kind",
        ),
        pytest.param(
            ("    kind: http\n", ""),
            "example.yaml:20:5: faults[0].kind: field 'kind' is required; valid fault kinds: http",
            id="missing-kind",
        ),
        pytest.param(
            ("rate: 40", "rate: 40\n  rate: 50"),
            "example.yaml:15:3: load.rate: duplicate key 'rate' (first defined on line 14)",
            id="duplicate-key",
        ),
        pytest.param(
            ("retries: {", "retrys: {"),
            "example.yaml:12:7: mesh.destinations.catalog.retrys: unknown field 'retrys'; "
            "did you mean 'retries'? valid fields: timeout, retries, connectionPool, "
            "outlierDetection, loadBalancer",
            id="unknown-field",
        ),
        pytest.param(
            ("perTryTimeout", "perTryTimout"),
            "example.yaml:12:30: mesh.destinations.catalog.retries.perTryTimout: unknown field "
            "'perTryTimout'; did you mean 'perTryTimeout'?",
            id="unknown-nested-field",
        ),
        pytest.param(
            ("phase: fault", "phase: faulty"),
            "example.yaml:22:12: faults[0].phase: unknown phase 'faulty'; "
            "valid: baseline, fault, recovery",
            id="unknown-phase-reference",
        ),
        pytest.param(
            ("catalog: 3,", "catalgo: 3,"),
            "example.yaml:7:14: app.replicas.catalgo: unknown service 'catalgo'; valid: catalog,",
            id="unknown-service-key",
        ),
        pytest.param(
            ("duration: 20s", "duration: 20 sec"),
            "example.yaml:17:29: phases[1].duration: '20 sec' is not a duration: write a number "
            "and a unit",
            id="bad-duration",
        ),
        pytest.param(
            ("duration: 20s", "duration: 20"),
            "example.yaml:17:29: phases[1].duration: a duration is a string with a unit",
            id="duration-without-unit",
        ),
        pytest.param(
            ("httpStatus: 503", "httpStatus: 700"),
            "example.yaml:24:25: faults[0].abort.httpStatus: expected less than or equal to 599 "
            "(found 700)",
            id="out-of-range",
        ),
        pytest.param(
            ("  name: retries-mask-transient-errors\n", ""),
            "example.yaml:3:3: metadata.name: missing required field 'name'",
            id="missing-field",
        ),
        pytest.param(
            ("name: shop", "name: !foo shop"),
            "example.yaml:6:9: app.name: YAML tags are not allowed (found '!foo')",
            id="local-tag",
        ),
        pytest.param(
            ("phase: fault", "phase: &p !!binary ZmF1bHQ="),
            "example.yaml:22:15: faults[0].phase: YAML tags are not allowed (found '!!binary')",
            id="binary-tag-after-anchor",
        ),
    ],
)
def test_bad_scenario_is_rejected_at_its_location(edit: tuple[str, str], expected: str) -> None:
    problems = problems_of(edited(edit))

    assert len(problems) == 1, problems
    assert problems[0].startswith(expected)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("field", "example.yaml:22:12: faults[0].phase: YAML tags are not allowed"),
        ("document", "example.yaml:1:1: YAML tags are not allowed"),
    ],
)
def test_python_tag_is_rejected_without_running_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, expected: str
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(os, "system", calls.append)
    marker = tmp_path / "executed"
    tagged = f'!!python/object/apply:os.system ["touch {marker}"]'
    text = edited(("phase: fault", f"phase: {tagged}")) if where == "field" else tagged + "\n"

    problems = problems_of(text)

    assert problems == [f"{expected} (found '!!python/object/apply:os.system')"]
    assert calls == []
    assert not marker.exists()


def test_every_problem_is_reported_in_file_order() -> None:
    text = edited(
        ("kind: http", "kind: htp"),
        ("retries: {", "retrys: {"),
        ("duration: 20s", "duration: 20 sec"),
        ("rate: 40", "rate: fast"),
    )

    problems = problems_of(text)

    assert [problem.split(": ")[0:2] for problem in problems] == [
        ["example.yaml:12:7", "mesh.destinations.catalog.retrys"],
        ["example.yaml:14:9", "load.rate"],
        ["example.yaml:17:29", "phases[1].duration"],
        ["example.yaml:21:11", "faults[0].kind"],
    ]


def test_every_reference_problem_is_reported() -> None:
    text = edited(("phase: fault", "phase: faulty"), ("phases: [fault]", "phases: [fault, after]"))

    assert problems_of(text) == [
        "example.yaml:22:12: faults[0].phase: unknown phase 'faulty'; "
        "valid: baseline, fault, recovery",
        "example.yaml:26:70: slos[0].phases[1]: unknown phase 'after'; "
        "valid: baseline, fault, recovery",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "example.yaml:1:1: the file is empty"),
        ("# only a comment\n", "example.yaml:1:1: the file is empty"),
        ("- apiVersion: harness/v1\n", "example.yaml:1:1: a scenario is a mapping of fields"),
        ("just words\n", "example.yaml:1:1: a scenario is a mapping of fields"),
        ("a: 1\n---\nb: 2\n", "example.yaml:2:1: invalid YAML: found another document"),
    ],
)
def test_document_that_is_not_one_mapping_is_rejected(text: str, expected: str) -> None:
    problems = problems_of(text)

    assert len(problems) == 1
    assert problems[0].startswith(expected)


# --------------------------------------------------------------------------- round trip

SHOP = App(name="shop").topology
SERVICES = list(SHOP.service_names)
names = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?", fullmatch=True)
# Durations whose text form survives format_duration → parse_duration exactly.
durations = st.one_of(
    st.integers(1, 999).map(lambda n: f"{n}ms"),
    st.integers(1, 3600).map(lambda n: f"{n}s"),
    st.integers(1, 60).map(lambda n: f"{n}m"),
)
fractions = st.floats(0, 1)
# HTTP faults are switched through Envoy's runtime, which takes whole percentages.
percentages = st.builds(lambda value: {"value": value}, st.integers(0, 100))


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def without_none(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


destination_policies = st.builds(
    without_none,
    timeout=optional(durations),
    retries=optional(
        st.builds(
            without_none,
            attempts=st.integers(0, 20),
            perTryTimeout=optional(durations),
            retryOn=optional(st.sampled_from(["5xx", "connect-failure,503", "reset"])),
            retryIgnorePreviousHosts=optional(st.booleans()),
        )
    ),
    connectionPool=optional(
        st.builds(
            lambda tcp, http: {"tcp": tcp, "http": http},
            st.builds(without_none, maxConnections=optional(st.integers(1, 1000))),
            st.builds(without_none, http1MaxPendingRequests=optional(st.integers(1, 1000))),
        )
    ),
    outlierDetection=optional(
        st.builds(
            without_none,
            consecutive5xxErrors=optional(st.integers(0, 10)),
            interval=optional(durations),
            maxEjectionPercent=optional(st.integers(0, 100)),
        )
    ),
    loadBalancer=optional(
        st.builds(lambda simple: {"simple": simple}, st.sampled_from(LbAlgorithm))
    ),
)


@st.composite
def http_faults(draw: st.DrawFn, phase_names: list[str], name: str) -> dict[str, Any]:
    service = draw(st.sampled_from(SERVICES))
    instances = st.integers(1, 5) | st.integers(1, 100).map(lambda p: f"{p}%")
    abort = st.builds(
        lambda status, share: {"httpStatus": status, "percentage": share},
        st.integers(200, 599),
        percentages,
    )
    delay = st.builds(
        lambda fixed, share: {"fixedDelay": fixed, "percentage": share}, durations, percentages
    )
    actions = draw(
        st.sampled_from([("abort",), ("delay",), ("abort", "delay")]).flatmap(
            lambda keys: st.fixed_dictionaries({k: abort if k == "abort" else delay for k in keys})
        )
    )
    callers = SHOP.callers_of(service)
    return without_none(
        kind="http",
        name=name,
        phase=draw(st.sampled_from(phase_names)),
        target=without_none(service=service, instances=draw(optional(instances))),
        source=draw(optional(st.sampled_from(callers))) if callers else None,
        **actions,
    )


@st.composite
def slos(draw: st.DrawFn, phase_names: list[str], name: str) -> dict[str, Any]:
    phases = draw(st.lists(st.sampled_from(phase_names), max_size=3))
    confidence = st.floats(0.5, 1, exclude_min=True, exclude_max=True)
    if draw(st.booleans()):
        return {"kind": "errorRate", "name": name, "max": draw(fractions), "phases": phases}
    quantile = draw(st.floats(0, 1, exclude_min=True, exclude_max=True))
    return {
        "kind": "latency",
        "name": name,
        "quantile": quantile,
        "max": draw(durations),
        "phases": phases,
        "confidence": draw(confidence),
    }


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    phase_names = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    fault_names = draw(st.lists(names, max_size=3, unique=True))
    slo_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    some_services = st.lists(st.sampled_from(SERVICES), unique=True, max_size=len(SERVICES))
    data = {
        "metadata": {
            "name": draw(names),
            "description": draw(st.text(max_size=40)),
            "labels": draw(st.dictionaries(st.text(max_size=10), st.text(max_size=10))),
        },
        "app": {
            "replicas": {s: draw(st.integers(1, 10)) for s in draw(some_services)},
            "serviceTime": {s: draw(durations) for s in draw(some_services)},
        },
        "mesh": {"destinations": {s: draw(destination_policies) for s in draw(some_services)}},
        "load": without_none(
            rate=draw(st.floats(0, MAX_RATE, exclude_min=True)),
            users=draw(optional(st.integers(1, 500))),
            requestTimeout=draw(durations),
        ),
        "phases": [{"name": name, "duration": draw(durations)} for name in phase_names],
        "faults": [draw(http_faults(phase_names, name)) for name in fault_names],
        "slos": [draw(slos(phase_names, name)) for name in slo_names],
    }
    return Scenario.model_validate(data)


def dumped(scenario: Scenario) -> dict[str, Any]:
    return scenario.model_dump(mode="json", by_alias=True, exclude_none=True)


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_dumped_scenario_loads_back_equal(scenario: Scenario) -> None:
    text = yaml.safe_dump(dumped(scenario), sort_keys=False)

    assert load_scenario_text(text) == scenario


# --------------------------------------------------------------------------- schema


def test_schema_names_kinds_and_yaml_fields() -> None:
    schema = scenario_json_schema()

    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"]
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"apiVersion", "metadata", "load", "phases", "slos"}
    fault_union = schema["properties"]["faults"]["items"]["discriminator"]
    assert sorted(fault_union["mapping"]) == sorted(FAULT_KINDS)
    slo_union = schema["properties"]["slos"]["items"]["discriminator"]
    assert sorted(slo_union["mapping"]) == sorted(SLO_KINDS)
    retries = schema["$defs"]["Retries"]["properties"]
    assert {"perTryTimeout", "retryOn"} <= set(retries)
    assert "per_try_timeout" not in retries
    assert "http1MaxPendingRequests" in schema["$defs"]["HttpSettings"]["properties"]


@pytest.fixture(scope="module")
def schema_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    schema = scenario_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_accepts_the_example_and_rejects_unknown_kinds(schema_validator: Any) -> None:
    good = yaml.safe_load(EXAMPLE)
    bad = yaml.safe_load(edited(("kind: http", "kind: htp"), ("retries: {", "retrys: {")))

    assert list(schema_validator.iter_errors(good)) == []
    assert len(list(schema_validator.iter_errors(bad))) == 2


@settings(max_examples=30, deadline=None)
@given(scenarios())
def test_schema_accepts_every_valid_scenario(schema_validator: Any, scenario: Scenario) -> None:
    assert list(schema_validator.iter_errors(dumped(scenario))) == []
