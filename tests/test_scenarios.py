"""The shipped scenarios, end to end: real Envoy, real app, real Locust, real verdicts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from harness.errors import ExitCode
from harness.journal import Journal
from harness.load import read_samples
from harness.platforms.local.platform import Mesh
from harness.platforms.local.processes import namespace_members, run_processes
from harness.pytest_plugin import ScenarioOutcome
from harness.report import render_report

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
Run = Callable[..., ScenarioOutcome]


def assert_nothing_left(outcome: ScenarioOutcome) -> None:
    journal = outcome.journal
    assert run_processes(journal.run_id) == []
    assert journal.namespaces, "the run must have had its own namespaces"
    for namespace in journal.namespaces.values():
        assert namespace_members(namespace, journal.run_id) == []


def edge(outcome: ScenarioOutcome, caller: str, callee: str) -> dict[str, dict[str, int]]:
    for entry in outcome.journal.edges:
        if (entry.caller, entry.callee) == (caller, callee):
            return entry.phases
    raise AssertionError(f"no edge {caller} → {callee} in the journal")


def test_retries_mask_transient_errors(harness_run: Run) -> None:
    outcome = harness_run(SCENARIOS / "retries-mask-transient-errors.yaml")
    assert outcome.exit_code == ExitCode.PASSED, outcome.summary
    journal = outcome.journal
    # The fault took effect: Envoy counted injected aborts, and frontend's sidecar retried.
    (fault,) = journal.faults
    assert fault.took_effect and fault.evidence["aborts_injected"] > 0
    assert fault.revert_verified
    assert journal.injected["catalog-0"]["aborts_injected"] > 0
    retries = edge(outcome, "frontend", "catalog")
    assert retries["fault"]["upstream_rq_retry"] > 0
    assert retries["baseline"]["upstream_rq_retry"] == 0
    fault_slo = next(e for e in journal.slos if e.slo == "e2e-error-rate" and e.phase == "fault")
    assert fault_slo.verdict == "PASS" and fault_slo.n > 300
    assert_retry_series_follow_the_fault(outcome)
    assert_report_names_the_flags(outcome)
    assert_nothing_left(outcome)


def assert_report_names_the_flags(outcome: ScenarioOutcome) -> None:
    """The report (rendered from the journal alone) breaks failures down by response flag."""
    html = render_report(Journal.read(outcome.result.journal_path))
    start = html.index('<section id="flags">')
    breakdown = html[start : html.index("</section>", start)]
    assert "frontend→catalog" in breakdown and "FI" in breakdown


def assert_retry_series_follow_the_fault(outcome: ScenarioOutcome) -> None:
    """The 1 Hz timeline shows the retries during the fault, and the access logs say why."""
    journal = outcome.journal
    assert journal.mesh_timeline is not None and journal.load_started_at is not None
    mesh = journal.mesh_timeline
    series = next(
        e.counters["upstream_rq_retry"]
        for e in mesh.edges
        if (e.caller, e.callee) == ("frontend", "catalog")
    )
    windows = {w.name: (w.start - journal.load_started_at, w.end - journal.load_started_at)
               for w in journal.phases}  # fmt: skip

    def retries_in(phase: str, settle: float = 0.0) -> int:
        # A value at t covers the second before t; skip the first `settle` seconds of a phase.
        start, end = windows[phase]
        return sum(v for t, v in zip(mesh.t, series, strict=True) if start + settle < t <= end)

    during, after = retries_in("fault", settle=1.0), retries_in("recovery", settle=1.5)
    assert during > 0 and after < during, (during, after, mesh.t, series)
    assert retries_in("baseline") < during
    assert (
        sum(mesh.injected["catalog-0"]["aborts"])
        == journal.injected["catalog-0"]["aborts_injected"]
    )
    assert len(mesh.t) >= 35 and not mesh.gaps
    # Response flags: FI where catalog-0's fault filter aborted, on the frontend → catalog
    # edge, from the callee's side (kept apart from the caller's URX/UO/UT).
    flags = journal.response_flags_callee
    assert flags["frontend→catalog"].get("FI", 0) > 0, flags
    assert "FI" not in journal.response_flags["frontend→catalog"]
    assert journal.response_codes["ingress→frontend"].get("200", 0) > 1000
    # Timelines and histograms cover the run; request paths show a retry that saved a request.
    assert journal.timeline is not None and len(journal.timeline.t) == 40
    assert set(journal.latency_histograms) == {"baseline", "fault", "recovery", "all"}
    assert any(
        (hop.proxy, hop.flags) == ("catalog-0", "FI")
        for path in journal.request_paths
        for hop in path.hops
    ), journal.request_paths


def test_negative_control_without_retries_fails(harness_run: Run) -> None:
    outcome = harness_run(SCENARIOS / "retries-mask-transient-errors-negative.yaml")
    assert outcome.exit_code == ExitCode.FAILED, outcome.summary
    journal = outcome.journal
    assert journal.faults[0].took_effect
    assert edge(outcome, "frontend", "catalog")["fault"]["upstream_rq_retry"] == 0
    failed = [e for e in journal.slos if e.verdict == "FAIL"]
    assert [(e.slo, e.phase) for e in failed] == [("e2e-error-rate", "fault")]
    message = failed[0].message
    assert "e2e-error-rate" in message and "exceeds the objective 1.00%" in message
    assert f"{failed[0].measured:.1%}".rstrip("%") in message
    assert_nothing_left(outcome)


def test_default_retries_do_not_retry_503(harness_run: Run) -> None:
    # Istio >= 1.24: no `retries` on frontend → catalog, so the default policy applies, and
    # its status-code list is empty: catalog-0's 503s reach the users unretried.
    outcome = harness_run(SCENARIOS / "default-retries-pass-503-through.yaml")
    assert outcome.exit_code == ExitCode.PASSED, outcome.summary
    journal = outcome.journal
    (fault,) = journal.faults
    assert fault.took_effect and journal.injected["catalog-0"]["aborts_injected"] > 50
    counters = edge(outcome, "frontend", "catalog")["fault"]
    assert counters["upstream_rq_retry"] == 0, counters
    assert journal.load is not None
    fault_load = next(p for p in journal.load.phases if p.phase == "fault")
    # About 1/3 x 50% of requests hit the aborting instance; none is masked.
    assert fault_load.errors / fault_load.count > 0.05, fault_load
    assert journal.response_codes["frontend→catalog"].get("503", 0) > 50, journal.response_codes
    assert_nothing_left(outcome)


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("partition-outlier-ejection.yaml", ExitCode.PASSED),
        ("partition-outlier-ejection-negative.yaml", ExitCode.FAILED),
        ("kill-instance-restart.yaml", ExitCode.PASSED),
        ("pause-instance-timeouts.yaml", ExitCode.PASSED),
        ("fan-out-retries-mask-deep-errors-negative.yaml", ExitCode.FAILED),
    ],
)
def test_shipped_fault_scenarios(harness_run: Run, scenario: str, expected: ExitCode) -> None:
    """Every shipped scenario gives its verdict, and its faults took effect and were undone.
    (The toxic scenarios run in tests/test_toxics.py.)"""
    outcome = harness_run(SCENARIOS / scenario)
    assert outcome.exit_code == expected, outcome.summary
    journal = outcome.journal
    assert journal.faults and all(f.took_effect and f.revert_verified for f in journal.faults)
    if expected == ExitCode.FAILED:
        assert not journal.problems, "a negative control fails on its SLOs, not on its faults"
        assert any(entry.verdict == "FAIL" for entry in journal.slos)
    assert_nothing_left(outcome)


FAN_OUT = ("gateway", "catalog", "inventory", "stock", "pricing", "reviews", "ratings")


def test_declared_fan_out_topology_runs_and_its_request_paths_cross_the_fan_out(
    harness_run: Run,
) -> None:
    """Seven declared services (parallel fan-out, a sequential chain, a call on half the
    requests, two versions): retries deep in the tree mask a fault, and the access logs
    rebuild requests through every branch."""
    outcome = harness_run(SCENARIOS / "fan-out-retries-mask-deep-errors.yaml")
    assert outcome.exit_code == ExitCode.PASSED, outcome.summary
    journal = outcome.journal
    (fault,) = journal.faults
    assert fault.took_effect and journal.injected["ratings-0"]["aborts_injected"] > 0
    assert edge(outcome, "reviews", "ratings")["fault"]["upstream_rq_retry"] > 0
    versions = {inst.name: (inst.service, inst.version) for inst in journal.instances}
    assert versions["reviews-v1-0"] == ("reviews", "v1")
    assert versions["reviews-v2-0"] == ("reviews", "v2")
    assert versions["catalog-1"] == ("catalog", "v1")
    # Every edge of the declared graph carried traffic, the optional one too.
    declared = [
        ("ingress", "gateway"),
        *(("gateway", callee) for callee in ("catalog", "pricing", "reviews", "recommend")),
        ("catalog", "inventory"),
        ("catalog", "stock"),
        ("reviews", "ratings"),
    ]
    for caller, callee in declared:
        assert journal.response_codes[f"{caller}→{callee}"].get("200", 0) > 0, (caller, callee)
    # recommend is called on about half the requests (Binomial(n, 0.5), far from the edges).
    ingress = sum(journal.response_codes["ingress→gateway"].values())
    recommend = sum(journal.response_codes["gateway→recommend"].values())
    assert 0.3 * ingress < recommend < 0.7 * ingress, (recommend, ingress)
    service_of = {inst.name: inst.service for inst in journal.instances}
    succeeded = [p for p in journal.request_paths if p.status == 200]
    assert succeeded, journal.request_paths
    for path in succeeded:
        reached = {service_of[h.proxy] for h in path.hops if h.direction == "inbound"}
        assert set(FAN_OUT) <= reached, (path.rid, reached)
        assert {h.proxy for h in path.hops if h.direction == "ingress"} == {"ingress"}
    # The report (from the journal alone) says where each request went through the fan-out.
    html = render_report(Journal.read(outcome.result.journal_path))
    start = html.index('<section id="paths">')
    paths = html[start : html.index("</section>", start)]
    assert "reached: gateway-0, " in paths and "ratings-" in paths
    assert_nothing_left(outcome)


@pytest.mark.controlplane
def test_declared_fan_out_topology_under_istiod(harness_run: Run) -> None:
    """The same seven services with sidecars programmed by a real istiod: the error and
    retry verdicts, the fault's effect and the retries deep in the tree, and traffic on every
    declared edge (from the sidecars' counters: this platform writes no access logs yet).

    The latency SLO may only be undecided here, not failed: istiod, the API server and 12
    pilot-agent + Envoy pairs on a shared 2-core machine stall in bursts (measured: p99
    2.2 s at load average 45, 79 ms at 20), which is the machine, not the mesh under test.
    """
    outcome = harness_run(SCENARIOS / "fan-out-retries-mask-deep-errors.yaml", mesh=Mesh.ISTIO)
    journal = outcome.journal
    assert journal.status == "completed" and not journal.problems, outcome.summary
    verdicts = {(e.slo, e.phase): e.verdict for e in journal.slos}
    assert verdicts[("e2e-error-rate", "fault")] == "PASS", outcome.summary
    assert verdicts[("ratings-retry-amplification", "fault")] == "PASS", outcome.summary
    assert verdicts[("p99-latency", "fault")] in ("PASS", "INCONCLUSIVE"), outcome.summary
    assert outcome.exit_code in (ExitCode.PASSED, ExitCode.INCONCLUSIVE), outcome.summary
    assert journal.mesh == "istio"
    assert journal.faults[0].took_effect
    assert edge(outcome, "reviews", "ratings")["fault"]["upstream_rq_retry"] > 0
    totals = {(e.caller, e.callee): e.phases["fault"]["upstream_rq_total"] for e in journal.edges}
    ingress = totals[("ingress", "gateway")]
    for callee in ("catalog", "pricing", "reviews"):
        assert totals[("gateway", callee)] >= ingress * 0.95, (callee, totals)
    assert 0.3 * ingress < totals[("gateway", "recommend")] < 0.7 * ingress, totals
    assert totals[("catalog", "inventory")] > 0 and totals[("catalog", "stock")] > 0
    versions = {inst.name: inst.version for inst in journal.instances}
    assert sorted(v for n, v in versions.items() if n.startswith("reviews")) == ["v1", "v2"]
    assert_nothing_left(outcome)


def test_a_user_locustfile_with_two_request_types_is_judged_per_request_name(
    harness_run: Run,
) -> None:
    """scenarios/locustfiles/shop_visitor.py (written like Locust's examples, importing
    nothing from the harness) runs unchanged: every request is sampled with its name, the
    SLOs with ``request:`` count only their kind, and the requests' ids are followed
    through the mesh's access logs as with the built-in load."""
    outcome = harness_run(SCENARIOS / "user-locustfile-two-requests.yaml")
    assert outcome.exit_code == ExitCode.PASSED, outcome.summary
    journal = outcome.journal
    assert journal.load is not None and journal.load.mode == "concurrency"
    assert journal.load.locustfile == str(SCENARIOS / "locustfiles" / "shop_visitor.py")
    html = render_report(Journal.read(outcome.result.journal_path))
    assert "The User classes of " in html and "at their own pace" in html
    n = {(entry.slo, entry.phase): entry.n for entry in journal.slos}
    for phase in ("warm", "steady"):
        product, cart = n[("product-error-rate", phase)], n[("cart-error-rate", phase)]
        assert product > 0 and cart > 0, n
        assert product + cart == n[("all-error-rate", phase)], n
        assert product > cart  # the product task has weight 3, the cart task 1
    names = {sample.name for sample in read_samples(journal.load.samples_file)}
    assert names == {"product", "cart"}
    assert journal.request_paths and all(p.hops for p in journal.request_paths)
    assert_nothing_left(outcome)
