"""Traffic distribution (issue 12): subsets, weighted routes, matches, mirrors.

Fast tests of our own logic (the model's located checks, the Istio objects, the Envoy
translation, the per-subset counters and the ``trafficShare`` verdict), then the 90/10
split measured by real Envoys (``--mesh envoy``) and by istiod-programmed ones
(``--mesh istio``). The routing fields are also compared with a real istiod's in
tests/test_fidelity.py (the ``every-route`` case and every shipped scenario).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeAdmin
from journals import T0, new_journal, phase_windows

from harness.errors import ExitCode, ScenarioError
from harness.faults.traffic import PolicyWeights, RuntimeWeights, TrafficShiftInjector
from harness.journal import EdgeStats, Journal, PolicyPush, Verdict
from harness.kube import render
from harness.mesh.envoy import Addr, SidecarSpec, Upstream, sidecar_bootstrap
from harness.mesh.routing import weight_key
from harness.mesh.stats import edge_stats, subset_of_key
from harness.observe.access_logs import analyze_access_logs
from harness.platforms.local.istio import unsupported_faults
from harness.platforms.local.platform import Mesh
from harness.pytest_plugin import ScenarioOutcome
from harness.report import render_report
from harness.scenario import load_scenario, load_scenario_text
from harness.scenario.models import Scenario, SubsetLatencySlo, TrafficShiftFault
from harness.slo.judge import judge_slos
from harness.slo.share import evaluate_subset_error_rate, evaluate_traffic_share

REPO = Path(__file__).resolve().parent.parent
SPLIT = REPO / "scenarios" / "weighted-split-90-10.yaml"

BASE = """\
apiVersion: harness/v1
metadata: {name: routes}
app:
  entry: frontend
  services:
    - {name: frontend, serviceTime: 1ms, calls: [reviews]}
    - name: reviews
      serviceTime: 1ms
      versions: [{name: v1}, {name: v2}]
mesh:
  destinations:
    reviews:
      subsets:
        - {name: stable, labels: {version: v1}}
        - {name: canary, labels: {version: v3}}
      http:
        - route: [{subset: stable, weight: 90}, {subset: beta, weight: 10}]
          mirror: {host: ratings}
load: {rate: 1}
phases: [{name: only, duration: 1s}]
slos:
  - name: share
    kind: trafficShare
    edge: {from: frontend, to: reviews}
    subset: gamma
    share: 10%
"""


def test_routing_mistakes_are_located_with_what_is_valid() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(BASE, source="routes.yaml")
    assert caught.value.problems == [
        "routes.yaml:15:34: mesh.destinations.reviews.subsets[1].labels: selects no pod of "
        "'reviews'; its versions' labels: app=reviews version=v1, app=reviews version=v2",
        "routes.yaml:17:58: mesh.destinations.reviews.http[0].route[1].subset: unknown subset "
        "'beta' of 'reviews'; valid: canary, stable",
        "routes.yaml:18:26: mesh.destinations.reviews.http[0].mirror.host: unknown service "
        "'ratings'; valid: frontend, reviews",
        "routes.yaml:25:13: slos[0].subset: unknown subset 'gamma' of 'reviews'; valid: "
        "canary, stable",
    ]


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("[{subset: stable, weight: 80}, {subset: canary, weight: 10}]", "must sum to 100"),
        ("[{subset: stable, weight: 90}, {subset: canary}]", "must sum to 100"),
        ("[{subset: stable, weight: 50}]", "weight 100 or none"),
    ],
)
def test_weights_must_be_percents_summing_to_100(route: str, expected: str) -> None:
    text = BASE.replace(
        "{name: canary, labels: {version: v3}}", "{name: canary, labels: {version: v2}}"
    )
    old = "[{subset: stable, weight: 90}, {subset: beta, weight: 10}]"
    text = text.replace(old, route).replace("mirror: {host: ratings}", "mirror: {host: frontend}")
    text = text.replace("subset: gamma", "subset: canary")
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(text, source="routes.yaml")
    assert any(expected in p for p in caught.value.problems), caught.value.problems


def test_header_names_and_prefixes_istio_and_envoy_refuse() -> None:
    good = BASE.replace("version: v3", "version: v2").replace("beta", "canary")
    good = good.replace("mirror: {host: ratings}", "mirror: {host: frontend}").replace(
        "gamma", "canary"
    )
    load_scenario_text(good)
    for match, expected in (
        ("{headers: {X-Canary: {exact: '1'}}}", "not a header name"),
        ("{headers: {x-canary: {prefix: ''}}}", "at least 1 character"),
        ("{headers: {x-canary: {exact: '1', prefix: '1'}}}", "exactly one of exact or prefix"),
        ("{uri: {prefix: beta}}", "should match pattern"),
    ):
        text = good.replace("        - route:", f"        - match: [{match}]\n          route:")
        with pytest.raises(ScenarioError) as caught:
            load_scenario_text(text)
        assert any(expected in p for p in caught.value.problems), (match, caught.value.problems)


def _scenario() -> Scenario:
    return load_scenario(SPLIT)


def _with_routes(http: list[dict[str, Any]]) -> Scenario:
    data = _scenario().model_dump(by_alias=True, mode="json", exclude_defaults=True)
    data["mesh"]["destinations"]["reviews"]["http"] = http
    return Scenario.model_validate(data)


def test_rendered_as_istio_subsets_and_weighted_routes() -> None:
    objects = {(m.kind, m.name): m.to_dict() for m in render(_scenario())}
    rule = objects[("DestinationRule", "reviews")]["spec"]
    assert rule["subsets"] == [
        {"name": "stable", "labels": {"version": "v1"}},
        {"name": "canary", "labels": {"version": "v2"}},
    ]
    (route,) = objects[("VirtualService", "reviews")]["spec"]["http"]
    assert [(d["destination"]["subset"], d["weight"]) for d in route["route"]] == [
        ("stable", 90),
        ("canary", 10),
    ]
    assert all(d["destination"]["host"] == "reviews" for d in route["route"])
    # The gateway's VirtualService is not bound to the mesh: it routes to every version.
    (gateway,) = objects[("VirtualService", "ingress")]["spec"]["http"]
    assert "subset" not in gateway["route"][0]["destination"]


def _frontend_bootstrap(scenario: Scenario, labels: tuple[tuple[str, str], ...]) -> Any:
    v1, v2 = Addr("198.18.0.2", 8080), Addr("198.18.0.3", 8080)
    policy = scenario.mesh.destinations["reviews"]
    spec = SidecarSpec(
        instance="frontend-0",
        service="frontend",
        inbound=Addr("198.18.0.1", 8080),
        app=Addr("127.0.0.1", 9000),
        outbound=Addr("127.0.0.1", 15001),
        admin_socket="/tmp/admin.sock",
        access_log="/tmp/access.jsonl",
        upstreams=(
            Upstream(
                "reviews",
                (v1, v2),
                policy,
                endpoint_labels=(
                    (("app", "reviews"), ("version", "v1")),
                    (("app", "reviews"), ("version", "v2")),
                ),
            ),
        ),
        labels=labels,
    )
    return sidecar_bootstrap(spec)["static_resources"]


def _routes(resources: Any) -> list[Any]:
    listener = next(lst for lst in resources["listeners"] if lst["name"] == "virtualOutbound")
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (host,) = hcm["route_config"]["virtual_hosts"]
    return list(host["routes"])


def test_translation_subset_clusters_hold_only_their_versions_endpoints() -> None:
    clusters = {c["name"]: c for c in _frontend_bootstrap(_scenario(), ())["clusters"]}

    def addresses(name: str) -> list[str]:
        (locality,) = clusters[name]["load_assignment"]["endpoints"]
        return [
            e["endpoint"]["address"]["socket_address"]["address"] for e in locality["lb_endpoints"]
        ]

    assert addresses("outbound|8080||reviews") == ["198.18.0.2", "198.18.0.3"]
    assert addresses("outbound|8080|stable|reviews") == ["198.18.0.2"]
    assert addresses("outbound|8080|canary|reviews") == ["198.18.0.3"]
    (route,) = _routes(_frontend_bootstrap(_scenario(), ()))
    assert route["route"]["weighted_clusters"]["clusters"] == [
        {"name": "outbound|8080|stable|reviews", "weight": 90},
        {"name": "outbound|8080|canary|reviews", "weight": 10},
    ]
    assert route["route"]["timeout"] == "0s" and "retry_policy" in route["route"]


def test_translation_matches_in_order_source_labels_per_caller_and_mirror() -> None:
    scenario = _with_routes(
        [
            {"match": [{"headers": {"x-canary": {"exact": "1"}}}], "route": [{"subset": "canary"}]},
            {"match": [{"sourceLabels": {"version": "v9"}}], "route": [{"subset": "canary"}]},
            {
                "match": [{"uri": {"prefix": "/beta"}}, {"uri": {"prefix": "/"}}],
                "route": [{"subset": "stable"}],
                "mirror": {"host": "reviews", "subset": "canary"},
                "mirrorPercentage": {"value": 12.5},
            },
            {"route": [{"subset": "canary"}]},  # after a catch-all: never reached
        ]
    )
    routes = _routes(_frontend_bootstrap(scenario, (("app", "frontend"), ("version", "v1"))))
    assert [r["match"] for r in routes] == [
        {"prefix": "/", "headers": [{"name": "x-canary", "string_match": {"exact": "1"}}]},
        {"prefix": "/beta"},
        {"prefix": "/"},
    ]
    assert routes[0]["route"]["cluster"] == "outbound|8080|canary|reviews"
    assert routes[2]["route"]["request_mirror_policies"] == [
        {
            "cluster": "outbound|8080|canary|reviews",
            "runtime_fraction": {"default_value": {"numerator": 125000, "denominator": "MILLION"}},
            "trace_sampled": False,
        }
    ]
    # A caller whose labels match the source labels gets that route, and it is a catch-all
    # there (source labels are no Envoy match): nothing after it is reached.
    routes_v9 = _routes(_frontend_bootstrap(scenario, (("app", "frontend"), ("version", "v9"))))
    assert [r["route"]["cluster"] for r in routes_v9] == ["outbound|8080|canary|reviews"] * 2
    assert routes_v9[1]["match"] == {"prefix": "/"}


def test_subset_counters_are_kept_per_subset_beside_the_edge_sum() -> None:
    assert subset_of_key("cluster.outbound|8080|canary|reviews.upstream_rq_total") == "canary"
    assert subset_of_key("cluster.outbound|8080||reviews.upstream_rq_total") is None
    phases = phase_windows(T0, steady=10)
    before = {"frontend-0": {}}
    after = {
        "frontend-0": {
            "cluster.outbound|8080|stable|reviews.upstream_rq_total": 90,
            "cluster.outbound|8080|canary|reviews.upstream_rq_total": 12,
            "cluster.outbound|8080|canary|reviews.upstream_rq_retry": 2,
        }
    }
    (edge,) = edge_stats([before, after], phases, lambda proxy: proxy.rsplit("-", 1)[0])
    assert edge.phases["steady"]["upstream_rq_total"] == 102
    assert edge.subsets["canary"]["steady"]["upstream_rq_total"] == 12
    assert edge.subsets["stable"]["steady"]["upstream_rq_retry"] == 0


def _share(hits: int, n: int, share: float = 0.1) -> Any:
    journal = new_journal(
        phases=phase_windows(T0, steady=10),
        edges=[
            EdgeStats(
                caller="frontend",
                callee="reviews",
                phases={"steady": {"upstream_rq_total": n + 5, "upstream_rq_retry": 5}},
                total={},
                subsets={
                    "canary": {"steady": {"upstream_rq_total": hits + 5, "upstream_rq_retry": 5}}
                },
            )
        ],
    )
    return evaluate_traffic_share(
        "share", "steady", journal, ("frontend", "reviews"), "canary", share, 0.05
    )


def test_a_subsets_error_rate_counts_its_5xx_per_routed_request() -> None:
    journal = new_journal(
        phases=phase_windows(T0, steady=10),
        edges=[
            EdgeStats(
                caller="frontend",
                callee="reviews",
                phases={},
                total={},
                subsets={
                    "canary": {
                        "steady": {
                            "upstream_rq_total": 520,
                            "upstream_rq_retry": 20,
                            "upstream_rq_5xx": 50,
                        }
                    }
                },
            )
        ],
    )
    edge = ("frontend", "reviews")
    bad = evaluate_subset_error_rate("v2", "steady", journal, edge, "canary", 0.05)
    assert bad.verdict == Verdict.FAIL and bad.n == 500 and bad.measured == pytest.approx(0.1)
    assert bad.kind == "subsetErrorRate" and "subset canary of frontend → reviews" in bad.message
    ok = evaluate_subset_error_rate("v2", "steady", journal, edge, "canary", 0.2)
    assert ok.verdict == Verdict.PASS
    none = evaluate_subset_error_rate("v1", "steady", journal, edge, "stable", 0.2)
    assert none.verdict == Verdict.INCONCLUSIVE and none.n == 0


def test_traffic_share_verdicts_from_exact_intervals() -> None:
    ok = _share(100, 1000)
    assert ok.verdict == Verdict.PASS and ok.measured == pytest.approx(0.1)
    assert ok.lower is not None and ok.upper is not None and ok.lower < 0.1 < ok.upper
    # A 50/50 split is no 90/10 one; too few requests cannot tell.
    assert _share(500, 1000).verdict == Verdict.FAIL
    assert _share(1, 10).verdict == Verdict.INCONCLUSIVE
    # A correct split whose interval happens to miss 10% exactly (CI saw 97 of 1203) is
    # within the tolerance: PASS, not FAIL.
    near = _share(97, 1203)
    assert near.upper is not None and near.upper < 0.1 and near.verdict == Verdict.PASS
    # Off by more than the tolerance, shown by the whole interval: FAIL; straddling the
    # band's edge: INCONCLUSIVE.
    assert _share(250, 1000).verdict == Verdict.FAIL
    assert _share(150, 1000).verdict == Verdict.INCONCLUSIVE
    assert _share(0, 0).verdict == Verdict.INCONCLUSIVE


# --------------------------------------------------------------------------- real Envoys


def _log_line(**fields: Any) -> str:
    base = {"dir": "outbound", "authority": "reviews:8080", "flags": "-", "attempts": 1}
    return json.dumps({**base, **fields}) + "\n"


def test_subset_latency_is_judged_on_the_callers_access_log_lines_of_that_subset(
    tmp_path: Path,
) -> None:
    """The caller's outbound lines name the subset cluster (``outbound|8080|v2|reviews``, or
    under istiod its stat name ``outbound|8080|v2|reviews;``); their durations, per phase,
    are what ``subsetLatency`` judges: successful requests only, each subset on its own."""
    access = tmp_path / "access"
    access.mkdir()
    v1, v2 = "outbound|8080|v1|reviews", "outbound|8080|v2|reviews;"
    lines = []
    for i in range(400):  # 40 s: v1 fast all along, v2 slow in the second phase only
        start = f"{T0 + i * 0.1:.3f}"
        lines.append(_log_line(start=start, ms=5, status=200, cluster=v1))
        lines.append(_log_line(start=start, ms=400 if i >= 200 else 6, status=200, cluster=v2))
    failed = _log_line(start=f"{T0 + 1:.3f}", ms=9000, status=503, cluster=v1)  # not timed
    other = _log_line(start=f"{T0 + 1:.3f}", ms=1, status=200, cluster="outbound|8080||x")
    (access / "frontend-0.jsonl").write_text("".join(lines) + failed + other)
    found = analyze_access_logs(access, {"frontend-0": "frontend"}, [], [])
    assert set(found.subset_timings) == {("frontend→reviews", "v1"), ("frontend→reviews", "v2")}
    assert found.subset_timings[("frontend→reviews", "v1")].ms.size == 401
    journal = new_journal(phases=phase_windows(T0, calm=20, slow=20))
    edge = {"from": "frontend", "to": "reviews"}
    slos = [
        SubsetLatencySlo.model_validate(
            {"name": name, "kind": "subsetLatency", "edge": edge, "subset": subset}
            | {"quantile": 0.9, "max": "100ms"}
        )
        for name, subset in (("v1-p90", "v1"), ("v2-p90", "v2"), ("none-p90", "v3"))
    ]
    judged = {(r.slo, r.phase): r for r in judge_slos(slos, journal, [], found.subset_timings)}
    assert {key: r.verdict for key, r in judged.items()} == {
        ("v1-p90", "calm"): Verdict.PASS,
        ("v1-p90", "slow"): Verdict.PASS,
        ("v2-p90", "calm"): Verdict.PASS,
        ("v2-p90", "slow"): Verdict.FAIL,
        ("none-p90", "calm"): Verdict.INCONCLUSIVE,  # no request on the subset
        ("none-p90", "slow"): Verdict.INCONCLUSIVE,
    }
    slow = judged[("v2-p90", "slow")]
    assert slow.kind == "subsetLatency" and slow.n == 200 and slow.measured == 0.4
    assert "subset v2 of frontend → reviews" in slow.message
    assert judged[("v1-p90", "calm")].n == 200  # the 503 is not timed


def _callee_requests(outcome: ScenarioOutcome, instance: str) -> int:
    """Requests frontend sent to ``instance``, from the instance's own inbound access log:
    a count independent of the caller's cluster counters."""
    path = outcome.result.run_dir / "access" / f"{instance}.jsonl"
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sum(1 for e in entries if e.get("dir") == "inbound" and e.get("source") == "frontend")


def _assert_split_measured(outcome: ScenarioOutcome) -> None:
    assert outcome.exit_code == ExitCode.PASSED, outcome.summary
    share = next(r for r in outcome.journal.slos if r.slo == "canary-share")
    assert share.verdict == Verdict.PASS and share.n > 900
    # Each version's latency, from frontend's own access log lines of its subset.
    latency = {r.slo: r for r in outcome.journal.slos if r.kind == "subsetLatency"}
    assert {r.verdict for r in latency.values()} == {Verdict.PASS}, latency
    # The counters are read on the 1 Hz mesh ticks, the log lines placed by their own start:
    # the two counts of the phase differ by the requests at its edges (100 per second here).
    timed = latency["canary-p90"].n + latency["stable-p90"].n
    assert abs(timed - share.n) <= 0.1 * share.n, (timed, share.n)
    assert latency["canary-p90"].n < latency["stable-p90"].n
    assert share.lower is not None and share.upper is not None
    # Near 10%: within 3 points (3.5 standard deviations at n = 1200). Not "the interval
    # holds 10%": that fails a correct split in 1 run of 20 (see harness.slo.share). Two CI
    # runs under istio measured 8.06% and 7.72% (notes: worth a look, both meshes agree
    # with the callees' logs).
    assert share.measured is not None and abs(share.measured - 0.10) < 0.03, share.measured
    # The callees agree: v2's inbound sidecar saw about a tenth of the calls.
    v1, v2 = _callee_requests(outcome, "reviews-v1-0"), _callee_requests(outcome, "reviews-v2-0")
    assert 0.05 < v2 / (v1 + v2) < 0.15, (v1, v2)
    # Both meshes record each instance's version (what a fault's target.version selects).
    versions = {i.name: i.version for i in outcome.journal.instances}
    assert versions["reviews-v1-0"] == "v1" and versions["reviews-v2-0"] == "v2"


@pytest.mark.integration
@pytest.mark.slow
def test_a_90_10_split_measures_a_v2_share_of_10_percent_under_envoy(harness_run: Any) -> None:
    _assert_split_measured(harness_run(SPLIT))


@pytest.mark.controlplane
def test_a_90_10_split_measures_a_v2_share_of_10_percent_under_istio(harness_run: Any) -> None:
    _assert_split_measured(harness_run(SPLIT, mesh=Mesh.ISTIO))


# --------------------------------------------------------------------------- rollouts

CANARY = REPO / "scenarios" / "canary-bad-version-is-stopped.yaml"


def _canary_with(**changes: Any) -> str:
    text = CANARY.read_text()
    for old, new in changes.values():
        assert text.count(old) >= 1, old
        text = text.replace(old, new)
    return text


def test_a_traffic_shift_needs_a_two_way_route_to_its_subset_and_whole_weights() -> None:
    text = _canary_with(
        subset=("    subset: canary\n    weight: 10", "    subset: nope\n    weight: 10")
    )
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(text, source="canary.yaml")
    (problem,) = caught.value.problems
    assert problem.startswith("canary.yaml:49:13: faults[0].subset: no route of 'reviews' splits")
    bad_step = _canary_with(step=("percentage: 100}", "percentage: 12.5}"))
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(bad_step)
    assert any("whole percents" in p for p in caught.value.problems)
    instances = _canary_with(
        target=(
            "phase: canary\n    target: {service: reviews}",
            "phase: canary\n    target: {service: reviews, instances: 1}",
        )
    )
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(instances)
    assert any("give no instances" in p for p in caught.value.problems)


def test_a_fault_target_version_must_exist() -> None:
    text = (REPO / "scenarios" / "header-routing-isolates-fault.yaml").read_text()
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(
            text.replace("version: v2}", "version: v3}"), base_dir=REPO / "scenarios"
        )
    assert any(
        "faults[0].target.version: unknown version 'v3'; valid: v1, v2" in p
        for p in caught.value.problems
    ), caught.value.problems


class RuntimeAdmin(FakeAdmin):
    """A FAKE admin API that keeps runtime overrides like Envoy's admin layer (an empty
    value removes one), for the injector's own logic; real Envoys run in the slow tests."""

    def __init__(self) -> None:
        self.layer: dict[str, str] = {}

    def runtime(self) -> dict[str, str]:
        return dict(self.layer)

    def runtime_modify(self, values: dict[str, int | str]) -> None:
        for key, value in values.items():
            if value == "":
                self.layer.pop(key, None)
            else:
                self.layer[key] = str(value)


def test_the_shift_sets_both_weights_per_step_and_its_revert_restores_the_route() -> None:
    scenario = load_scenario(CANARY)
    fault = scenario.faults[1]
    assert isinstance(fault, TrafficShiftFault)
    admin = RuntimeAdmin()
    mine = weight_key("reviews", 0, "canary")
    other = weight_key("reviews", 0, "stable")
    assert mine == "harness.weights.reviews.0.outbound|8080|canary|reviews"
    weights = RuntimeWeights({"frontend-0": admin}, [(mine, other)])
    injector = TrafficShiftInjector(fault, "promote", {"frontend-0": admin}, weights)
    injector.inject()
    assert admin.layer == {mine: "50", other: "50"}
    injector.adjust(100)
    assert admin.layer == {mine: "100", other: "0"}
    assert injector.revert() and admin.layer == {}
    # The translation's route reads those keys (Envoy: runtime_key_prefix + "." + cluster).
    (route,) = _routes(_frontend_bootstrap(scenario, ()))
    weighted = route["route"]["weighted_clusters"]
    assert f"{weighted['runtime_key_prefix']}.{weighted['clusters'][1]['name']}" == mine
    assert weighted["clusters"][1]["weight"] == 0  # kept, so a shift can raise it


class RecordingApplier:
    """A FAKE control-plane deployment that records the policies it is asked to apply."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, Any]] = []

    def apply_destination_policy(self, service: str, policy: Any) -> PolicyPush:
        self.applied.append((service, policy))
        return PolicyPush(change="apply", at=0.0, proxies=[], seconds=0.0)


def test_under_istio_each_step_re_applies_the_route_and_the_revert_the_stable_one() -> None:
    scenario = load_scenario(CANARY)
    fault = scenario.faults[1]
    assert isinstance(fault, TrafficShiftFault)
    policy = scenario.mesh.destinations["reviews"]
    applier = RecordingApplier()
    injector = TrafficShiftInjector(
        fault, "promote", {}, PolicyWeights(applier, "reviews", policy, "canary")
    )
    injector.inject()
    injector.adjust(100)
    assert injector.revert()

    def weights(p: Any) -> list[tuple[str | None, int | None]]:
        return [(d.subset, d.weight) for d in p.http[0].route]

    assert [weights(p) for _, p in applier.applied] == [
        [("stable", 50), ("canary", 50)],
        [("stable", 0), ("canary", 100)],
        [("stable", 100), ("canary", 0)],  # the scenario's own: the stable route
    ]
    assert unsupported_faults(scenario) == []


@pytest.mark.integration
@pytest.mark.slow
def test_the_guard_rolls_a_bad_canary_back_and_the_promotion_never_starts(
    harness_run: Any,
) -> None:
    outcome = harness_run(CANARY)
    journal = outcome.journal
    assert outcome.exit_code == ExitCode.PASSED, outcome.summary
    assert journal.rolled_back is not None and "guard tripped" in journal.rolled_back
    assert journal.aborted is None and journal.problems == []
    (canary,) = journal.faults  # the promotion was never injected
    assert canary.name == "canary-10" and canary.took_effect and canary.revert_verified
    assert canary.evidence["subset_requests"] > 0
    window = next(p for p in journal.phases if p.name == "canary")
    assert canary.reverted_at is not None and canary.reverted_at < window.end - 2.0
    # The report (from the journal alone) says when and why the rollout was rolled back.
    html = render_report(Journal.read(outcome.result.journal_path))
    assert "rolled back at +" in html and "guard tripped" in html


@pytest.mark.controlplane
def test_under_istio_the_rollout_is_a_policy_push_and_the_guard_rolls_it_back(
    harness_run: Any,
) -> None:
    outcome = harness_run(CANARY, mesh=Mesh.ISTIO)
    journal = outcome.journal
    assert outcome.exit_code == ExitCode.PASSED, outcome.summary
    assert journal.rolled_back is not None
    (canary,) = journal.faults
    assert canary.took_effect and canary.revert_verified
    assert journal.control_plane is not None
    shifts = [p for p in journal.control_plane.pushes if "VirtualService" in p.change]
    assert len(shifts) == 2, shifts  # the shift to 10%, then the rollback to the stable route
    assert all(p.proxies == ["frontend-0"] for p in shifts)
