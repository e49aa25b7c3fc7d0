"""The load layer (``harness.load``): the driver in process, Locust out of process.

The integration tests run the real Locust against a tiny threaded HTTP server on 127.0.0.1
that records every ``x-request-id`` and answers 503 for the ids divisible by
``FAIL_EVERY`` (200 otherwise), so each sample can be checked against what the server
actually saw and answered. Load is bounded: a few seconds at 30 req/s, loopback only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import math
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import ExitCode, LoadError
from harness.load import (
    CPU_SATURATION,
    LATE_MS,
    LOCUSTFILE,
    MAX_TOTAL_IN_FLIGHT,
    LoadPlan,
    Sample,
    SampleTail,
    generator_warnings,
    locust_command,
    locust_environment,
    read_samples,
    run_load,
    summarize,
)
from harness.load.sample_lines import parse_block
from harness.load.samples import rid_text
from harness.pytest_plugin import ScenarioOutcome
from harness.report import render_report

ROOT = Path(__file__).resolve().parents[1]
FAIL_EVERY = 5
DEADLINE_S = 30.0  # generous: a busy 2-core machine may be slow to start Locust


# ---------------------------------------------------------------- target server


@dataclass
class TargetServer:
    """Answers ``GET /product/<id>``: 503 when ``id % fail_every == 0``, else 200.

    ``seen`` maps each ``x-request-id`` to the statuses answered for it (a list, so a
    repeated id shows up as a list longer than one).
    """

    fail_every: int = FAIL_EVERY
    seen: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, path: str, request_id: str) -> int:
        try:
            item = int(path.rsplit("/", 1)[-1])
        except ValueError:
            status = 404
        else:
            status = 503 if item % self.fail_every == 0 else 200
        with self.lock:
            self.seen.setdefault(request_id, []).append(status)
        return status

    def statuses(self) -> dict[str, list[int]]:
        with self.lock:
            return {rid: list(statuses) for rid, statuses in self.seen.items()}


@contextlib.contextmanager
def serving(server: ThreadingHTTPServer, name: str) -> Iterator[None]:
    """Serve on a thread of its own for the block; shut down and joined afterwards."""
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def target() -> Iterator[TargetServer]:
    state = TargetServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = state.answer(self.path, self.headers.get("x-request-id", ""))
            body = b'{"ok":true}' if status == 200 else b'{"ok":false}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    with serving(server, "target-server"):
        yield state


def plan_for(
    target: TargetServer | StallingServer, samples_path: Path, **overrides: object
) -> LoadPlan:
    settings: dict[str, object] = {
        "host": target.url,
        "rate": 30.0,
        "users": 6,
        "run_time_s": 4.0,
        "request_timeout_s": 2.0,
        "samples_path": samples_path,
        "seed": 7,
    }
    settings.update(overrides)
    return LoadPlan(**settings)  # type: ignore[arg-type]


def sample_line(sample: Sample) -> str:
    """A sample as the locustfile writes it."""
    return json.dumps(asdict(sample), separators=(",", ":")) + "\n"


def make_sample(
    t: float,
    *,
    status: int = 200,
    ms: float = 2.5,
    rid: str = "r",
    intended: float | None = None,
) -> Sample:
    ok = 200 <= status < 300
    err = None if ok else f"HTTP {status}"
    return Sample(t=t, ms=ms, status=status, ok=ok, err=err, rid=rid, intended=intended)


# ---------------------------------------------------------------- isolation from locust


def test_importing_harness_load_does_not_import_locust_or_gevent() -> None:
    import harness.load  # noqa: F401

    assert "locust" not in sys.modules
    code = (
        "import sys, harness.load, harness.load.driver\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('locust', 'gevent'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"importing harness.load imported: {result.stdout}"


def test_cpu_warning_markers_match_the_installed_locust_source() -> None:
    """generator_warnings looks for Locust's own words; fail loudly if an upgrade changed them."""
    spec = importlib.util.find_spec("locust")  # finds the package without importing it
    assert spec is not None and spec.submodule_search_locations
    source = (Path(next(iter(spec.submodule_search_locations))) / "runners.py").read_text()
    for marker in (
        "CPU usage above",
        "CPU usage was too high at some point during the test",
        "CPU usage threshold was exceeded on workers",
    ):
        assert marker in source


# ---------------------------------------------------------------- plan and command


def test_locust_command_builds_a_headless_bounded_run(tmp_path: Path) -> None:
    plan = LoadPlan(
        host="http://127.0.0.1:8080",
        rate=25,
        users=5,
        run_time_s=4.2,
        request_timeout_s=1.5,
        samples_path=tmp_path / "s.jsonl",
        path_template="/catalog/{id}",
        seed=3,
    )
    argv, env = locust_command(plan)

    assert argv[:5] == [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
    assert LOCUSTFILE.is_file()

    def option(name: str) -> str:
        return argv[argv.index(name) + 1]

    assert "--headless" in argv and "--only-summary" in argv
    assert option("--users") == "5"
    assert option("--spawn-rate") == "5"
    assert option("--host") == "http://127.0.0.1:8080"
    assert option("--run-time") == "5s"  # rounded up: Locust takes whole seconds
    assert option("--stop-timeout") == "3"  # in-flight requests (<= 1.5 s) finish and count
    assert option("--exit-code-on-error") == "0"  # failed requests are data, not a crash
    assert env["HARNESS_LOAD_RATE"] == "25.0"
    assert env["HARNESS_LOAD_USERS"] == "5"
    assert env["HARNESS_SAMPLES_PATH"] == str(tmp_path / "s.jsonl")
    assert env["HARNESS_REQUEST_TIMEOUT"] == "1.5"
    assert env["HARNESS_LOAD_PATH_TEMPLATE"] == "/catalog/{id}"
    assert env["HARNESS_LOAD_SEED"] == "3"


def test_locust_environment_drops_stray_locust_settings(tmp_path: Path) -> None:
    plan = LoadPlan("http://127.0.0.1:1", 1, 1, 1, 1, tmp_path / "s.jsonl")
    env = locust_environment(plan, {"PATH": "/bin", "LOCUST_PROCESSES": "4", "LOCUST_HTML": "x"})
    assert env["PATH"] == "/bin"
    assert not any(key.startswith("LOCUST_") for key in env)
    assert env["HARNESS_LOAD_USERS"] == "1"


@pytest.mark.parametrize(
    ("overrides", "field_name"),
    [
        ({"host": "127.0.0.1:8080"}, "host"),
        ({"host": "http://127.0.0.1:8080/api"}, "host"),
        ({"rate": 0}, "rate"),
        ({"rate": float("nan")}, "rate"),
        ({"users": 0}, "users"),
        ({"users": 2.5}, "users"),
        ({"run_time_s": -1}, "run_time_s"),
        ({"request_timeout_s": 0}, "request_timeout_s"),
        ({"path_template": "product/{id}"}, "path_template"),
        ({"path_template": "/product/{sku}"}, "path_template"),
    ],
)
def test_load_plan_rejects_bad_values_and_names_the_field(
    tmp_path: Path, overrides: dict[str, object], field_name: str
) -> None:
    settings: dict[str, object] = {
        "host": "http://127.0.0.1:8080",
        "rate": 10,
        "users": 2,
        "run_time_s": 5,
        "request_timeout_s": 1,
        "samples_path": tmp_path / "s.jsonl",
    }
    settings.update(overrides)
    with pytest.raises(ValueError, match=field_name):
        LoadPlan(**settings)  # type: ignore[arg-type]


# ---------------------------------------------------------------- reading samples


def test_read_samples_skips_a_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    whole = [make_sample(100.0, rid="a"), make_sample(100.1, status=503, rid="b")]
    cut = sample_line(make_sample(100.2, rid="c"))[:25]
    path.write_text("".join(sample_line(s) for s in whole) + cut)

    assert read_samples(path) == whole


def test_read_samples_accepts_a_complete_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    sample = make_sample(5.0)
    path.write_text(sample_line(sample).rstrip("\n"))
    assert read_samples(path) == [sample]


def test_read_samples_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_samples(tmp_path / "never-written.jsonl") == []


def test_read_samples_names_file_and_line_of_a_corrupt_line(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    good = sample_line(make_sample(1.0))
    path.write_text(good + '{"t": 2.0, "ms": "slow"}\n' + good)
    with pytest.raises(LoadError, match=r"samples\.jsonl:2: a sample needs exactly the keys"):
        read_samples(path)


def test_read_samples_rejects_a_field_of_the_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    line = json.dumps({"t": 1.0, "ms": 2.0, "status": "200", "ok": True, "err": None, "rid": ""})
    path.write_text(line + "\n")
    with pytest.raises(LoadError, match=r"samples\.jsonl:1: a sample field has the wrong type"):
        read_samples(path)


@given(
    t=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    ms=st.floats(min_value=0, max_value=1e7, allow_nan=False),
    status=st.integers(min_value=0, max_value=599),
    err=st.none() | st.text(max_size=200),
    rid=st.text(max_size=40),
)
def test_a_sample_survives_the_json_line_round_trip(
    t: float, ms: float, status: int, err: str | None, rid: str
) -> None:
    sample = Sample(t=t, ms=ms, status=status, ok=err is None, err=err, rid=rid)
    assert Sample.from_line(sample_line(sample), "here") == sample


def test_sample_tail_returns_only_completed_lines(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    first, second, third = (make_sample(float(i), rid=str(i)) for i in range(3))
    with SampleTail(path) as tail:
        assert tail.poll() == []  # the file does not exist yet
        line = sample_line(second)
        with path.open("a") as out:
            out.write(sample_line(first) + line[:10])
            out.flush()
            assert tail.poll() == [first]
            assert tail.poll() == []
            out.write(line[10:] + sample_line(third))
            out.flush()
            assert tail.poll() == [second, third]
            assert tail.poll() == []


# ---------------------------------------------------------------- summary


def test_summarize_counts_the_half_open_window_and_keeps_up() -> None:
    samples = [make_sample(10 + i * 0.1, status=503 if i % 4 == 0 else 200) for i in range(100)]
    summary = summarize(samples, start=10.0, end=15.0, target_rate=10.0)

    assert summary.count == 50  # t = 10.0 .. 14.9; 15.0 is outside [10, 15)
    assert summary.ok_count == 37  # i = 0, 4, ..., 48 failed
    assert summary.error_count == 13
    assert summary.achieved_rate == pytest.approx(10.0)
    assert summary.achieved_ratio == pytest.approx(1.0)
    assert summary.offered_rate == 10.0
    assert not summary.coordinated_omission
    assert summary.message is None


def test_summarize_flags_coordinated_omission_and_says_how_many_users() -> None:
    samples = [make_sample(float(i) / 5, ms=400.0) for i in range(50)]  # 5 req/s, 400 ms
    summary = summarize(samples, start=0.0, end=10.0, target_rate=20.0)

    assert summary.coordinated_omission
    assert summary.achieved_rate == pytest.approx(5.0)
    assert summary.message is not None
    assert "25% of the offered 20 req/s" in summary.message
    assert "at least 12 users" in summary.message  # 20 req/s x 0.4 s x 1.5


def test_summarize_flags_an_empty_window() -> None:
    summary = summarize([make_sample(100.0)], start=0.0, end=10.0, target_rate=5.0)
    assert summary.count == 0
    assert summary.coordinated_omission
    assert summary.message is not None and "did Locust start" in summary.message


def test_summarize_at_exactly_ninety_percent_is_not_flagged() -> None:
    samples = [make_sample(i / 9) for i in range(90)]  # 9 req/s for 10 s
    assert not summarize(samples, 0.0, 10.0, target_rate=10.0).coordinated_omission


def test_summarize_rejects_an_empty_interval() -> None:
    with pytest.raises(ValueError, match="end > start"):
        summarize([], start=5.0, end=5.0, target_rate=1.0)


# ---------------------------------------------------------------- generator warnings

_CPU_RUNNING = (
    "[2025-01-01 10:00:00,000] box/WARNING/root: CPU usage above 90%! This may constrain "
    "your throughput and may even give inconsistent response time measurements! See "
    "https://docs.locust.io/en/stable/running-distributed.html for how to distribute the "
    "load over multiple CPU cores or machines"
)
_CPU_AT_END = (
    "[2025-01-01 10:00:09,000] box/WARNING/locust.runners: CPU usage was too high at some "
    "point during the test! See https://docs.locust.io/en/stable/running-distributed.html "
    "for how to distribute the load over multiple CPU cores or machines"
)


def test_generator_warnings_reports_cpu_saturation_once_and_first() -> None:
    stderr = "\n".join(
        [
            "[2025-01-01 10:00:00,000] box/INFO/locust.main: Run time limit set to 4 seconds",
            "[2025-01-01 10:00:01,000] box/ERROR/locust.user.task: boom in a task",
            _CPU_RUNNING,
            _CPU_AT_END,
            "Type     Name    # reqs",
        ]
    )
    found = generator_warnings(stderr)
    assert len(found) == 2
    assert found[0].startswith(CPU_SATURATION)
    assert found[1] == "locust error (locust.user.task): boom in a task"


def test_generator_warnings_keeps_other_warnings_without_repeats() -> None:
    spawn = (
        "[2025-01-01 10:00:00,000] box/WARNING/locust.runners: Your selected spawn rate is "
        "very high (>100), and this is known to sometimes cause issues. Do you really need "
        "to ramp up that fast?"
    )
    stderr = "\n".join([spawn, spawn, "Traceback (most recent call last):", '  File "x"'])
    found = generator_warnings(stderr)
    assert found == [
        "locust warning (locust.runners): Your selected spawn rate is very high (>100), and "
        "this is known to sometimes cause issues. Do you really need to ramp up that fast?",
        "locust printed a Python traceback (see its stderr)",
    ]


def test_generator_warnings_of_a_quiet_run_is_empty() -> None:
    assert generator_warnings("") == []
    assert generator_warnings("Response time percentiles (approximated)\n") == []


# ---------------------------------------------------------------- real Locust


@pytest.mark.integration
def test_run_load_offers_the_target_rate_and_records_every_request(
    target: TargetServer, tmp_path: Path
) -> None:
    plan = plan_for(target, tmp_path / "samples.jsonl")
    result = run_load(plan, timeout=DEADLINE_S + plan.run_time_s)

    assert result.exit_code == 0, result.stderr[-2000:]
    samples = list(result.samples)
    assert samples == read_samples(plan.samples_path)
    assert len(samples) >= 20

    for sample in samples:
        assert result.started_at <= sample.t <= result.ended_at
        assert 0 < sample.ms < plan.request_timeout_s * 1000
        assert sample.status in (200, 503)
        assert sample.ok is (sample.status == 200)
        assert sample.err == (None if sample.ok else "HTTP 503")
    assert any(not sample.ok for sample in samples), "no id divisible by 5 was requested"

    # Every request reached the server once, under the id its sample carries, and got the
    # status the sample records; nothing the server answered is missing from the samples.
    seen = target.statuses()
    assert all(len(statuses) == 1 for statuses in seen.values()), "x-request-id reused"
    assert {s.rid: s.status for s in samples} == {rid: st[0] for rid, st in seen.items()}
    assert len({s.rid for s in samples}) == len(samples)

    first = min(sample.t for sample in samples)
    window = plan.run_time_s - 0.5  # the last half second may be cut by the stop
    summary = summarize(samples, first, first + window, target_rate=plan.rate)
    assert 0.6 <= summary.achieved_ratio <= 1.15, summary


@pytest.mark.integration
def test_sigterm_mid_run_leaves_only_complete_samples(target: TargetServer, tmp_path: Path) -> None:
    plan = plan_for(target, tmp_path / "samples.jsonl", run_time_s=60.0)
    argv, _ = locust_command(plan)
    process = subprocess.Popen(
        argv,
        cwd=tmp_path,
        env=locust_environment(plan),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        live: list[Sample] = []
        with SampleTail(plan.samples_path) as tail:
            deadline = time.monotonic() + DEADLINE_S
            while len(live) < 20 and time.monotonic() < deadline and process.poll() is None:
                live.extend(tail.poll())
                time.sleep(0.1)
        assert len(live) >= 20, "Locust wrote too few samples before the deadline"

        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=plan.stop_timeout_s + DEADLINE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    data = plan.samples_path.read_bytes()
    assert data.endswith(b"\n"), "the last sample line was cut short"
    samples = read_samples(plan.samples_path)
    assert len(samples) == data.count(b"\n")
    assert samples[: len(live)] == live  # what a live reader saw stays the record's prefix
    assert {s.rid for s in samples} == set(target.statuses()), "a request was not recorded"


@pytest.mark.integration
def test_run_load_past_its_timeout_stops_locust_and_keeps_the_samples(
    target: TargetServer, tmp_path: Path
) -> None:
    plan = plan_for(target, tmp_path / "samples.jsonl", run_time_s=60.0)
    with pytest.raises(LoadError, match=r"did not finish within 5 s \(run time 60 s"):
        run_load(plan, timeout=5.0)

    data = plan.samples_path.read_bytes()
    assert data.endswith(b"\n")  # SIGTERM first: Locust flushed whole lines
    assert read_samples(plan.samples_path)
    time.sleep(1.0)
    assert plan.samples_path.read_bytes() == data, "Locust still sends load after the timeout"


@pytest.mark.integration
def test_run_load_explains_a_locust_that_cannot_start(
    target: TargetServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken_locustfile.py"
    broken.write_text("raise RuntimeError('HARNESS_LOAD_RATE is not set: a stand-in failure')\n")
    monkeypatch.setattr("harness.load.driver.LOCUSTFILE", broken)
    plan = plan_for(target, tmp_path / "samples.jsonl", run_time_s=2.0)

    with pytest.raises(LoadError, match=r"exited with code \d+ before recording a request") as info:
        run_load(plan, timeout=DEADLINE_S)
    assert "a stand-in failure" in str(info.value)
    assert target.statuses() == {}


def test_run_load_refuses_to_mix_runs_in_one_samples_file(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_text(sample_line(make_sample(1.0)))
    plan = LoadPlan("http://127.0.0.1:9", 1, 1, 1, 1, path)
    with pytest.raises(LoadError, match=r"already holds samples.*fresh samples_path"):
        run_load(plan)


# ---------------------------------------------------------------- open loop: samples


def test_a_sample_without_an_intended_start_reads_as_on_time() -> None:
    line = '{"t":10.0,"ms":4.0,"status":200,"ok":true,"err":null,"rid":"a"}'  # older format
    sample = Sample.from_line(line, "old")
    assert sample.intended is None
    assert sample.intended_start == 10.0
    assert sample.lag_ms == 0.0
    assert sample.latency_ms == 4.0


def test_corrected_latency_counts_from_the_intended_start() -> None:
    line = '{"t":10.5,"ms":4.0,"status":200,"ok":true,"err":null,"rid":"a","intended":10.0}'
    sample = Sample.from_line(line, "new")
    assert sample.lag_ms == pytest.approx(500.0)
    assert sample.latency_ms == pytest.approx(504.0)  # corrected
    assert sample.ms == 4.0  # raw service time kept beside it
    early = make_sample(10.0, ms=4.0, intended=10.001)  # a timer that fired a hair early
    assert early.lag_ms == 0.0 and early.latency_ms == 4.0


def test_read_samples_rejects_an_intended_start_that_is_not_a_number(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    fields = {"t": 1.0, "ms": 2.0, "status": 200, "ok": True, "err": None, "rid": ""}
    path.write_text(json.dumps({**fields, "intended": "soon"}) + "\n")
    with pytest.raises(LoadError, match=r"samples\.jsonl:1: a sample field has the wrong type"):
        read_samples(path)
    path.write_text(json.dumps({**fields, "extra": 1}) + "\n")
    with pytest.raises(LoadError, match=r"optionally \['intended', 'name'\]\), found"):
        read_samples(path)


@given(
    t=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    lag=st.floats(min_value=0, max_value=100, allow_nan=False),
)
def test_a_scheduled_sample_survives_the_json_line_round_trip(t: float, lag: float) -> None:
    sample = make_sample(t + lag, intended=t)
    assert Sample.from_line(sample_line(sample), "here") == sample


# ---------------------------------------------------------------- open loop: summary


def test_summarize_flags_a_slipped_schedule_without_calling_it_omission() -> None:
    on_time = [make_sample(10 + i * 0.1, intended=10 + i * 0.1) for i in range(90)]
    late = [make_sample(19.0 + i * 0.01, intended=18.0 + i * 0.01) for i in range(10)]
    summary = summarize(on_time + late, start=10.0, end=20.0, target_rate=10.0)

    assert summary.late == 10
    assert summary.max_lag_ms == pytest.approx(1000.0)
    assert summary.schedule_slipped
    assert not summary.coordinated_omission  # corrected latencies are not optimistic
    assert summary.message is not None
    assert "schedule slipped: 10 of 100 requests (10.0%)" in summary.message
    assert f"more than {LATE_MS:g} ms late (worst 1000 ms)" in summary.message


def test_summarize_in_concurrency_mode_flags_nothing() -> None:
    samples = [make_sample(10 + i * 0.5, ms=400.0) for i in range(4)]  # slow and few
    summary = summarize(samples, start=10.0, end=20.0, target_rate=None)
    assert summary.offered_rate is None
    assert summary.achieved_ratio is None
    assert not summary.coordinated_omission and not summary.schedule_slipped
    assert summary.message is None


def test_summarize_keeps_the_closed_loop_warning_for_unscheduled_samples() -> None:
    samples = [make_sample(i * 0.5, ms=400.0) for i in range(20)]  # 2 req/s of 20 offered
    summary = summarize(samples, start=0.0, end=10.0, target_rate=20.0)
    assert summary.coordinated_omission
    assert summary.message is not None and "closed-loop" in summary.message


def test_an_open_loop_shortfall_with_on_time_starts_is_no_omission() -> None:
    samples = [make_sample(i * 0.2, intended=i * 0.2) for i in range(40)]  # 5 of 10 req/s
    summary = summarize(samples, start=0.0, end=10.0, target_rate=10.0)
    assert not summary.coordinated_omission and not summary.schedule_slipped
    assert summary.message is not None and "started on time" in summary.message


# ---------------------------------------------------------------- open loop: plan


def test_an_open_loop_user_may_have_every_request_of_a_timeout_in_flight(tmp_path: Path) -> None:
    plan = LoadPlan("http://127.0.0.1:1", 40.0, 8, 5, 2.0, tmp_path / "s.jsonl")
    # 5 req/s per user, each may last up to the 2 s timeout (+1 s of slack): 15, plus one
    assert plan.in_flight_per_user() == 16
    _, env = locust_command(plan)
    assert env["HARNESS_LOAD_MODE"] == "open"
    assert env["HARNESS_LOAD_MAX_IN_FLIGHT"] == "16"

    capped = LoadPlan("http://127.0.0.1:1", 2000.0, 4, 5, 30.0, tmp_path / "s.jsonl")
    assert capped.in_flight_per_user() * 4 <= MAX_TOTAL_IN_FLIGHT
    chosen = LoadPlan("http://127.0.0.1:1", 40.0, 8, 5, 2.0, tmp_path / "s", max_in_flight=1)
    assert chosen.in_flight_per_user() == 1


def test_a_concurrency_plan_has_users_and_no_rate(tmp_path: Path) -> None:
    plan = LoadPlan("http://127.0.0.1:1", None, 3, 5, 2.0, tmp_path / "s", mode="concurrency")
    _, env = locust_command(plan)
    assert env["HARNESS_LOAD_MODE"] == "concurrency"
    assert "HARNESS_LOAD_RATE" not in env
    assert env["HARNESS_LOAD_USERS"] == "3"
    assert plan.in_flight_per_user() == 1
    with pytest.raises(ValueError, match=r"rate must be None in concurrency mode"):
        LoadPlan("http://127.0.0.1:1", 10.0, 3, 5, 2.0, tmp_path / "s", mode="concurrency")
    with pytest.raises(ValueError, match=r"rate must be a positive number, got None"):
        LoadPlan("http://127.0.0.1:1", None, 3, 5, 2.0, tmp_path / "s")


@pytest.mark.parametrize(
    ("load", "message"),
    [
        ({"mode": "concurrency", "users": 3, "rate": 10}, "does not apply in concurrency mode"),
        ({"mode": "concurrency"}, "load.users is required in concurrency mode"),
        ({"users": 3}, "load.rate is required in open mode"),
        ({"rate": 1e6}, r"most one Locust process sustains.*load\.workers"),
        ({"mode": "closed", "rate": 5}, "mode"),
    ],
)
def test_the_load_model_explains_each_mode_s_fields(load: dict[str, object], message: str) -> None:
    from pydantic import ValidationError

    from harness.scenario.models import Load

    with pytest.raises(ValidationError, match=message):
        Load.model_validate(load)


def test_the_load_model_accepts_both_modes() -> None:
    from harness.scenario.models import Load

    assert Load.model_validate({"rate": 40}).mode == "open"
    assert Load.model_validate({"rate": 40}).effective_users() == 8
    concurrency = Load.model_validate({"mode": "concurrency", "users": 3})
    assert concurrency.rate is None and concurrency.effective_users() == 3


# ---------------------------------------------------------------- the locustfile's own logic


def locustfile_eval(tmp_path: Path, code: str) -> object:
    """Run ``code`` with the locustfile imported as ``lf`` in a child process (importing
    locust patches the interpreter with gevent, so never here); returns its JSON output."""
    script = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('lf', {str(LOCUSTFILE)!r})\n"
        "lf = importlib.util.module_from_spec(spec); spec.loader.exec_module(lf)\n"
        f"print(json.dumps({code}))\n"
    )
    env = {
        "HARNESS_LOAD_RATE": "10",
        "HARNESS_LOAD_USERS": "4",
        "HARNESS_SAMPLES_PATH": str(tmp_path / "unused.jsonl"),
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_the_users_schedules_interleave_into_one_even_schedule(tmp_path: Path) -> None:
    starts = locustfile_eval(
        tmp_path,
        "sorted(lf.Schedule(100.0, u, 4, 10.0).due(k) for u in range(4) for k in range(5))",
    )
    assert isinstance(starts, list)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert starts[0] == 100.0 and len(starts) == 20
    assert gaps == pytest.approx([0.1] * 19)  # one request every 1/rate s, no bunching

    # A user that starts late joins at its next slot; the slots before never existed.
    first = locustfile_eval(
        tmp_path,
        "[lf.Schedule(100.0, 1, 4, 10.0).first_slot(now) for now in (99.0, 100.1, 100.15, 101.3)]",
    )
    assert first == [0, 0, 1, 3]  # user 1's slots: 100.1, 100.5, 100.9, 101.3, ...


def test_the_locustfile_writes_lines_the_driver_reads(tmp_path: Path) -> None:
    lines = locustfile_eval(
        tmp_path,
        '[lf.sample_line(1.5, 2.25, 200, None, "r-1", 1.25),'
        ' lf.sample_line(3.0, 0.5, 0, \'TimeoutError: "x"\\n\\u00e9\', "", None)]',
    )
    assert isinstance(lines, list)
    first, second = (Sample.from_line(line, "child") for line in lines)
    assert first == Sample(t=1.5, ms=2.25, status=200, ok=True, err=None, rid="r-1", intended=1.25)
    assert second == Sample(
        t=3.0, ms=0.5, status=0, ok=False, err='TimeoutError: "x"\né', rid="", intended=None
    )


def test_the_locustfiles_lines_take_the_vectorised_reader(tmp_path: Path) -> None:
    """The real locustfile's layout is what ``sample_lines.parse_block`` reads (the slow
    ``json`` path would give the same values, only later): times to the microsecond."""
    lines = locustfile_eval(
        tmp_path,
        "[lf.sample_line(1764623456.1234567, 8.7607901, 200, None, lf.request_id(), 1764623456.12),"
        ' lf.sample_line(1764623457.5, 1200.25, 503, "HTTP 503", lf.request_id(), None)]',
    )
    assert isinstance(lines, list)
    fast = parse_block("".join(lines).encode())
    assert fast is not None
    assert fast["t"].tolist() == [1764623456.123457, 1764623457.5]
    assert fast["ms"].tolist() == [8.761, 1200.25]
    assert fast["intended"][0] == 1764623456.12 and np.isnan(fast["intended"][1])
    assert fast["err"] == [None, "HTTP 503"] and fast["status"].tolist() == [200, 503]
    assert [rid_text(key) for key in fast["rid"]] == [json.loads(x)["rid"] for x in lines]


# ---------------------------------------------------------------- real Locust: stalls


@dataclass
class StallingServer:
    """Answers 200 at once, except that every request arriving in ``[first + stall_at,
    first + stall_at + stall_s)`` (``first``: the first request's arrival) is held until
    the stall ends: a 2 s hang of the whole service, as a ``pause`` fault makes one.
    ``active`` counts the requests in progress; ``peak`` is its maximum."""

    stall_at: float
    stall_s: float
    first: float | None = None
    active: int = 0
    peak: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stall(self) -> tuple[float, float]:
        assert self.first is not None, "no request reached the server"
        return self.first + self.stall_at, self.first + self.stall_at + self.stall_s

    def hold(self) -> None:
        now = time.time()
        with self.lock:
            if self.first is None:
                self.first = now
            self.active += 1
            self.peak = max(self.peak, self.active)
        begin, end = self.stall
        if begin <= now < end:
            time.sleep(end - now)

    def done(self) -> None:
        with self.lock:
            self.active -= 1


@contextlib.contextmanager
def stalling_server(
    stall_at: float, stall_s: float, delay_s: float = 0.0
) -> Iterator[StallingServer]:
    state = StallingServer(stall_at=stall_at, stall_s=stall_s)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Envoy and the app speak it

        def do_GET(self) -> None:
            state.hold()
            try:
                if delay_s:
                    time.sleep(delay_s)
                body = b'{"ok":true}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            finally:
                state.done()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    with serving(server, "stalling-server"):
        yield state


def in_window(samples: list[Sample], start: float, end: float) -> list[Sample]:
    return [s for s in samples if start <= s.intended_start < end]


@pytest.mark.integration
def test_a_2s_stall_in_a_20s_phase_fails_p95_with_corrected_latency(tmp_path: Path) -> None:
    """Issue 8, point 1, as a test: open-loop users at 50 req/s through a 2 s stall in the
    middle of a 20 s phase. Requests due during the stall wait up to 2 s, so the corrected
    p95 is about 1 s and a 500 ms p95 SLO FAILs. Beside it, the same load with one request
    in flight per user (wrk2's connections, the closed-loop view): its raw service time
    sees only the few requests that were out when the stall began and PASSes, while its
    corrected latency FAILs like the open-loop run's."""
    from harness.slo.verdict import Verdict, evaluate_latency

    with stalling_server(stall_at=11.0, stall_s=2.0) as server:
        runs: dict[str, LoadPlan] = {
            "open": plan_for(
                server,
                tmp_path / "open.jsonl",
                rate=50.0,
                users=5,
                run_time_s=26,
                request_timeout_s=5.0,  # the 2 s stall must not time out
            ),
            "one-in-flight": plan_for(
                server,
                tmp_path / "one.jsonl",
                rate=50.0,
                users=5,
                run_time_s=26,
                request_timeout_s=5.0,
                max_in_flight=1,
            ),
        }
        results: dict[str, list[Sample]] = {}

        def run(name: str) -> None:
            results[name] = list(run_load(runs[name], timeout=DEADLINE_S + 26).samples)

        threads = [threading.Thread(target=run, args=(name,)) for name in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stall_begin, _ = server.stall
    assert set(results) == set(runs), "a Locust run failed (see the thread's traceback)"
    phase = (stall_begin - 9.0, stall_begin + 11.0)  # 20 s, the stall in its middle

    def verdict(latencies_ms: list[float]) -> Verdict:
        seconds = [ms / 1000.0 for ms in latencies_ms]
        return evaluate_latency("p95", "fault", seconds, 0.95, 0.5, 0.95).verdict

    open_loop = in_window(results["open"], *phase)
    assert 800 <= len(open_loop) <= 1100  # 50 req/s for 20 s: the stall did not slow it
    assert all(s.ok for s in open_loop), {s.err for s in open_loop if not s.ok}
    corrected = sorted(s.latency_ms for s in open_loop)
    p95 = corrected[math.ceil(0.95 * len(corrected)) - 1]
    assert 700.0 <= p95 <= 1400.0, p95  # about 1 s: the average wait of a 2 s stall
    assert verdict(corrected) is Verdict.FAIL
    # The schedule held through the stall: requests were sent on time, not held back.
    sent_during = [s for s in open_loop if stall_begin <= s.t < stall_begin + 2.0]
    assert len(sent_during) >= 80  # ~100 due: sent while the server hung, not held back

    capped = in_window(results["one-in-flight"], *phase)
    assert 800 <= len(capped) <= 1100
    raw = [s.ms for s in capped if s.ok]
    assert verdict(raw) is Verdict.PASS  # what closed-loop timing would have reported
    assert verdict([s.latency_ms for s in capped if s.ok]) is Verdict.FAIL
    assert summarize(capped, *phase, target_rate=50.0).schedule_slipped


@pytest.mark.integration
def test_concurrency_mode_keeps_exactly_users_requests_in_flight(tmp_path: Path) -> None:
    with stalling_server(stall_at=1e9, stall_s=0.0, delay_s=0.05) as server:
        plan = plan_for(
            server, tmp_path / "s.jsonl", rate=None, users=3, run_time_s=4, mode="concurrency"
        )
        result = run_load(plan, timeout=DEADLINE_S + 4)
        peak = server.peak
    samples = list(result.samples)
    assert peak == 3  # three users, one request each, back to back
    assert all(s.intended is None and s.ok for s in samples)
    assert 30 <= len(samples) <= 3 * 4.0 / 0.05, len(samples)  # closed loop, <= 60 req/s
    assert not summarize(samples, samples[0].t, samples[-1].t, target_rate=None).message


@pytest.mark.integration
def test_transport_errors_are_status_0_with_a_short_reason(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port with nothing listening: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    plan = LoadPlan(f"http://127.0.0.1:{port}", 10.0, 2, 2, 1.0, tmp_path / "refused.jsonl")
    refused = run_load(plan, timeout=DEADLINE_S).samples
    assert refused and all(s.status == 0 and not s.ok for s in refused)
    assert {s.err for s in refused} == {"ConnectionRefusedError: [Errno 111] Connection refused"}

    with stalling_server(stall_at=0.0, stall_s=30.0) as server:  # hangs every request
        plan = plan_for(
            server, tmp_path / "hang.jsonl", rate=4.0, users=2, run_time_s=2, request_timeout_s=0.5
        )
        hung = run_load(plan, timeout=DEADLINE_S).samples
    assert hung and all(s.status == 0 and not s.ok for s in hung)
    assert all(s.err is not None and "Timeout" in s.err for s in hung), {s.err for s in hung}
    assert all(400 <= s.ms <= 1500 for s in hung)  # the 0.5 s timeout, not the 30 s hang


# ---------------------------------------------------------------- a pause, end to end


@pytest.mark.integration
@pytest.mark.slow
def test_a_pause_without_timeouts_fails_p99_and_the_report_shows_raw_beside_corrected(
    harness_run: Callable[..., ScenarioOutcome],
) -> None:
    """Issue 8's acceptance: a ``pause`` scenario's latency SLO FAILs with corrected
    latency, and the report shows the raw and the corrected p99 side by side. (Its positive
    twin, pause-instance-timeouts.yaml, PASSes in tests/test_scenarios.py.)"""
    outcome = harness_run(ROOT / "scenarios" / "pause-instance-timeouts-negative.yaml")
    assert outcome.exit_code == ExitCode.FAILED, outcome.summary
    journal = outcome.journal
    assert journal.faults and all(f.took_effect for f in journal.faults)
    verdicts = {(e.slo, e.phase): e.verdict for e in journal.slos}
    assert verdicts[("p99-latency", "fault")] == "FAIL"

    assert journal.load is not None and journal.load.mode == "open"
    fault = next(p for p in journal.load.phases if p.phase == "fault")
    assert fault.raw_latency is not None
    corrected, raw = fault.latency.p99_ms, fault.raw_latency.p99_ms
    assert corrected is not None and raw is not None
    assert corrected >= raw >= 500.0  # hung calls: the raw service time sees them too
    assert fault.achieved_rate >= 0.9 * 40.0  # the pause did not slow the load down

    html = render_report(journal)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "|", html))
    assert "p99 raw" in text
    assert f"{corrected:.0f} ms||{raw:.0f} ms" in text, "p99 and raw p99 side by side"


# ---------------------------------------------------------------- the report, from a journal


def test_the_report_shows_raw_beside_corrected_p99_and_renders_concurrency_mode() -> None:
    from test_report import synthetic_journal  # the report tests' 60 s journal

    from harness.journal import LatencySummary

    journal = synthetic_journal()
    assert journal.load is not None and journal.timeline is not None
    raw = LatencySummary(p50_ms=15.0, p95_ms=30.0, p99_ms=33.3, max_ms=43.0)
    phases = [p.model_copy(update={"raw_latency": raw}) for p in journal.load.phases]
    open_loop = journal.model_copy(
        update={"load": journal.load.model_copy(update={"phases": phases})}
    )
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "|", render_report(open_loop)))
    assert "p99 raw" in text and "open-loop schedule" in text
    assert "|40.0 ms||33.3 ms|" in text  # corrected p99, then raw p99, in each phase's row

    # Concurrency mode: no offered rate, so no offered line and no omission warning.
    no_rate = [
        p.model_copy(update={"offered_rate": None, "coordinated_omission": False, "message": None})
        for p in journal.load.phases
    ]
    concurrency = journal.model_copy(
        update={
            "load": journal.load.model_copy(
                update={"target_rate": None, "mode": "concurrency", "phases": no_rate}
            ),
            "timeline": journal.timeline.model_copy(update={"offered": []}),
        }
    )
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "|", render_report(concurrency)))
    assert "Concurrency mode: no pacing" in text
    assert "coordinated omission —" not in text
