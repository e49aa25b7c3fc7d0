"""Mesh observation: load timelines, latency histograms, the 1 Hz sampler, access logs.

The unit tests feed synthetic samples, scrapes and access-log lines (in the exact shapes
Locust's locustfile, Envoy's admin API and ``ACCESS_LOG_FORMAT`` produce); the integration
test at the end reads all of them from a real deployment.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.faults.http import HttpFaultInjector
from harness.journal import PhaseWindow, RequestPath
from harness.load.driver import Sample
from harness.mesh.admin import EnvoyAdmin
from harness.mesh.envoy import ACCESS_LOG_FORMAT, REPORT_FIELDS, access_log_format
from harness.mesh.stats import EDGE_COUNTERS
from harness.observe.access_logs import (
    analyze_access_logs,
    edge_of,
    read_access_log,
    request_paths,
    response_flags,
    status_class,
    summarize_responses,
)
from harness.observe.sampler import (
    MeshSampler,
    MeshTimelineBuilder,
    Scrape,
    endpoint_health,
    stat_pattern,
)
from harness.observe.timeline import (
    ALL_PHASES,
    decode_histogram,
    latency_histograms,
    load_timeline,
    nearest_rank,
    new_histogram,
    record_ms,
)
from harness.platforms.local import LocalDeployment, LocalPlatform
from harness.scenario.models import HttpFault, Scenario

T0 = 1_800_000_000.0


def sample(
    t: float, ms: float = 10.0, status: int = 200, rid: str = "", err: str | None = None
) -> Sample:
    ok = 200 <= status < 300
    return Sample(t=t, ms=ms, status=status, ok=ok, err=None if ok else err or str(status), rid=rid)


# --------------------------------------------------------------------------- load timeline


def test_load_timeline_buckets_by_start_second() -> None:
    samples = [
        sample(T0 - 0.5),  # before t0 (warm-up): left out
        sample(T0 + 0.1, ms=10),
        sample(T0 + 0.9, ms=30),
        sample(T0 + 0.5, ms=20),
        sample(T0 + 1.2, status=503),
        sample(T0 + 2.99, ms=7),
        sample(T0 + 3.0),  # at t_end: left out
    ]
    timeline = load_timeline(samples, T0, T0 + 3.0, offered_rate=40)
    assert timeline.t == [0.0, 1.0, 2.0]
    assert timeline.offered == [40.0, 40.0, 40.0]
    assert timeline.achieved == [3, 1, 1]
    assert timeline.errors == [0, 1, 0]
    assert timeline.p50_ms == [20, None, 7]  # a bucket with only failures has no latency
    assert timeline.p95_ms == [30, None, 7]
    assert timeline.p99_ms == [30, None, 7]


def test_load_timeline_has_whole_seconds_only() -> None:
    samples = [sample(T0 + 1.2), sample(T0 + 2.2)]
    timeline = load_timeline(samples, T0, T0 + 2.98, offered_rate=5)
    assert timeline.t == [0.0, 1.0]
    assert timeline.achieved == [0, 1]
    assert load_timeline(samples, T0, T0 + 3.0, offered_rate=5).achieved == [0, 1, 1]
    assert load_timeline([], T0, T0, offered_rate=5).t == []


@given(
    values=st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=200),
    q=st.floats(0.01, 1.0),
)
def test_nearest_rank_is_the_smallest_value_covering_q(values: list[float], q: float) -> None:
    ordered = sorted(values)
    v = nearest_rank(ordered, q)
    assert v in ordered
    n = len(ordered)
    assert sum(1 for x in ordered if x <= v) >= q * n - 1e-9
    assert sum(1 for x in ordered if x < v) < q * n


# --------------------------------------------------------------------------- histograms

latencies_us = st.lists(st.integers(1, 60_000_000), min_size=1, max_size=300)


@settings(max_examples=60, deadline=None)
@given(values=latencies_us, q=st.floats(0.0, 100.0))
def test_hdr_percentile_is_within_precision_of_the_exact_quantile(
    values: list[int], q: float
) -> None:
    histogram = new_histogram()
    for value in values:
        histogram.record_value(value)
    ordered = sorted(values)
    # hdrh ranks percentiles by rounding (not nearest-rank's ceiling): rank = round(q·n) ≥ 1.
    rank = max(1, int(q * len(ordered) / 100 + 0.5))
    exact = ordered[rank - 1]
    found = histogram.get_value_at_percentile(q)
    assert histogram.values_are_equivalent(found, exact)
    # three significant digits: buckets are at most 1/1024 of their value wide
    if q > 0:
        assert exact <= found <= exact + exact / 1024
    else:
        assert exact - exact / 1024 <= found <= exact


@settings(max_examples=40, deadline=None)
@given(
    phases=st.lists(
        st.lists(st.floats(0.001, 59_000.0, allow_nan=False), max_size=80), min_size=1, max_size=4
    )
)
def test_histograms_round_trip_and_merge(phases: list[list[float]]) -> None:
    samples: list[Sample] = []
    windows: list[PhaseWindow] = []
    for index, latencies in enumerate(phases):
        start = T0 + 10 * index
        windows.append(PhaseWindow(name=f"p{index}", start=start, end=start + 10))
        for k, ms in enumerate(latencies):
            samples.append(sample(start + 9.9 * k / max(1, len(latencies)), ms=ms))
        samples.append(sample(start + 5, ms=123, status=503))  # failures are not recorded
    encoded = latency_histograms(samples, windows)
    assert set(encoded) == {w.name for w in windows} | {ALL_PHASES}
    total = 0
    for window, latencies in zip(windows, phases, strict=True):
        decoded = decode_histogram(encoded[window.name])
        assert decoded.get_total_count() == len(latencies)
        total += len(latencies)
        if latencies:
            expected = new_histogram()
            for ms in latencies:
                record_ms(expected, ms)
            assert decoded.get_max_value() == expected.get_max_value()
            assert decoded.get_value_at_percentile(99) == expected.get_value_at_percentile(99)
    merged = decode_histogram(encoded[ALL_PHASES])
    assert merged.get_total_count() == total


def test_histogram_clamps_and_skips_samples_outside_phases() -> None:
    window = PhaseWindow(name="only", start=T0, end=T0 + 1)
    samples = [sample(T0 + 0.1, ms=0.0), sample(T0 + 0.2, ms=10_000_000.0), sample(T0 + 5)]
    histogram = decode_histogram(latency_histograms(samples, [window])["only"])
    assert histogram.get_total_count() == 2
    assert histogram.get_min_value() == 1  # 0 ms is clamped to 1 µs
    assert histogram.values_are_equivalent(histogram.get_max_value(), 60_000_000)


def test_a_phase_named_all_keeps_its_own_histogram() -> None:
    windows = [
        PhaseWindow(name="all", start=T0, end=T0 + 1),
        PhaseWindow(name="other", start=T0 + 1, end=T0 + 2),
    ]
    encoded = latency_histograms([sample(T0 + 0.5), sample(T0 + 1.5)], windows)
    assert decode_histogram(encoded["all"]).get_total_count() == 1


# --------------------------------------------------------------------------- sampler


SERVICE_OF = {
    "ingress": "ingress",
    "frontend-0": "frontend",
    "frontend-1": "frontend",
    "catalog-0": "catalog",
    "catalog-1": "catalog",
}
ENDPOINTS = {("127.10.2.1", 15006): "catalog-0", ("127.10.2.2", 15006): "catalog-1"}
RETRY = "cluster.outbound|8080||catalog.upstream_rq_retry"
TOTAL = "cluster.outbound|8080||catalog.upstream_rq_total"
ABORTS = "http.inbound_catalog.fault.aborts_injected"


def clusters(**health: dict[str, Any]) -> dict[str, Any]:
    """``/clusters?format=json`` of a frontend sidecar, with catalog's endpoints."""
    hosts = [
        {
            "address": {"socket_address": {"address": ip, "port_value": port}},
            "health_status": health.get(ENDPOINTS[(ip, port)], {"eds_health_status": "HEALTHY"}),
        }
        for ip, port in ENDPOINTS
    ]
    return {
        "cluster_statuses": [
            {"name": "outbound|8080||catalog", "host_statuses": hosts},
            {"name": "inbound|8080||", "host_statuses": []},
        ]
    }


def builder() -> MeshTimelineBuilder:
    return MeshTimelineBuilder(SERVICE_OF, ENDPOINTS, EDGE_COUNTERS)


def test_builder_sums_increases_per_edge_over_caller_instances() -> None:
    b = builder()
    b.add(Scrape(t=0.0, counters={"frontend-0": {TOTAL: 100}, "frontend-1": {TOTAL: 50}}))
    b.add(
        Scrape(
            t=1.0,
            counters={
                "frontend-0": {TOTAL: 110, RETRY: 2},
                "frontend-1": {TOTAL: 55},
                "catalog-0": {ABORTS: 3},
                "ingress": {"cluster.outbound|8080||frontend.upstream_rq_total": 15},
            },
            clusters={"frontend-0": clusters(), "frontend-1": clusters()},
        )
    )
    b.add(
        Scrape(
            t=2.0,
            counters={
                "frontend-0": {TOTAL: 120, RETRY: 2},
                "frontend-1": {TOTAL: 60, RETRY: 1},
                "catalog-0": {ABORTS: 3},
                "ingress": {"cluster.outbound|8080||frontend.upstream_rq_total": 30},
            },
            clusters={
                "frontend-0": clusters(**{"catalog-0": {"failed_outlier_check": True}}),
                "frontend-1": clusters(),
            },
        )
    )
    timeline = b.timeline()
    assert timeline.t == [1.0, 2.0]
    edges = {(e.caller, e.callee): e.counters for e in timeline.edges}
    assert set(edges) == {("frontend", "catalog"), ("ingress", "frontend")}
    assert edges[("frontend", "catalog")]["upstream_rq_total"] == [15, 15]
    assert edges[("frontend", "catalog")]["upstream_rq_retry"] == [2, 1]
    assert set(edges[("frontend", "catalog")]) == set(EDGE_COUNTERS)
    # the ingress had no baseline: its first answer is its baseline (no jump from 0)
    assert edges[("ingress", "frontend")]["upstream_rq_total"] == [0, 15]
    assert timeline.injected == {}  # catalog-0's first answer is its baseline; nothing since
    assert timeline.endpoints["frontend-0→catalog-0"] == ["healthy", "ejected"]
    assert timeline.endpoints["frontend-1→catalog-1"] == ["healthy", "healthy"]
    assert timeline.gaps == {}


def test_builder_counts_injected_faults_and_pads_late_edges() -> None:
    b = builder()
    b.add(Scrape(t=0.0, counters={"catalog-0": {}, "frontend-0": {}}))
    b.add(Scrape(t=1.0, counters={"catalog-0": {}, "frontend-0": {}}))
    b.add(Scrape(t=2.0, counters={"catalog-0": {ABORTS: 4}, "frontend-0": {RETRY: 4}}))
    timeline = b.timeline()
    assert timeline.injected == {"catalog-0": {"aborts": [0, 4], "delays": [0, 0]}}
    (edge,) = timeline.edges
    assert edge.counters["upstream_rq_retry"] == [0, 4]
    assert edge.counters["upstream_rq_total"] == [0, 0]


def test_builder_records_gaps_and_survives_restarts() -> None:
    b = builder()
    b.add(Scrape(t=0.0, counters={"frontend-0": {TOTAL: 10}}, clusters={"frontend-0": clusters()}))
    b.add(Scrape(t=1.0, counters={"frontend-0": {TOTAL: 20}}, clusters={"frontend-0": clusters()}))
    b.add(
        Scrape(
            t=2.0,
            counters={"frontend-0": None},
            clusters={"frontend-0": None},
            errors={"frontend-0": "PlatformError: unreachable"},
        )
    )
    b.add(Scrape(t=3.0, counters={"frontend-0": {TOTAL: 45}}, clusters={"frontend-0": clusters()}))
    b.add(Scrape(t=4.0, counters={"frontend-0": {TOTAL: 5}}, clusters={"frontend-0": clusters()}))
    timeline = b.timeline()
    (edge,) = timeline.edges
    # gap → 0; back → everything since the last good scrape; restart (down) → the new value
    assert edge.counters["upstream_rq_total"] == [10, 0, 25, 5]
    assert timeline.gaps == {"frontend-0": [2.0]}
    assert timeline.scrape_errors == {"frontend-0": "PlatformError: unreachable"}
    assert timeline.endpoints["frontend-0→catalog-0"] == [
        "healthy",
        "unknown",
        "healthy",
        "healthy",
    ]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"eds_health_status": "HEALTHY"}, "healthy"),
        ({"eds_health_status": "HEALTHY", "failed_outlier_check": True}, "ejected"),
        ({"failed_active_health_check": True}, "unhealthy"),
        ({"eds_health_status": "DRAINING"}, "draining"),
        ({}, "healthy"),
    ],
)
def test_endpoint_health(status: dict[str, Any], expected: str) -> None:
    assert endpoint_health(status) == expected


def test_stat_pattern_selects_edge_and_fault_counters_only() -> None:
    import re

    pattern = re.compile(stat_pattern(EDGE_COUNTERS))
    assert pattern.match(RETRY)
    assert pattern.match(
        "cluster.outbound|8080||catalog.outlier_detection.ejections_enforced_total"
    )
    assert pattern.match(ABORTS)
    assert not pattern.match("cluster.outbound|8080||catalog.upstream_rq_retry_backoff_ms")
    assert not pattern.match("cluster.inbound|8080||.upstream_rq_total")
    assert not pattern.match("http.inbound_catalog.fault.active_faults")


def test_sampler_survives_proxies_that_do_not_answer(tmp_path: Path) -> None:
    """Real admin clients on sockets nobody listens on: every scrape fails, nothing breaks."""
    admins = {
        "ingress": EnvoyAdmin(str(tmp_path / "gone.sock"), name="ingress", timeout=0.2),
        "frontend-0": EnvoyAdmin(str(tmp_path / "also-gone.sock"), name="frontend-0"),
    }
    sampler = MeshSampler(
        admins,
        t0=time.time(),
        service_of=SERVICE_OF,
        endpoint_names=ENDPOINTS,
        counters=EDGE_COUNTERS,
        interval=0.05,
    )
    with sampler:
        deadline = time.monotonic() + 10
        while len(sampler.timeline().t) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    timeline = sampler.timeline()
    assert len(timeline.t) >= 3
    assert timeline.t == sorted(timeline.t)
    assert set(timeline.gaps) == {"ingress", "frontend-0"}
    assert "unreachable" in timeline.scrape_errors["ingress"]
    assert timeline.edges == []


def test_sampler_stops_by_itself_after_max_duration(tmp_path: Path) -> None:
    admins = {"ingress": EnvoyAdmin(str(tmp_path / "gone.sock"), name="ingress")}
    sampler = MeshSampler(
        admins,
        t0=time.time(),
        service_of=SERVICE_OF,
        endpoint_names=ENDPOINTS,
        counters=EDGE_COUNTERS,
        interval=0.05,
        max_duration=0.2,
    )
    sampler.start()
    deadline = time.monotonic() + 10
    while sampler.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not sampler.running
    count = len(sampler.stop().t)
    assert 1 <= count <= 6  # and no last scrape after an expiry


def test_sampler_rejects_a_bad_interval() -> None:
    with pytest.raises(ValueError, match="interval"):
        MeshSampler({}, t0=0, service_of={}, endpoint_names={}, counters=EDGE_COUNTERS, interval=0)


# --------------------------------------------------------------------------- access logs


def entry(
    direction: str,
    *,
    rid: str,
    start: float,
    status: int = 200,
    flags: str = "-",
    authority: str = "catalog",
    cluster: str | None = "outbound|8080||catalog",
    source: str | None = "frontend",
    attempts: int | None = 1,
    ms: int = 5,
    upstream: str | None = "127.10.2.1:15006",
    path: str = "/catalog/1",
) -> str:
    """One line as Envoy writes it with ``ACCESS_LOG_FORMAT``."""
    return json.dumps(
        {
            "attempts": attempts,
            "authority": authority,
            "cluster": cluster,
            "details": "via_upstream",
            "dir": direction,
            "downstream": "127.0.0.1:50000",
            "flags": flags,
            "method": "GET",
            "ms": ms,
            "path": path,
            "rid": rid,
            "source": source,
            "start": f"{start:.3f}",
            "status": status,
            "upstream": upstream,
            "upstream_ms": "2",
        }
    )


@pytest.fixture
def access_dir(tmp_path: Path) -> Path:
    """Two requests: ``ok-retried`` (catalog-0 aborts, the retry lands on catalog-1) and
    ``failed`` (both attempts abort: URX at frontend, 503 to the client); plus a plain one."""
    directory = tmp_path / "access"
    directory.mkdir()
    s = T0 + 1
    logs = {
        "ingress": [
            entry("ingress", rid="ok-retried", start=s, authority="127.10.0.1:8080",
                  cluster="outbound|8080||frontend", source="ingress", ms=30, path="/product/1"),
            entry("ingress", rid="failed", start=s + 1, status=503, authority="127.10.0.1:8080",
                  cluster="outbound|8080||frontend", source="ingress", ms=20, path="/product/2"),
            entry("ingress", rid="plain", start=s + 2, authority="127.10.0.1:8080",
                  cluster="outbound|8080||frontend", source="ingress", path="/product/3"),
        ],
        "frontend-0": [
            entry("inbound", rid="ok-retried", start=s, authority="127.10.0.1:8080",
                  cluster="inbound|8080||", source="ingress", ms=29, path="/product/1"),
            entry("outbound", rid="ok-retried", start=s + 0.002, attempts=2, ms=20),
            entry("inbound", rid="failed", start=s + 1, status=503, authority="127.10.0.1:8080",
                  cluster="inbound|8080||", source="ingress", ms=19, path="/product/2"),
            entry("outbound", rid="failed", start=s + 1.001, status=503, flags="URX",
                  attempts=2, ms=10),
            entry("outbound", rid="plain", start=s + 2, authority="pricing",
                  cluster="outbound|8080||pricing", flags="DI,UT", status=504),
        ],
        "catalog-0": [
            entry("inbound", rid="ok-retried", start=s + 0.002, status=503, flags="FI",
                  cluster="inbound|8080||", attempts=0, ms=0, upstream=None),
            entry("inbound", rid="failed", start=s + 1.001, status=503, flags="FI",
                  cluster="inbound|8080||", attempts=0, ms=0, upstream=None),
            entry("inbound", rid="direct", start=s + 3, source=None, flags="UC", status=503,
                  cluster="inbound|8080||"),
        ],
        "catalog-1": [
            entry("inbound", rid="ok-retried", start=s + 0.010, cluster="inbound|8080||", ms=8),
            entry("inbound", rid="failed", start=s + 1.003, status=503, flags="FI",
                  cluster="inbound|8080||", attempts=0, ms=0, upstream=None),
        ],
    }  # fmt: skip
    for proxy, lines in logs.items():
        text = "\n".join(lines) + "\n"
        if proxy == "catalog-1":
            text += entry("inbound", rid="torn", start=s + 9)[:57]  # killed mid-write
        (directory / f"{proxy}.jsonl").write_text(text)
    return directory


def test_read_access_log_skips_a_torn_last_line(access_dir: Path) -> None:
    entries = list(read_access_log(access_dir / "catalog-1.jsonl"))
    assert [e.rid for e in entries] == ["ok-retried", "failed"]
    assert entries[0].proxy == "catalog-1"
    assert entries[1].upstream == "" and entries[1].attempts == 0


def test_response_flags_per_edge_from_both_sides(access_dir: Path) -> None:
    flags = response_flags(access_dir, SERVICE_OF)
    assert flags == {
        "frontend→catalog": {"FI": 3, "URX": 1},
        "frontend→pricing": {"DI": 1, "UT": 1},
        "ingress→frontend": {},
        "unknown→catalog": {"UC": 1},
    }
    summary = summarize_responses(access_dir, SERVICE_OF)
    assert summary.codes == {
        "frontend→catalog": {"200": 1, "503": 1},  # the caller's side only: one per request
        "frontend→pricing": {"504": 1},  # a 504 stays a 504, not "5xx"
        "ingress→frontend": {"200": 2, "503": 1},
    }
    # Each side's flags apart: the caller's router (URX, DI+UT at frontend's outbound) and
    # the callee's fault filter (FI at catalog's inbound).
    assert summary.flags == {
        "frontend→catalog": {"URX": 1},
        "frontend→pricing": {"DI": 1, "UT": 1},
        "ingress→frontend": {},
        "unknown→catalog": {},
    }
    assert summary.callee_flags == {
        "frontend→catalog": {"FI": 3},
        "frontend→pricing": {},
        "ingress→frontend": {},
        "unknown→catalog": {"UC": 1},
    }


def test_istiods_cluster_stat_names_give_the_same_edges(access_dir: Path) -> None:
    """Under --mesh istio %UPSTREAM_CLUSTER% prints istiod's stat name, which ends with its
    tag delimiter (``outbound|8080||catalog;``): the edges are the same as without it."""
    plain = summarize_responses(access_dir, SERVICE_OF)
    for path in access_dir.glob("*.jsonl"):
        text = path.read_text().replace('"outbound|8080||catalog"', '"outbound|8080||catalog;"')
        path.write_text(text.replace('"outbound|8080||pricing"', '"outbound|8080||pricing;"'))
    assert ';"' in (access_dir / "frontend-0.jsonl").read_text()
    istio = summarize_responses(access_dir, SERVICE_OF)
    assert (istio.codes, istio.flags) == (plain.codes, plain.flags)
    assert [edge_of(e, SERVICE_OF) for e in read_access_log(access_dir / "frontend-0.jsonl")] == [
        "ingress→frontend",
        "frontend→catalog",
        "ingress→frontend",
        "frontend→catalog",
        "frontend→pricing",
    ]


def test_report_fields_are_all_the_analysis_reads(access_dir: Path, tmp_path: Path) -> None:
    """``mesh.accessLog: report`` keeps only REPORT_FIELDS: the same lines trimmed to them
    give the very same counts, flags and request paths."""
    whole = json.loads(entry("inbound", rid="r", start=T0))
    assert whole.keys() == ACCESS_LOG_FORMAT.keys()  # the fixture writes every field
    assert access_log_format("report").keys() == REPORT_FIELDS < ACCESS_LOG_FORMAT.keys()
    trimmed = tmp_path / "trimmed"
    trimmed.mkdir()
    for path in access_dir.glob("*.jsonl"):
        lines = []
        for line in path.read_text().splitlines(keepends=True):
            try:
                raw = json.loads(line)
            except json.JSONDecodeError:
                lines.append(line)  # the torn last line stays torn
                continue
            lines.append(json.dumps({k: v for k, v in raw.items() if k in REPORT_FIELDS}) + "\n")
        (trimmed / path.name).write_text("".join(lines))
    assert (trimmed / "ingress.jsonl").stat().st_size < (
        access_dir / "ingress.jsonl"
    ).stat().st_size
    phases = [PhaseWindow(name="fault", start=T0, end=T0 + 10)]
    samples = [sample(T0 + 0.999, rid="ok-retried"), sample(T0 + 1.999, status=503, rid="failed")]
    full = analyze_access_logs(access_dir, SERVICE_OF, samples, phases)
    lean = analyze_access_logs(trimmed, SERVICE_OF, samples, phases)
    assert lean == full
    assert full.paths and full.responses.codes


@pytest.mark.parametrize(("status", "label"), [(200, "2xx"), (503, "5xx"), (0, "0"), (404, "4xx")])
def test_status_class(status: int, label: str) -> None:
    assert status_class(status) == label


def test_request_paths_rebuild_hops_in_order(access_dir: Path) -> None:
    phases = [PhaseWindow(name="fault", start=T0, end=T0 + 10)]
    samples = [
        sample(T0 + 0.999, rid="ok-retried"),
        sample(T0 + 1.999, status=503, rid="failed"),
        sample(T0 + 2.999, rid="plain"),
        sample(T0 - 5, status=503, rid="before-the-run"),
    ]
    paths = request_paths(access_dir, samples, phases, failed=5, succeeded=1)
    assert [(p.rid, p.status, p.phase) for p in paths] == [
        ("ok-retried", 200, "fault"),  # the retried success beats the plain one
        ("failed", 503, "fault"),
    ]
    failed = paths[1]
    assert [(h.proxy, h.direction, h.flags) for h in failed.hops] == [
        ("ingress", "ingress", "-"),
        ("frontend-0", "inbound", "-"),
        ("frontend-0", "outbound", "URX"),
        ("catalog-0", "inbound", "FI"),
        ("catalog-1", "inbound", "FI"),
    ]
    assert failed.hops[2].attempts == 2
    assert [h.start for h in failed.hops] == sorted(h.start for h in failed.hops)


def test_request_paths_choose_few_and_varied_failures(tmp_path: Path) -> None:
    directory = tmp_path / "access"
    directory.mkdir()
    lines = [
        entry("ingress", rid=f"r{i}", start=T0 + i * 0.1, status=503 if i % 10 else 504)
        for i in range(200)
    ]
    (directory / "ingress.jsonl").write_text("\n".join(lines) + "\n")
    samples = [sample(T0 + i * 0.1, status=503 if i % 10 else 504, rid=f"r{i}") for i in range(200)]
    samples.append(sample(T0 + 3.05, status=0, rid="r-transport", err="ConnectionResetError"))
    phases = [PhaseWindow(name="only", start=T0, end=T0 + 30)]
    paths = request_paths(directory, samples, phases, failed=4, succeeded=2)
    assert len(paths) == 4
    assert {p.status for p in paths} == {503, 504, 0}  # one of each kind, then spread
    assert all(len(p.hops) == 1 for p in paths if p.status)
    assert next(p for p in paths if p.status == 0).hops == []  # never reached the ingress


def test_no_logs_no_paths(tmp_path: Path) -> None:
    assert response_flags(tmp_path / "missing", SERVICE_OF) == {}
    phases = [PhaseWindow(name="only", start=T0, end=T0 + 1)]
    paths = request_paths(tmp_path / "missing", [sample(T0, rid="x")], phases)
    assert paths == [RequestPath(rid="x", status=200, phase="only", hops=[])]
    assert request_paths(tmp_path / "missing", [sample(T0 + 2, rid="x")], phases) == []


# --------------------------------------------------------------------------- integration

SCENARIO = {
    "metadata": {"name": "observe-test"},
    "app": {"replicas": {"catalog": 2, "inventory": 1}},
    "mesh": {
        "destinations": {
            # Istio >= 1.24's default retries do not retry 503: ask for it, on another host
            "catalog": {
                "retries": {"attempts": 2, "retryOn": "503"},
                "outlierDetection": {
                    "consecutive5xxErrors": 3,
                    "interval": "1s",
                    "baseEjectionTime": "30s",
                    "maxEjectionPercent": 100,  # Envoy's default 10% of 2 hosts ejects none
                },
            },
        }
    },
    "load": {"rate": 1},
    "phases": [{"name": "only", "duration": "3s"}],
    "slos": [{"kind": "errorRate", "name": "errors", "max": "1%"}],
}


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[LocalDeployment]:
    scenario = Scenario.model_validate(SCENARIO)
    with LocalPlatform().deploy(scenario, tmp_path / "observe-run") as deployed:
        yield deployed


def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    """Poll ``predicate`` until it returns something truthy (Envoy flushes logs ~1/s)."""
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.integration
def test_sampler_and_access_logs_see_an_injected_abort(deployment: LocalDeployment) -> None:
    fault = HttpFault.model_validate(
        {
            "kind": "http",
            "phase": "only",
            "target": {"service": "catalog", "instances": 1},
            "abort": {"httpStatus": 503},
        }
    )
    catalog_0 = deployment.instances_of("catalog")[0]
    assert catalog_0.name == "catalog-0"
    injector = HttpFaultInjector(
        fault, "catalog-0-aborts", {"catalog-0": deployment.admin("catalog-0")}, "catalog"
    )
    t0 = time.time()
    sampler = MeshSampler.for_deployment(deployment, t0=t0, counters=EDGE_COUNTERS)
    statuses: list[int] = []
    with sampler:
        injector.inject()
        try:
            n = 0
            while time.time() - t0 < 3.2:
                n += 1
                status, _ = deployment.sandbox.http_get(
                    f"{deployment.ingress_url}/product/{n}", timeout=5
                )
                statuses.append(status)
        finally:
            assert injector.revert()
    t_end = time.time()
    timeline = sampler.timeline()

    # The sampler: a few samples about a second apart, every proxy answering.
    assert 4 <= len(timeline.t) <= 5  # ~1 s apart, plus the last one at stop()
    assert timeline.gaps == {} and timeline.scrape_errors == {}
    assert all(
        later - earlier > 0.5 for earlier, later in zip(timeline.t, timeline.t[1:-1], strict=False)
    )
    edges = {(e.caller, e.callee): e.counters for e in timeline.edges}
    retries = edges[("frontend", "catalog")]["upstream_rq_retry"]
    assert max(retries) > 0, edges
    assert sum(edges[("ingress", "frontend")]["upstream_rq_total"]) == len(statuses)
    aborts = timeline.injected["catalog-0"]["aborts"]
    assert sum(aborts) >= 3 and sum(aborts) <= sum(retries)
    assert "catalog-1" not in timeline.injected
    # three consecutive 503s eject catalog-0 from frontend's pool (outlier detection)
    assert "ejected" in timeline.endpoints["frontend-0→catalog-0"]
    assert set(timeline.endpoints["frontend-0→catalog-1"]) == {"healthy"}
    assert set(timeline.endpoints["ingress→frontend-0"]) == {"healthy"}
    assert statuses.count(200) == len(statuses), "retries on another host mask the aborts"

    # The access logs: FI at catalog-0's inbound sidecar, on the frontend → catalog edge.
    access = deployment.run_dir / "access"
    service_of = {inst.name: inst.service for inst in deployment.instances}

    def all_aborts_logged() -> dict[str, dict[str, int]] | None:
        flags = response_flags(access, service_of)
        return flags if flags.get("frontend→catalog", {}).get("FI") == sum(aborts) else None

    flags = wait_for(all_aborts_logged)
    assert flags, response_flags(access, service_of)
    assert flags["ingress→frontend"] == {}
    # Requests as the client saw them (rid from the ingress's log; the client is in the sandbox).
    samples = [
        Sample(t=e.start, ms=float(e.ms), status=e.status, ok=e.status == 200, err=None, rid=e.rid)
        for e in read_access_log(access / "ingress.jsonl")
        if e.path.startswith("/product/") and e.start >= t0 - 1
    ]
    window = PhaseWindow(name="only", start=t0 - 1, end=t_end + 1)
    paths = request_paths(access, samples, [window])
    assert paths and all(p.status == 200 for p in paths)
    saved = paths[0]
    hops = [(h.proxy, h.direction, h.flags) for h in saved.hops]
    assert ("catalog-0", "inbound", "FI") in hops, hops
    assert ("catalog-1", "inbound", "-") in hops, hops
    outbound = next(h for h in saved.hops if h.proxy == "frontend-0" and h.authority == "catalog")
    assert outbound.attempts >= 2 and outbound.status == 200
    assert saved.hops[0].proxy == "ingress"
    assert [h.proxy for h in saved.hops].count("ingress") == 1
