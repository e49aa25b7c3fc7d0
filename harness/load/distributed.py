"""Locust's own distributed mode: a master and N workers, their samples merged and counted.

A plan with ``workers: N`` (:class:`~harness.load.driver.LoadPlan`) runs ``locust --master
--expect-workers N --headless`` and N ``locust --worker`` processes, all on loopback. This
module builds their command lines (:func:`locust_processes`), starts and stops them together
through whoever owns processes (:class:`LocustGroup` over a :class:`ProcessHost`: the run's
deployment, or :class:`ChildProcesses` for tests and host mode), and afterwards merges the
workers' sample files into the plan's ``samples_path`` and checks the count
(:func:`collect_samples`)::

    group = LocustGroup.start(deployment, plan, master_port=free_loopback_port())
    ...                                  # group.dead() says if a process stopped early
    group.stop()                         # master first: it drains the workers, then quits
    totals = collect_samples(plan)       # merged file + Locust's own request total
    if totals.problems:
        raise LoadError("; ".join(totals.problems))

How the count is exact: Locust's master quits after waiting only 0.5 s for the workers'
last stats, so requests still in flight at the stop would be in the samples but missing
from its totals. The locustfile therefore *drains* the workers first (see its docstring):
each stops its users, flushes, sends Locust its last stats report and then its own sample
count. With every report in, the samples merged from the workers' files must equal the
master's request total exactly, every worker's file must hold the lines it reported, and
(open mode) the workers' users must hold every global user index once.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Literal, Protocol, TypedDict

from harness.errors import LoadError
from harness.load.driver import (
    STARTUP_ALLOWANCE_S,
    LoadPlan,
    LoadResult,
    generator_warnings,
    locust_command,
    read_samples,
)

LOOPBACK = "127.0.0.1"
WORKER_EXIT_S = 5.0
"""After the master exits, how long each worker has to quit by itself before SIGTERM."""
_COPY_CHUNK = 1 << 20
_PR_SET_PDEATHSIG = 1

Role = Literal["local", "master", "worker"]


class ProcessHost(Protocol):
    """Who starts processes for a run: the run's deployment (its sandbox), or
    :class:`ChildProcesses`. ``harness.platforms.base.Deployment`` has this shape."""

    def spawn(
        self, argv: list[str], *, env: dict[str, str], log_name: str, replace_env: bool = False
    ) -> int: ...

    def stop(self, pid: int, *, grace: float) -> int | None: ...

    def running(self, pid: int) -> bool: ...


@dataclass(frozen=True)
class LocustProcess:
    """One Locust process of a plan: its role, log name, argv and environment additions."""

    role: Role
    name: str
    argv: list[str]
    env: dict[str, str]
    samples_path: Path | None  # None for the master: it sends no request

    @property
    def log_name(self) -> str:
        return f"{self.name}.log"


def worker_samples_paths(plan: LoadPlan) -> list[Path]:
    """Where each worker appends its samples (see :func:`live_samples_paths`)."""
    return live_samples_paths(plan.samples_path, plan.workers)


def live_samples_paths(samples_path: Path, workers: int | None) -> list[Path]:
    """The files Locust appends samples to while it runs: ``samples_path`` itself for one
    process; with workers ``samples.worker-1.jsonl``, ... next to it (merged into
    ``samples_path`` at the end by :func:`collect_samples`)."""
    if not workers:
        return [samples_path]
    stem, suffix = samples_path.stem, samples_path.suffix
    return [samples_path.with_name(f"{stem}.worker-{n}{suffix}") for n in range(1, workers + 1)]


def master_stats_path(plan: LoadPlan) -> Path:
    """The master's ``--json-file`` (Locust adds ``.json`` to the name it is given)."""
    return plan.samples_path.with_name(f"{plan.samples_path.stem}.locust-stats.json")


def workers_report_path(plan: LoadPlan) -> Path:
    """The master's report of the drained workers (written by the locustfile)."""
    return plan.samples_path.with_name(f"{plan.samples_path.stem}.workers.json")


def workers_of(plan: LoadPlan) -> range:
    """The workers' numbers, 1..N (their log and sample file names)."""
    return range(1, (plan.workers or 0) + 1)


def locust_processes(plan: LoadPlan, master_port: int) -> list[LocustProcess]:
    """The processes that run ``plan``: one local process, or the master then the workers.

    ``master_port`` is where the master listens on 127.0.0.1 for its workers (unused
    without workers). Start the master first (its workers retry until it answers) and
    stop it first: it drains the workers, writes its totals, tells them to quit.
    """
    if not plan.workers:
        argv, env = locust_command(plan)
        return [LocustProcess("local", "locust", argv, env, plan.samples_path)]
    argv, env = locust_command(replace(plan, workers=None))
    env |= {
        "HARNESS_LOAD_WORKERS": str(plan.workers),
        # Each process's own share: the single-process plan would cap it for all users.
        "HARNESS_LOAD_MAX_IN_FLIGHT": str(plan.in_flight_per_user()),
    }
    master_argv = [
        *argv,
        "--master",
        "--master-bind-host",
        LOOPBACK,
        "--master-bind-port",
        str(master_port),
        "--expect-workers",
        str(plan.workers),
        "--expect-workers-max-wait",
        str(int(STARTUP_ALLOWANCE_S)),
        "--json-file",
        str(master_stats_path(plan).with_suffix("")),
    ]
    master_env = env | {
        "HARNESS_LOAD_ROLE": "master",
        "HARNESS_LOAD_REPORT": str(workers_report_path(plan)),
    }
    del master_env["HARNESS_SAMPLES_PATH"]  # the master sends no request
    processes = [LocustProcess("master", "locust-master", master_argv, master_env, None)]
    worker_argv = [
        *argv[:5],  # python -m locust -f <locustfile>
        "--worker",
        "--master-host",
        LOOPBACK,
        "--master-port",
        str(master_port),
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",
    ]
    for number, path in zip(workers_of(plan), worker_samples_paths(plan), strict=True):
        worker_env = env | {"HARNESS_LOAD_ROLE": "worker", "HARNESS_SAMPLES_PATH": str(path)}
        processes.append(
            LocustProcess("worker", f"locust-worker-{number}", worker_argv, worker_env, path)
        )
    return processes


def without_locust_settings(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) without the ``LOCUST_*`` variables Locust reads."""
    source = os.environ if base is None else base
    return {key: value for key, value in source.items() if not key.startswith("LOCUST_")}


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now (for the master; the race until it binds is
    Locust's to report: it exits with "The Locust master port ... was busy")."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class LocustGroup:
    """The Locust processes of one plan, started and stopped together on a host."""

    def __init__(self, host: ProcessHost, plan: LoadPlan, processes: list[LocustProcess]) -> None:
        self.host = host
        self.plan = plan
        self.processes = processes
        self.pids: list[int] = []
        self.exit_codes: dict[str, int | None] = {}

    @classmethod
    def start(
        cls,
        host: ProcessHost,
        plan: LoadPlan,
        *,
        master_port: int | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> LocustGroup:
        """Spawn every process (the master first), without ``LOCUST_*`` settings; if one
        spawn fails, the ones already started are stopped before the error propagates."""
        port = master_port if master_port is not None else free_loopback_port()
        group = cls(host, plan, locust_processes(plan, port))
        base = without_locust_settings(base_env)
        try:
            for process in group.processes:
                pid = host.spawn(
                    process.argv,
                    env=base | process.env,
                    log_name=process.log_name,
                    replace_env=True,
                )
                group.pids.append(pid)
        except BaseException:
            group.stop()
            raise
        return group

    @property
    def log_names(self) -> list[str]:
        return [process.log_name for process in self.processes]

    @property
    def samples_paths(self) -> list[Path]:
        """The files the processes append samples to while they run (for live tails)."""
        return [p.samples_path for p in self.processes if p.samples_path is not None]

    def dead(self) -> str | None:
        """The name of the first process that is no longer running, or None."""
        for process, pid in zip(self.processes, self.pids, strict=False):
            if not self.host.running(pid):
                return process.name
        return None

    def stop(self) -> int | None:
        """Stop the first process (local, or the master: it drains and quits its workers)
        within the plan's grace, then each worker (a few seconds to quit by itself, then
        SIGTERM, then SIGKILL). Returns the first process's exit code; all are in
        :attr:`exit_codes`."""
        for index, (process, pid) in enumerate(zip(self.processes, self.pids, strict=False)):
            if index == 0:
                code = self.host.stop(pid, grace=self.plan.stop_grace_s)
            else:
                deadline = time.monotonic() + WORKER_EXIT_S
                while self.host.running(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                code = self.host.stop(pid, grace=self.plan.stop_timeout_s + 2.0)
            self.exit_codes[process.name] = code
        return self.exit_codes.get(self.processes[0].name)


# --------------------------------------------------------------------------- merge + count


@dataclass(frozen=True)
class WorkerTally:
    """One worker's file against its own report (``reported`` None: it never reported)."""

    number: int
    path: Path
    lines: int  # complete sample lines in its file
    cut_short: bool  # the file ended inside a line (the worker was killed mid-write)
    reported: int | None = None
    users: int | None = None
    indices: tuple[int, ...] = ()


@dataclass(frozen=True)
class LoadTotals:
    """What :func:`collect_samples` found: merged count, Locust's count, the problems."""

    merged: int
    locust_requests: int | None
    workers: tuple[WorkerTally, ...]
    problems: tuple[str, ...]


def merge_sample_files(sources: list[Path], into: Path) -> list[tuple[int, bool]]:
    """Append the complete lines of each source to ``into`` (created, must not exist), in
    source order; per source, (lines copied, whether it ended inside a line). A missing
    source counts as empty. Streams in 1 MiB chunks, so memory stays flat."""
    counts: list[tuple[int, bool]] = []
    with open(into, "xb") as out:
        for source in sources:
            try:
                file: IO[bytes] = open(source, "rb")  # noqa: SIM115 (closed below)
            except FileNotFoundError:
                counts.append((0, False))
                continue
            with file:
                counts.append(_copy_lines(file, out))
    return counts


def _copy_lines(source: IO[bytes], out: IO[bytes]) -> tuple[int, bool]:
    lines, pending = 0, b""
    while chunk := source.read(_COPY_CHUNK):
        data = pending + chunk
        end = data.rfind(b"\n") + 1
        out.write(data[:end])
        lines += data.count(b"\n", 0, end)
        pending = data[end:]
    return lines, bool(pending.strip())


def locust_request_total(stats_json: Path) -> int:
    """Locust's own request count: ``num_requests`` summed over the entries of the
    master's ``--json-file`` (failures are requests too). Raises ``ValueError`` when the
    file is missing or not Locust's list of entries."""
    entries = json.loads(stats_json.read_text(encoding="utf-8"))
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("num_requests"), int) for e in entries
    ):
        raise ValueError(f"{stats_json} is not Locust's stats list (entries with num_requests)")
    return sum(int(entry["num_requests"]) for entry in entries)


def collect_samples(plan: LoadPlan) -> LoadTotals:
    """Merge the workers' files into ``plan.samples_path`` and check them against
    Locust's total and the workers' own reports; every disagreement is one problem.

    Checks: every worker reported after draining; each worker's file holds exactly the
    lines it reported writing and was not cut short; in open mode the workers' users hold
    each global user index ``0..users-1`` once (the schedule is one process's); the merged
    count equals the master's request total.
    """
    paths = worker_samples_paths(plan)
    merged_counts = merge_sample_files(paths, plan.samples_path)
    reports = _read_reports(workers_report_path(plan))
    problems: list[str] = []
    tallies = []
    for number, path, (lines, cut) in zip(workers_of(plan), paths, merged_counts, strict=True):
        report = reports.get(str(path))
        tally = WorkerTally(number=number, path=path, lines=lines, cut_short=cut)
        tallies.append(tally if report is None else replace(tally, **report))
    problems.extend(_tally_problems(plan, tallies))
    merged = sum(lines for lines, _ in merged_counts)
    locust_total: int | None = None
    try:
        locust_total = locust_request_total(master_stats_path(plan))
    except (OSError, ValueError) as error:
        problems.append(f"Locust's master left no request total ({error}); see locust-master.log")
    if locust_total is not None and locust_total != merged:
        problems.append(
            f"merged samples ({merged}) differ from Locust's own request total "
            f"({locust_total}): samples were lost or a worker's stats never reached the "
            "master; see the locust-*.log files"
        )
    return LoadTotals(merged, locust_total, tuple(tallies), tuple(problems))


class _Report(TypedDict):
    reported: int
    users: int
    indices: tuple[int, ...]


def _read_reports(path: Path) -> dict[str, _Report]:
    """A worker's samples path → its drain report (Locust numbers workers in the order
    they connected, so the path the report names is what ties it to a file); a report
    with a field of the wrong type is left out (its worker then counts as silent)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    reports = raw.get("reports") if isinstance(raw, dict) else None
    found: dict[str, _Report] = {}
    for report in reports if isinstance(reports, list) else []:
        if not isinstance(report, dict):
            continue
        where, samples, users = (report.get(k) for k in ("samples_path", "samples", "users"))
        indices = report.get("indices")
        if (
            isinstance(where, str)
            and isinstance(samples, int)
            and isinstance(users, int)
            and isinstance(indices, list)
            and all(isinstance(i, int) for i in indices)
        ):
            found[where] = _Report(reported=samples, users=users, indices=tuple(indices))
    return found


def _tally_problems(plan: LoadPlan, tallies: list[WorkerTally]) -> list[str]:
    problems = []
    for tally in tallies:
        name = f"Locust worker {tally.number}"
        if tally.reported is None:
            problems.append(
                f"{name} did not report before the master stopped (it died, or could not "
                f"finish its requests in time); see locust-worker-{tally.number}.log"
            )
        elif tally.reported != tally.lines:
            problems.append(
                f"{name} wrote {tally.reported} samples but {tally.path.name} holds "
                f"{tally.lines} complete lines"
            )
        if tally.cut_short:
            problems.append(f"{tally.path.name} ends inside a line ({name} was killed)")
    if all(t.reported is not None for t in tallies):
        started = sum(t.users or 0 for t in tallies)
        if started != plan.users:
            problems.append(f"the workers ran {started} users, the plan has {plan.users}")
    if plan.mode == "open" and all(t.reported is not None for t in tallies):
        indices = sorted(i for tally in tallies for i in tally.indices)
        if indices != list(range(plan.users)):
            problems.append(
                f"the workers' users hold the global indices {_ranges(indices)}, not each "
                f"of 0..{plan.users - 1} once: the arrival schedule is not one process's "
                "(did Locust hand the workers unequal shares?)"
            )
    return problems


def _ranges(values: list[int]) -> str:
    shown = ", ".join(str(v) for v in values[:12])
    return f"[{shown}{', ...' if len(values) > 12 else ''}] ({len(values)} users)"


# --------------------------------------------------------------------------- host mode


class ChildProcesses:
    """A :class:`ProcessHost` of plain child processes, for tests, benchmarks and host mode.

    Each child runs in its own session with its log in ``log_dir``, and gets SIGKILL if
    this process dies (``PR_SET_PDEATHSIG``), so a killed test leaves no Locust behind.
    :meth:`kill_all` is the last resort for errors and Ctrl-C.
    """

    def __init__(self, log_dir: Path, cwd: Path) -> None:
        self.log_dir = log_dir
        self.cwd = cwd
        self.children: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(
        self, argv: list[str], *, env: dict[str, str], log_name: str, replace_env: bool = False
    ) -> int:
        full_env = env if replace_env else {**os.environ, **env}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / log_name, "ab") as log:
            child = subprocess.Popen(
                argv,
                env=full_env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.children[child.pid] = child
        return child.pid

    def running(self, pid: int) -> bool:
        return self.children[pid].poll() is None

    def stop(self, pid: int, *, grace: float) -> int | None:
        child = self.children[pid]
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        return child.returncode

    def kill_all(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.kill()
                child.wait()


@dataclass(frozen=True)
class DistributedRun:
    """What :func:`run_distributed_load` produced: the merged result and its count."""

    result: LoadResult
    totals: LoadTotals


def run_distributed_load(
    plan: LoadPlan, timeout: float | None = None, cwd: Path | None = None
) -> DistributedRun:
    """Run ``plan`` (with ``workers``) as child processes and wait for it: the
    distributed counterpart of :func:`harness.load.driver.run_load` (tests, benchmarks).

    Logs go to ``<samples dir>/logs/``. The master ends by its ``--run-time``; past
    ``timeout`` (default: run time + drain + start-up allowance) every process is stopped
    and :class:`LoadError` is raised. Any exception here, Ctrl-C included, kills them all.
    The merged samples are checked (:func:`collect_samples`); ``totals.problems`` says what
    disagreed (the caller decides whether that is an error).
    """
    if not plan.workers:
        raise ValueError("run_distributed_load needs a plan with workers; use run_load")
    workdir = cwd if cwd is not None else plan.samples_path.parent
    for path in [plan.samples_path, *worker_samples_paths(plan)]:
        if path.exists():
            raise LoadError(f"{path} exists already: give each run a fresh samples_path")
    plan.samples_path.parent.mkdir(parents=True, exist_ok=True)
    limit = timeout if timeout is not None else _default_limit(plan)
    host = ChildProcesses(plan.samples_path.parent / "logs", workdir)
    started = time.time()
    try:
        group = LocustGroup.start(host, plan)
        master = host.children[group.pids[0]]
        try:
            master.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            group.stop()
            raise LoadError(
                f"Locust's master did not finish within {limit:g} s and was stopped; see "
                f"{host.log_dir}"
            ) from None
        group.stop()
    finally:
        host.kill_all()
    ended = time.time()
    logs = "".join((host.log_dir / name).read_text(errors="replace") for name in group.log_names)
    totals = collect_samples(plan)
    code = group.exit_codes.get("locust-master")
    result = LoadResult(
        samples=tuple(read_samples(plan.samples_path)),
        warnings=tuple(generator_warnings(logs)),
        exit_code=-1 if code is None else code,
        stderr=logs,
        started_at=started,
        ended_at=ended,
    )
    return DistributedRun(result, totals)


def _default_limit(plan: LoadPlan) -> float:
    return plan.run_time_arg_s + plan.stop_grace_s + STARTUP_ALLOWANCE_S


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


__all__ = [
    "ChildProcesses",
    "DistributedRun",
    "LoadTotals",
    "LocustGroup",
    "LocustProcess",
    "ProcessHost",
    "WorkerTally",
    "collect_samples",
    "free_loopback_port",
    "live_samples_paths",
    "locust_processes",
    "locust_request_total",
    "master_stats_path",
    "merge_sample_files",
    "run_distributed_load",
    "without_locust_settings",
    "worker_samples_paths",
    "workers_of",
    "workers_report_path",
]
