"""The game day's own logic, fast: keys and typed commands, the live per-second numbers
and provisional SLOs, the OpenMetrics text served over real HTTP and read back with
prometheus_client's parser, the report's operator actions, and the CLI's refusal to run
without a terminal. The terminal itself is driven through tmux in test_gameday_console.py.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from journals import new_journal, phase_windows
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from harness.control import (
    EndPhase,
    ExtendPhase,
    FaultView,
    Halt,
    InjectFault,
    Note,
    RevertFault,
    RunView,
)
from harness.errors import ExitCode
from harness.gameday.keys import KeyReader, parse_command
from harness.gameday.metrics import CONTENT_TYPE, MetricsServer, render_openmetrics
from harness.journal import FaultEntry, OperatorAction
from harness.load.driver import Sample
from harness.observe.live import LiveLoad, LiveSnapshot
from harness.report import render_report
from harness.scenario import load_scenario_text

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = (Path(__file__).parent / "data" / "gameday.yaml").read_text()
FAULTS = (
    FaultView("catalog-aborts", "http", "fault", "pending"),
    FaultView("pricing-pause", "pause", "fault", "active", "operator"),
)


# --------------------------------------------------------------------------- keys


def test_keys_make_commands() -> None:
    keys = KeyReader(extend_step_s=15.0)
    assert keys.feed("1", FAULTS) == InjectFault("catalog-aborts")
    assert keys.feed("2", FAULTS) == RevertFault("pricing-pause")  # active: the key reverts
    assert keys.feed("e", FAULTS) == ExtendPhase(15.0)
    assert keys.feed("x", FAULTS) == EndPhase()
    assert keys.feed("h", FAULTS) == Halt("halted by the operator")
    assert keys.feed("3", FAULTS) is None and "no fault 3" in keys.message
    assert keys.feed("q", FAULTS) is None  # unbound


def test_a_note_is_typed_edited_and_sent_with_enter() -> None:
    keys = KeyReader()
    assert keys.feed("n", FAULTS) is None and keys.line == "note "
    for key in "latency ok?\x7f!":
        assert keys.feed(key, FAULTS) is None
    assert keys.feed("h", FAULTS) is None  # while typing, h is a letter, not a halt
    assert keys.feed("\r", FAULTS) == Note("latency ok!h")
    assert keys.line is None
    keys.feed("n", FAULTS)
    keys.feed("\x1b", FAULTS)  # Esc cancels
    assert keys.line is None and keys.message == "cancelled"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("inject 1", InjectFault("catalog-aborts")),
        ("inject catalog-aborts", InjectFault("catalog-aborts")),
        ("revert pricing-pause", RevertFault("pricing-pause")),
        ("extend 1m", ExtendPhase(60.0)),
        ("extend", ExtendPhase(30.0)),
        ("end", EndPhase()),
        ("halt db on fire", Halt("db on fire")),
        ("note  two  spaces ", Note("two  spaces")),
    ],
)
def test_typed_commands(text: str, expected: object) -> None:
    assert parse_command(text, FAULTS) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("inject nope", "no fault 'nope'; faults: catalog-aborts, pricing-pause"),
        ("inject 9", "no fault '9'"),
        ("extend 30", "is not a duration"),
        ("note", "nothing to note"),
        ("reboot", "unknown command 'reboot'"),
    ],
)
def test_bad_typed_commands_say_why(text: str, says: str) -> None:
    result = parse_command(text, FAULTS)
    assert isinstance(result, str) and says in result


# --------------------------------------------------------------------------- live numbers


def sample(t: float, ms: float, ok: bool = True, intended: float | None = None) -> Sample:
    return Sample(t=t, ms=ms, status=200 if ok else 503, ok=ok, err=None, rid="", intended=intended)


def test_live_seconds_count_offered_by_schedule_and_achieved_by_completion() -> None:
    live = LiveLoad(load_scenario_text(SCENARIO, "gameday.yaml"))
    live.add(
        [
            sample(100.1, 10.0),
            sample(100.5, 20.0, ok=False),
            # scheduled in second 100, started late and done in 102: a stall
            sample(101.9, 300.0, intended=100.9),
            sample(101.2, 30.0),
        ]
    )
    view = RunView(run_id="r", phase="baseline", phase_start=100.0, phase_end=200.0)
    snapshot = live.update(view, now=104.5)
    by_t = {s.t: s for s in snapshot.seconds}
    assert [(by_t[t].offered, by_t[t].achieved, by_t[t].errors) for t in (100, 101, 102)] == [
        (3, 2, 1),
        (1, 1, 0),
        (0, 1, 0),
    ]
    assert by_t[102].p99_ms == pytest.approx(1300.0)  # from its scheduled start
    assert 103 not in by_t  # not settled yet at 104.5
    assert (snapshot.requests_total, snapshot.errors_total) == (4, 1)


def test_live_slos_are_the_judges_verdicts_on_the_data_so_far() -> None:
    live = LiveLoad(load_scenario_text(SCENARIO, "gameday.yaml"))
    live.add([sample(100.0 + i / 10, 5.0, ok=i % 2 == 0) for i in range(400)])  # 50% errors
    view = RunView(run_id="r", phase="baseline", phase_start=100.0, phase_end=145.0)
    snapshot = live.update(view, now=141.0)
    verdicts = {(r.slo, r.phase): r for r in snapshot.slos}
    assert verdicts[("e2e-error-rate", "baseline")].verdict == "FAIL"
    assert verdicts[("e2e-error-rate", "baseline")].measured == pytest.approx(0.5)
    assert verdicts[("e2e-error-rate", "baseline")].n == 400
    assert ("p99-latency", "baseline") in verdicts
    assert all(r.phase == "baseline" for r in snapshot.slos)  # the fault phase has not run


# --------------------------------------------------------------------------- metrics


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"] == CONTENT_TYPE
        text = response.read().decode("utf-8")
    assert text.endswith("\n# EOF\n")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_endpoint_serves_parseable_openmetrics_that_moves() -> None:
    scenario = load_scenario_text(SCENARIO, "gameday.yaml")
    live = LiveLoad(scenario)
    state = {}
    state["view"] = RunView(
        run_id='odd "run" \\ id',
        phase="baseline",
        phase_start=100.0,
        phase_end=1e12,
        faults=(FaultView("catalog-aborts", "http", "fault", "pending"),),
    )
    server = MetricsServer(
        lambda: render_openmetrics(state["view"], live.snapshot, ("baseline", "fault"), "small")
    )
    try:
        assert server.url.startswith("http://127.0.0.1:")
        first = scrape(server.url)
        assert first[("harness_requests_total", ())] == 0
        fault = ("harness_fault_active", (("fault", "catalog-aborts"), ("kind", "http")))
        assert first[fault] == 0
        run_info = ("harness_run_info", (("run_id", 'odd "run" \\ id'), ("scenario", "small")))
        assert first[run_info] == 1  # escaped and read back intact
        live.add([sample(100.2, 4.0), sample(100.4, 8.0, ok=False)])
        live.update(state["view"], now=103.0)
        state["view"] = RunView(
            run_id="r",
            phase="baseline",
            phase_start=100.0,
            phase_end=1e12,
            faults=(FaultView("catalog-aborts", "http", "fault", "active", "operator"),),
        )
        second = scrape(server.url)
        assert second[("harness_requests_total", ())] == 2
        assert second[("harness_request_errors_total", ())] == 1
        assert second[fault] == 1
        assert second[("harness_offered_rate", ())] == 0  # the last settled second: 101
        assert second[("harness_phase", (("harness_phase", "baseline"),))] == 1
        assert second[("harness_phase", (("harness_phase", "fault"),))] == 0
        verdict = (
            "harness_slo_verdict",
            (("harness_slo_verdict", "FAIL"), ("phase", "baseline"), ("slo", "e2e-error-rate")),
        )
        assert verdict in second
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(server.url.replace("/metrics", "/other"), timeout=10)
        assert error.value.code == 404
        error.value.close()
    finally:
        server.close()


def test_latency_gauges_are_absent_without_data() -> None:
    text = render_openmetrics(RunView(), LiveSnapshot(), (), "s")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["harness_latency_p99_seconds"].samples == []
    assert families["harness_latency_p99_seconds"].unit == "seconds"


# --------------------------------------------------------------------------- report and CLI


def test_the_report_lists_and_draws_operator_actions() -> None:
    phases = phase_windows(1000.0, baseline=20)
    journal = new_journal(
        phases=phases,
        load_started_at=1000.0,
        status="interrupted",
        faults=[
            FaultEntry(
                name="catalog-aborts",
                kind="http",
                phase="baseline",
                targets=["catalog-0"],
                injected_at=1005.0,
                reverted_at=1012.0,
                revert_verified=True,
                trigger="operator",
            )
        ],
        actions=[
            OperatorAction(at=1005.0, kind="inject", phase="baseline", fault="catalog-aborts"),
            OperatorAction(at=1008.0, kind="note", phase="baseline", text="<b>look</b>"),
            OperatorAction(at=1009.0, kind="extend", phase="baseline", seconds=5, error="no"),
            OperatorAction(at=1012.0, kind="halt", phase="baseline", text="enough"),
        ],
    )
    html = render_report(journal)
    assert 'id="actions"' in html and "(by hand)" in html
    assert "&lt;b&gt;look&lt;/b&gt;" in html  # escaped
    assert "refused: no" in html
    assert "HALT: every fault reverted" in html


def test_gameday_needs_a_terminal(tmp_path: Path) -> None:
    scenario = tmp_path / "g.yaml"
    scenario.write_text(SCENARIO)
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "gameday", str(scenario), "--reports", str(tmp_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == ExitCode.ERROR
    assert "needs a terminal" in done.stderr
    assert list(tmp_path.iterdir()) == [scenario]  # nothing started, nothing written


def test_gameday_refuses_a_bad_duration(tmp_path: Path) -> None:
    scenario = tmp_path / "g.yaml"
    scenario.write_text(SCENARIO)
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "gameday", str(scenario), "--max-extend", "10"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == ExitCode.ERROR
    assert "--max-extend" in done.stderr and "not a duration" in done.stderr
