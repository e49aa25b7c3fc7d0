"""Locust's distributed mode (``load.workers``): the schedule split, the merge, the count.

The unit tests check our own logic: the global user indices and the schedule they give
(computed by the locustfile itself, in a child process), the command lines, the
validation, and the merge + count checks on sample files written here (the drain report
and Locust's stats file are written by the test in their real formats, no Locust runs).
The integration tests run the real Locust master + workers against a threaded HTTP server
on 127.0.0.1 (a few seconds at 40 req/s), and a short scenario through the real runner
with 1 and 2 workers.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from fakes import FakeDeployment, recording_factory
from journals import new_journal
from test_load_driver import DEADLINE_S, TargetServer, locustfile_eval, target

from harness.errors import ExitCode, LoadError, ScenarioError
from harness.load import MAX_WORKERS, LoadPlan, read_samples
from harness.load.distributed import (
    ChildProcesses,
    LocustGroup,
    collect_samples,
    locust_processes,
    master_stats_path,
    merge_sample_files,
    run_distributed_load,
    worker_samples_paths,
    workers_report_path,
)
from harness.platforms.local.processes import run_processes
from harness.pytest_plugin import ScenarioOutcome
from harness.runner import GuardWatch
from harness.runner import Run as ScenarioRun
from harness.scenario import models
from harness.scenario.loader import load_scenario_text

__all__ = ["target"]  # the fixture, imported for the integration tests

Run = Callable[..., ScenarioOutcome]


def plan(tmp_path: Path, **overrides: object) -> LoadPlan:
    settings: dict[str, object] = {
        "host": "http://127.0.0.1:9",
        "rate": 40.0,
        "users": 4,
        "run_time_s": 4.0,
        "request_timeout_s": 2.0,
        "samples_path": tmp_path / "samples.jsonl",
        "seed": 7,
        "workers": 2,
    }
    settings.update(overrides)
    return LoadPlan(**settings)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the schedule split


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_the_workers_users_own_exactly_one_process_s_schedule(tmp_path: Path, workers: int) -> None:
    """Each worker numbers its own users 0, 1, ...; the global indices they take make the
    workers' schedules together the single process's, slot for slot."""
    users, rate = 8, 40.0
    per_worker = users // workers
    code = (
        f"[sorted(lf.global_user_index(k, w, {workers}) for w in range({workers}) "
        f"for k in range({per_worker})), "
        f"sorted(lf.Schedule(100.0, lf.global_user_index(k, w, {workers}), {users}, {rate!r})"
        f".due(s) for w in range({workers}) for k in range({per_worker}) for s in range(10)), "
        f"sorted(lf.Schedule(100.0, u, {users}, {rate!r}).due(s) "
        f"for u in range({users}) for s in range(10))]"
    )
    found = locustfile_eval(tmp_path, code)
    assert isinstance(found, list)
    indices, spread, single = found
    assert indices == list(range(users))
    assert spread == single
    assert [b - a for a, b in itertools.pairwise(spread)] == pytest.approx([1 / rate] * 79)


def test_a_worker_given_too_many_users_is_refused_by_index(tmp_path: Path) -> None:
    """Worker 1 of 2 with a third user would take index 5 of 4 users: outside the range,
    which the locustfile refuses (and the harness reports as an unequal split)."""
    assert locustfile_eval(tmp_path, "lf.global_user_index(2, 1, 2)") == 5


# ---------------------------------------------------------------- plans and commands


def test_a_plan_with_workers_needs_a_multiple_of_users_in_open_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"users \(5\) must be a multiple of workers \(2\)"):
        plan(tmp_path, users=5)
    with pytest.raises(ValueError, match=r"users \(1\) must be at least workers \(2\)"):
        plan(tmp_path, users=1)
    with pytest.raises(ValueError, match=f"workers must be between 1 and {MAX_WORKERS}"):
        plan(tmp_path, workers=MAX_WORKERS + 1, users=64)
    concurrency = plan(tmp_path, mode="concurrency", rate=None, users=5)  # uneven is fine
    assert concurrency.users_per_process == 3


def test_the_in_flight_cap_is_per_process(tmp_path: Path) -> None:
    one = plan(tmp_path, workers=None, users=400, rate=4000.0, request_timeout_s=10.0)
    four = replace(one, workers=4)
    assert one.in_flight_per_user() == 8000 // 400
    assert four.in_flight_per_user() == 8000 // 100  # each process holds a quarter of them


def test_master_and_workers_run_on_loopback_with_their_own_files(tmp_path: Path) -> None:
    processes = locust_processes(plan(tmp_path, workers=3, users=6), master_port=47123)
    master, *workers = processes
    assert [p.role for p in processes] == ["master", "worker", "worker", "worker"]
    argv = master.argv
    assert argv[argv.index("--master-bind-host") + 1] == "127.0.0.1"
    assert argv[argv.index("--master-bind-port") + 1] == "47123"
    assert argv[argv.index("--expect-workers") + 1] == "3"
    assert argv[argv.index("--users") + 1] == "6" and "--headless" in argv
    assert argv[argv.index("--json-file") + 1] + ".json" == str(master_stats_path(plan(tmp_path)))
    assert "HARNESS_SAMPLES_PATH" not in master.env and master.samples_path is None
    assert master.env["HARNESS_LOAD_REPORT"] == str(workers_report_path(plan(tmp_path)))
    paths = [w.env["HARNESS_SAMPLES_PATH"] for w in workers]
    assert len(set(paths)) == 3 and paths == [str(w.samples_path) for w in workers]
    for worker in workers:
        assert worker.env["HARNESS_LOAD_ROLE"] == "worker"
        assert worker.env["HARNESS_LOAD_WORKERS"] == "3"
        assert worker.argv[worker.argv.index("--master-host") + 1] == "127.0.0.1"
        assert worker.argv[worker.argv.index("--master-port") + 1] == "47123"
        assert "--headless" not in worker.argv and "--users" not in worker.argv


def test_without_workers_there_is_one_local_process(tmp_path: Path) -> None:
    (only,) = locust_processes(plan(tmp_path, workers=None), master_port=1)
    assert only.role == "local" and "--master" not in only.argv
    assert only.samples_path == tmp_path / "samples.jsonl"


# ---------------------------------------------------------------- the scenario's load.workers


SCENARIO = """\
apiVersion: harness/v1
metadata: {name: spread}
load:
  rate: 40
  users: 5
  workers: 2
phases:
  - {name: baseline, duration: 4s}
slos:
  - {name: errors, kind: errorRate, max: 10%}
"""


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("users: 5", "users: 5"),
            "example.yaml:4:3: load: load.users 5 is not a multiple of load.workers 2: "
            "each worker runs users/workers users, each owning a fixed share of the arrival "
            "schedule; use 'users: 6' or 'users: 4'",
        ),
        (
            ("users: 5", "users: 1"),
            "example.yaml:4:3: load: load.users 1 is less than load.workers 2: a worker "
            "without users sends nothing; use at least 'users: 2' or fewer workers",
        ),
        (("workers: 2", "workers: 0"), "example.yaml:6:12: load.workers:"),
        (("workers: 2", "workers: 33"), "example.yaml:6:12: load.workers:"),
        (
            ("rate: 40", "rate: 900"),
            "example.yaml:4:3: load: load.rate 900 is above 800 req/s, the most 2 Locust "
            "workers sustain on this kind of machine (400 req/s each, docs/benchmarks.md); "
            "lower the rate or set load.workers to 3 or more",
        ),
    ],
)
def test_load_workers_errors_say_where_and_how_to_fix(edit: tuple[str, str], expected: str) -> None:
    with pytest.raises(ScenarioError) as raised:
        load_scenario_text(SCENARIO.replace(*edit), "example.yaml")
    (problem,) = raised.value.problems
    assert problem.startswith(expected), problem


def test_load_workers_accepts_a_spread_and_rounds_the_derived_users() -> None:
    spread = load_scenario_text(SCENARIO.replace("users: 5", "users: 6"), "example.yaml")
    assert spread.load.workers == 2 and spread.load.effective_users() == 6
    derived = load_scenario_text(
        SCENARIO.replace("  users: 5\n", "").replace("workers: 2", "workers: 3"), "x.yaml"
    )
    assert derived.load.effective_users() == 9  # 8 (40 req/s / 5) rounded up to 3s
    fast = load_scenario_text(SCENARIO.replace("rate: 40", "rate: 800").replace("5", "6"), "x")
    assert fast.load.rate == 800
    assert models.MAX_WORKERS == MAX_WORKERS


# ---------------------------------------------------------------- merge and count


def write_run(
    tmp_path: Path,
    lines: list[int],
    *,
    reported: list[int] | None = None,
    indices: list[list[int]] | None = None,
    locust: int | None = None,
    torn: bool = False,
    extra_user: int = 0,
) -> LoadPlan:
    """Worker files with ``lines[i]`` samples each, the master's drain report and Locust's
    stats file in their real formats (as the locustfile and ``locust --json-file`` write
    them), for the merge checks; no Locust runs."""
    the_plan = plan(tmp_path, workers=len(lines), users=2 * len(lines))
    paths = worker_samples_paths(the_plan)
    for number, (path, count) in enumerate(zip(paths, lines, strict=True)):
        sample = (
            '{"t":%d.5,"ms":1.0,"status":200,"ok":true,"err":null,"rid":"w%d-%d","intended":null}\n'
        )
        path.write_text("".join(sample % (i, number, i) for i in range(count)))
        if torn and number == 0:
            with path.open("a") as file:
                file.write('{"t":99.0,"ms":')
    reported = lines if reported is None else reported
    indices = indices or [[w, w + len(lines)] for w in range(len(lines))]
    reports = [
        {"index": w, "users": 2, "indices": indices[w], "samples": reported[w],
         "samples_path": str(paths[w]), "node": f"vm_{w}"}
        for w in range(len(lines))
    ]  # fmt: skip
    for report in reports[:extra_user]:
        report["users"] = 3
    workers_report_path(the_plan).write_text(
        json.dumps({"workers": len(lines), "reports": reports})
    )
    total = sum(lines) if locust is None else locust
    stats = [{"name": "/product/{id}", "method": "GET", "num_requests": total, "num_failures": 0}]
    master_stats_path(the_plan).write_text(json.dumps(stats))
    return the_plan


def test_merge_keeps_every_complete_line_and_flags_a_torn_one(tmp_path: Path) -> None:
    a, b, merged = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "m.jsonl"
    a.write_bytes(b"1\n2\n3")  # cut short inside its third line
    b.write_bytes(b"4\n" * 300_000)  # more than one copy chunk
    counts = merge_sample_files([a, b, tmp_path / "missing.jsonl"], merged)
    assert counts == [(2, True), (300_000, False), (0, False)]
    assert merged.read_bytes() == b"1\n2\n" + b"4\n" * 300_000
    with pytest.raises(FileExistsError):
        merge_sample_files([a], merged)  # never appends to (or through) an existing file


def test_collect_merges_the_workers_and_agrees_with_locust(tmp_path: Path) -> None:
    the_plan = write_run(tmp_path, [5, 7])
    totals = collect_samples(the_plan)
    assert totals.problems == ()
    assert totals.merged == 12 == totals.locust_requests
    samples = read_samples(the_plan.samples_path)
    assert sorted(s.rid for s in samples) == sorted(
        [f"w0-{i}" for i in range(5)] + [f"w1-{i}" for i in range(7)]
    )


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ({"locust": 13}, "merged samples (12) differ from Locust's own request total (13)"),
        ({"reported": [5, 9]}, "Locust worker 2 wrote 9 samples but samples.worker-2.jsonl"),
        ({"torn": True}, "samples.worker-1.jsonl ends inside a line"),
        ({"extra_user": 1}, "the workers ran 5 users, the plan has 4"),
        ({"indices": [[0, 2], [2, 3]]}, "the workers' users hold the global indices [0, 2, 2, 3]"),
    ],
)
def test_collect_names_every_disagreement(
    tmp_path: Path, damage: dict[str, object], expected: str
) -> None:
    the_plan = write_run(tmp_path, [5, 7], **damage)  # type: ignore[arg-type]
    problems = collect_samples(the_plan).problems
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_collect_names_a_silent_worker_and_a_missing_total(tmp_path: Path) -> None:
    the_plan = write_run(tmp_path, [5, 7])
    workers_report_path(the_plan).write_text('{"reports": []}')
    master_stats_path(the_plan).unlink()
    problems = collect_samples(the_plan).problems
    assert [p.split(" (")[0] for p in problems] == [
        "Locust worker 1 did not report before the master stopped",
        "Locust worker 2 did not report before the master stopped",
        "Locust's master left no request total",
    ]


class RecordingHost:
    """FAKE process host (no process starts): records the calls, for the group's order."""

    def __init__(self, dead: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.calls: list[str] = []
        self.dead = dead
        self.next_pid = 100

    def spawn(
        self, argv: list[str], *, env: dict[str, str], log_name: str, replace_env: bool = False
    ) -> int:
        assert replace_env and not any(key.startswith("LOCUST_") for key in env)
        self.next_pid += 1
        self.calls.append(f"spawn {log_name}")
        return self.next_pid

    def stop(self, pid: int, *, grace: float) -> int | None:
        self.calls.append(f"stop {pid}")
        return 0

    def running(self, pid: int) -> bool:
        return pid not in self.dead


def test_the_group_starts_and_stops_the_master_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCUST_USERS", "999")  # a stray setting must not reach Locust
    host = RecordingHost(dead={101, 102, 103})
    group = LocustGroup.start(host, plan(tmp_path), master_port=5)
    assert host.calls == ["spawn locust-master.log", "spawn locust-worker-1.log",
                          "spawn locust-worker-2.log"]  # fmt: skip
    assert group.dead() == "locust-master"
    assert group.stop() == 0
    assert host.calls[3:] == ["stop 101", "stop 102", "stop 103"]


@dataclass
class WorkersFakeDeployment(FakeDeployment):
    """FAKE (no process): each "worker" writes one sample to its own file; with ``honest``
    the "master" also leaves the drain report and Locust's total that match them."""

    honest: bool = False

    def spawn(
        self, argv: list[str], *, env: dict[str, str], log_name: str, replace_env: bool = False
    ) -> int:
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "logs" / log_name).write_text("")
        if "HARNESS_SAMPLES_PATH" in env:
            path = env["HARNESS_SAMPLES_PATH"]
            line = '{"t":%r,"ms":1.0,"status":200,"ok":true,"err":null,"rid":"%s"}\n'
            Path(path).write_text(line % (time.time(), log_name))
            if self.honest:
                self.reports.append({"index": len(self.reports), "users": 2, "samples": 1,
                                     "indices": [len(self.reports), len(self.reports) + 2],
                                     "samples_path": path})  # fmt: skip
        self.calls.append(f"spawn {log_name}")
        return 4242 + len(self.calls)

    def stop(self, pid: int, *, grace: float) -> int | None:
        if self.honest and self.reports:  # what the drained master leaves behind
            (self.run_dir / "samples.workers.json").write_text(
                json.dumps({"reports": self.reports})
            )
            stats = [{"name": "/product/{id}", "method": "GET", "num_requests": 2}]
            (self.run_dir / "samples.locust-stats.json").write_text(json.dumps(stats))
        return super().stop(pid, grace=grace)

    def running(self, pid: int) -> bool:
        return self.stopped_at is None  # the workers quit with the master

    @property
    def reports(self) -> list[dict[str, object]]:
        return self.__dict__.setdefault("_reports", [])


FAKE_RUN = """\
apiVersion: harness/v1
metadata: {name: fake-workers}
load: {rate: 20, users: 4, workers: 2}
phases:
  - {name: baseline, duration: 50ms}
slos:
  - {name: errors, kind: errorRate, max: 10%}
"""


@pytest.mark.parametrize("honest", [True, False])
def test_the_runner_fails_a_run_whose_workers_do_not_add_up(tmp_path: Path, honest: bool) -> None:
    spec = load_scenario_text(FAKE_RUN, "fake.yaml")
    journal = new_journal(scenario_name=spec.metadata.name, platform="fake")
    run = ScenarioRun(
        spec, tmp_path, journal, lambda message: None, None, recording_factory([], set())
    )
    deployment = WorkersFakeDeployment(spec, tmp_path, honest=honest)
    if honest:
        run.execute(deployment)
        assert journal.load is not None and journal.load.locust_requests == 2
    else:
        with pytest.raises(LoadError, match="the Locust workers' samples do not add up") as err:
            run.execute(deployment)
        assert "Locust worker 1 did not report" in str(err.value)
        assert "Locust's master left no request total" in str(err.value)
    assert deployment.calls[:3] == ["spawn locust-master.log", "spawn locust-worker-1.log",
                                    "spawn locust-worker-2.log"]  # fmt: skip
    assert len(read_samples(tmp_path / "samples.jsonl")) == 2  # merged either way, for judging


def test_the_guard_reads_every_worker_s_file(tmp_path: Path) -> None:
    """Three bad seconds, their failures split over two workers' files: the guard, which
    reads both as they grow, sees the streak that neither file shows alone."""
    files = [tmp_path / "samples.worker-1.jsonl", tmp_path / "samples.worker-2.jsonl"]
    lines: list[list[str]] = [[], []]
    for second in range(8):
        for i in range(10):
            ok = not (3 <= second < 6 and i < 8)
            sample = {"t": 1000.0 + second + i / 20, "ms": 1.0, "status": 200 if ok else 503,
                      "ok": ok, "err": None if ok else "HTTP 503", "rid": ""}  # fmt: skip
            lines[i % 2].append(json.dumps(sample) + "\n")
    for path, text in zip(files, lines, strict=True):
        path.write_text("".join(text))
    guard = models.Guard.model_validate({"errorRate": "50%", "for": "3s"})
    watch = GuardWatch(guard, files)
    try:
        assert watch.poll(1000.0 + 6.0) is None
        reason = watch.poll(1000.0 + 7.0)
        assert reason is not None and "8/10 failed" in reason
    finally:
        watch.close()


# ---------------------------------------------------------------- real Locust master + workers


def on_one_grid(intended: list[float], rate: float) -> bool:
    """Every intended start is origin + k/rate for a distinct k: one process's schedule."""
    origin = min(intended)
    slots = [round((t - origin) * rate, 3) for t in intended]
    return all(slot == int(slot) for slot in slots) and len(set(slots)) == len(slots)


@pytest.mark.integration
def test_two_workers_merge_to_locust_s_own_total(target: TargetServer, tmp_path: Path) -> None:
    the_plan = plan(tmp_path, host=target.url, users=4, run_time_s=4.0)
    run = run_distributed_load(the_plan, timeout=DEADLINE_S + the_plan.run_time_s)

    assert run.result.exit_code == 0, run.result.stderr[-2000:]
    assert run.totals.problems == ()
    samples = list(run.result.samples)
    assert len(samples) == run.totals.merged == run.totals.locust_requests >= 60
    assert all(tally.reported == tally.lines > 0 for tally in run.totals.workers)
    # Every request the server answered is a sample, once, with the status it got.
    seen = target.statuses()
    assert {s.rid: s.status for s in samples} == {rid: st[0] for rid, st in seen.items()}
    assert all(len(statuses) == 1 for statuses in seen.values())
    # Two processes, one arrival schedule: all intended starts on one 1/rate grid.
    intended = [s.intended for s in samples if s.intended is not None]
    assert len(intended) == len(samples) and on_one_grid(intended, 40.0)


@pytest.mark.integration
def test_a_sigterm_to_the_master_mid_run_still_adds_up(
    target: TargetServer, tmp_path: Path
) -> None:
    """The runner ends Locust with SIGTERM to the master (not --run-time): the master
    drains the workers first, so requests in flight at the stop are counted on both sides."""
    the_plan = plan(tmp_path, host=target.url, run_time_s=60.0)
    host = ChildProcesses(tmp_path / "logs", tmp_path)
    try:
        group = LocustGroup.start(host, the_plan)
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and not all(
            p.exists() and p.stat().st_size > 2000 for p in group.samples_paths
        ):
            assert group.dead() is None, (tmp_path / "logs").iterdir()
            time.sleep(0.1)
        stopped = time.monotonic()
        assert group.stop() == 0
        assert time.monotonic() - stopped < the_plan.stop_grace_s  # not killed by the grace
        assert all(code == 0 for code in group.exit_codes.values()), group.exit_codes
    finally:
        host.kill_all()
    totals = collect_samples(the_plan)
    assert totals.problems == ()
    assert totals.merged == totals.locust_requests and totals.merged > 0


# ---------------------------------------------------------------- a scenario, 1 vs 2 workers


SHORT = textwrap.dedent("""\
    apiVersion: harness/v1
    metadata: {name: spread-WORKERS}
    app:
      name: shop
    load: {rate: 30, users: 4, workers: WORKERS, requestTimeout: 2s}
    phases:
      - {name: baseline, duration: 4s}
      - {name: fault, duration: 4s}
    faults:
      - name: catalog-aborts
        kind: http
        phase: fault
        target: {service: catalog}
        abort: {httpStatus: 503, percentage: {value: 60}}
    slos:
      - {name: errors, kind: errorRate, max: 10%}
""")


@pytest.mark.integration
@pytest.mark.slow
def test_two_workers_give_the_verdicts_of_one(harness_run: Run, tmp_path: Path) -> None:
    verdicts = {}
    for workers in (1, 2):
        scenario = tmp_path / f"spread-{workers}.yaml"
        scenario.write_text(SHORT.replace("WORKERS", str(workers)))
        outcome = harness_run(scenario)
        journal = outcome.journal
        assert journal.status == "completed", journal.error
        assert journal.load is not None and journal.load.workers == workers
        samples = read_samples(outcome.result.run_dir / "samples.jsonl")
        assert journal.load.locust_requests == len(samples) > 100
        assert run_processes(journal.run_id) == []
        verdicts[workers] = {(s.slo, s.phase): s.verdict for s in journal.slos}
    assert verdicts[2] == verdicts[1]
    assert verdicts[1] == {("errors", "baseline"): "PASS", ("errors", "fault"): "FAIL"}


# ---------------------------------------------------------------- the run dies, so does Locust


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_master_and_workers_die_with_the_runner(tmp_path: Path, how: signal.Signals) -> None:
    scenario = tmp_path / "spread.yaml"
    scenario.write_text(SHORT.replace("WORKERS", "2").replace("duration: 4s", "duration: 60s"))
    reports = tmp_path / "reports"
    runner = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(scenario), "--reports", str(reports)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        run_id = ""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            found = list(reports.glob("spread-2/*/samples.worker-2.jsonl"))
            if found and found[0].stat().st_size > 0:
                run_id = found[0].parent.name
                break
            assert runner.poll() is None, "the run ended before its load started"
            time.sleep(0.1)
        assert run_id, "no worker wrote a sample within 90 s"
        locust = [p for p in run_processes(run_id) if "locust" in p.argv]
        assert len(locust) == 3, locust  # the master and two workers, carrying the run id
        time.sleep(1.0)  # into the first phase, where a Ctrl-C usually lands
        runner.send_signal(how)
        code = runner.wait(timeout=60)
        assert code == (ExitCode.INTERRUPTED if how == signal.SIGINT else -signal.SIGKILL)
        deadline = time.monotonic() + 10
        while run_processes(run_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert run_processes(run_id) == []  # no cleanup needed: they died with the run
    finally:
        subprocess.run(  # a killed run leaves its journal open and its scratch dir
            [sys.executable, "-m", "harness.cli", "cleanup", "--reports", str(reports)],
            capture_output=True,
            timeout=120,
            check=False,
        )
        if runner.poll() is None:
            runner.kill()
            runner.wait()
