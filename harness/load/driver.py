"""Drive Locust out of process and read back what it measured.

Importing locust monkey-patches the interpreter with gevent, which breaks pytest, asyncio
and threads, so the harness never imports it. This module only *builds* the Locust
command line (:func:`locust_command`) and *reads* the per-request samples that
``locustfile.py`` appends to a JSON-lines file (:mod:`harness.load.samples`, re-exported here).
Whoever owns the process (the platform's supervisor, possibly inside the run's network
namespace) spawns it; :func:`run_load` is the small spawner for tests and host mode::

    plan = LoadPlan(host="http://127.0.0.1:8080", rate=50, users=10, run_time_s=30,
                    request_timeout_s=5, samples_path=run_dir / "samples.jsonl")
    result = run_load(plan)
    summary = summarize(result.samples, start, end, target_rate=plan.rate)
    if summary.coordinated_omission:
        print(summary.message)

In the default ``open`` mode every user follows a fixed arrival schedule (wrk2's model) and
never waits for a response before sending the next request, so a stalled system cannot
lower the load it is offered; each sample keeps its intended start, and
:attr:`Sample.latency_ms` (from the intended start) is the latency verdicts use, with the
raw service time :attr:`Sample.ms` beside it (coordinated omission corrected). The
``concurrency`` mode is fortio's closed loop: ``users`` requests always in flight, no
schedule. :func:`summarize` says when the schedule slipped (requests started late) and
:func:`generator_warnings` when Locust's own CPU was the bottleneck.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from harness.errors import LoadError
from harness.load.samples import (
    Sample,
    SampleColumns,
    SampleTail,
    as_columns,
    read_sample_columns,
    read_samples,
)

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
"""The locustfile for the sample app; pass it to ``locust -f``."""

USER_SAMPLING = Path(__file__).with_name("user_sampling.py")
"""The sampling module Locust loads beside a user's own locustfile (``load.locustfile``)."""

COORDINATED_OMISSION_RATIO = 0.9
"""Achieved below this fraction of the offered rate says the generator fell behind."""

LATE_MS = 20.0
"""A request that started more than this after its intended start counts as late."""

SLIPPED_SHARE = 0.01
"""More than this share of late requests in a window flags the schedule as slipped."""

MAX_TOTAL_IN_FLIGHT = 8000
"""The most requests all open-loop users together may have in flight (sockets: Locust
raises its open-file limit to 10,000 where it can)."""

LoadMode = Literal["open", "concurrency"]
"""``open``: a fixed arrival schedule per user (wrk2). ``concurrency``: N users, no pacing."""

MAX_SPAWN_RATE = 100
"""Locust warns that spawn rates above 100 users/s "sometimes cause issues"."""

MAX_WORKERS = 32
"""The most Locust workers one plan may ask for (each is a process, or a pod)."""

DRAIN_ALLOWANCE_S = 10.0
"""Distributed: beyond the stop timeout, what the master may take to drain its workers
(the locustfile waits up to 5 s past the stop timeout) and quit (two 0.5 s waits)."""

STARTUP_ALLOWANCE_S = 30.0
"""Time :func:`run_load` allows Locust to import and start, beyond the plan's run time."""

CPU_SATURATION = "load generator CPU saturated"
"""The start of the :func:`generator_warnings` message when Locust ran out of CPU."""

_LOG_LINE = re.compile(r"^\[[^\]]*\] \S*/(WARNING|ERROR|CRITICAL)/([^:]+): (.*)$")
_CPU_MARKERS = (
    "CPU usage above",  # runners.monitor_cpu_and_memory, while running
    "CPU usage was too high at some point during the test",  # runners.cpu_log_warning
    "CPU usage threshold was exceeded on workers",  # the master, in distributed mode
)


@dataclass(frozen=True)
class LoadPlan:
    """What load to offer.

    ``mode="open"`` (default): ``rate`` requests per second in total, on a fixed arrival
    schedule split over ``users`` (each owns every ``users``-th slot). A user does not wait
    for responses: it may have ``max_in_flight`` requests out at once (default: enough for
    every request to run into its timeout, see :meth:`in_flight_per_user`), so a slow
    system cannot slow the schedule down. ``mode="concurrency"``: ``users`` closed-loop
    users with no pacing and no ``rate`` (``users`` requests always in flight).

    ``run_time_s`` is rounded up to whole seconds (Locust's ``--run-time`` resolution) and
    counts from the start of spawning. ``path_template`` is formatted with ``id`` = 1..100
    (``seed`` makes the ids repeatable).

    ``workers``: ``None`` runs one Locust process; ``N`` runs Locust's distributed mode, a
    master and ``N`` worker processes (:mod:`harness.load.distributed`), each worker
    with ``users / N`` users (open mode: ``users`` must be a multiple of ``N``) writing
    its own samples file, merged into ``samples_path`` at the end.

    ``locustfile``: a user's own locustfile (absolute path) run unchanged instead of the
    built-in one, with :data:`USER_SAMPLING` loaded beside it to record the samples. Its
    User classes pace themselves, so it needs ``mode="concurrency"`` (no ``rate``):
    ``users`` is how many of them Locust starts. One Locust process only (no ``workers``).
    """

    host: str
    rate: float | None
    users: int
    run_time_s: float
    request_timeout_s: float
    samples_path: Path
    path_template: str = "/product/{id}"
    seed: int | None = None
    mode: LoadMode = "open"
    max_in_flight: int | None = None
    workers: int | None = None
    locustfile: Path | None = None

    def __post_init__(self) -> None:
        problems: list[str] = self._worker_problems() + self._locustfile_problems()
        if not re.match(r"^https?://[^/\s]+/?$", self.host):
            problems.append(
                f"host must be a base URL like 'http://127.0.0.1:8080', got {self.host!r}"
            )
        if self.mode not in ("open", "concurrency"):
            problems.append(f"mode must be 'open' or 'concurrency', got {self.mode!r}")
        elif self.mode == "concurrency" and self.rate is not None:
            problems.append(
                f"rate must be None in concurrency mode (users set the load), got {self.rate!r}"
            )
        elif self.mode == "open" and not _positive_number(self.rate):
            problems.append(f"rate must be a positive number, got {self.rate!r}")
        for name in ("run_time_s", "request_timeout_s"):
            value = getattr(self, name)
            if not _positive_number(value):
                problems.append(f"{name} must be a positive number, got {value!r}")
        if isinstance(self.users, bool) or not isinstance(self.users, int) or self.users < 1:
            problems.append(f"users must be an integer >= 1, got {self.users!r}")
        if self.max_in_flight is not None and (
            isinstance(self.max_in_flight, bool)
            or not isinstance(self.max_in_flight, int)
            or self.max_in_flight < 1
        ):
            problems.append(f"max_in_flight must be an integer >= 1, got {self.max_in_flight!r}")
        if not self.path_template.startswith("/"):
            problems.append(f"path_template must start with '/', got {self.path_template!r}")
        else:
            try:
                self.path_template.format(id=1)
            except (KeyError, IndexError, ValueError) as error:
                problems.append(
                    f"path_template may only use the placeholder '{{id}}', "
                    f"got {self.path_template!r} ({type(error).__name__}: {error})"
                )
        if problems:
            raise ValueError("invalid LoadPlan: " + "; ".join(problems))

    def _worker_problems(self) -> list[str]:
        workers = self.workers
        if workers is None:
            return []
        if isinstance(workers, bool) or not isinstance(workers, int):
            return [f"workers must be None or an integer, got {workers!r}"]
        if not 1 <= workers <= MAX_WORKERS:
            return [f"workers must be between 1 and {MAX_WORKERS}, got {workers}"]
        if isinstance(self.users, int) and self.users < workers:
            return [f"users ({self.users}) must be at least workers ({workers})"]
        if self.mode == "open" and isinstance(self.users, int) and self.users % workers:
            return [
                f"users ({self.users}) must be a multiple of workers ({workers}) in open "
                "mode: each worker runs users/workers users, each owning a fixed share of "
                "the arrival schedule"
            ]
        return []

    def _locustfile_problems(self) -> list[str]:
        if self.locustfile is None:
            return []
        problems = []
        if not Path(self.locustfile).is_absolute():
            problems.append(f"locustfile must be an absolute path, got {self.locustfile}")
        if self.mode != "concurrency":
            problems.append(
                "a user's locustfile paces its own users: use mode='concurrency' (no rate)"
            )
        if self.workers is not None:
            problems.append("a user's locustfile runs in one Locust process (workers=None)")
        return problems

    @property
    def users_per_process(self) -> int:
        """Users in one Locust process: all of them, or a worker's share (rounded up)."""
        return math.ceil(self.users / (self.workers or 1))

    @property
    def stop_grace_s(self) -> float:
        """How long to wait, after SIGTERM, for Locust (its master) to flush and exit."""
        drain = DRAIN_ALLOWANCE_S if self.workers else 0.0
        return self.stop_timeout_s + 3.0 + drain

    def in_flight_per_user(self) -> int:
        """How many requests one open-loop user may have out at once.

        ``max_in_flight`` when given; else every request the user's schedule starts within
        ``request_timeout_s + 1`` s (Little's law with the timeout as the longest latency),
        plus one, so a request can only start late when the generator itself is short of
        CPU. The users of one process together stay within :data:`MAX_TOTAL_IN_FLIGHT`. 1
        in concurrency mode.
        """
        if self.mode == "concurrency" or self.rate is None:
            return 1
        if self.max_in_flight is not None:
            return self.max_in_flight
        per_user = math.ceil(self.rate / self.users * (self.request_timeout_s + 1.0)) + 1
        return max(1, min(per_user, MAX_TOTAL_IN_FLIGHT // self.users_per_process))

    @property
    def run_time_arg_s(self) -> int:
        """``run_time_s`` rounded up to the whole seconds Locust accepts."""
        return math.ceil(self.run_time_s)

    @property
    def stop_timeout_s(self) -> int:
        """How long Locust lets in-flight requests finish at the end, so they are recorded."""
        return math.ceil(self.request_timeout_s) + 1

    @property
    def spawn_rate(self) -> int:
        """Spawn every user in the first second (the locustfile staggers their first request)."""
        return min(self.users, MAX_SPAWN_RATE)


def locust_command(plan: LoadPlan) -> tuple[list[str], dict[str, str]]:
    """The argv that runs Locust headless for ``plan``, and the variables to add to its env.

    Spawn it without a shell, with stdout and stderr captured (pass stderr to
    :func:`generator_warnings`). End it early with SIGTERM: Locust then runs its quit
    handlers, which flush the samples, and exits within ``plan.stop_timeout_s`` seconds.
    Exit codes: 0 normal (failed requests do not change it, ``--exit-code-on-error 0``),
    1 Locust could not start, 2 an unhandled error inside Locust.

    Locust also reads ``LOCUST_*`` variables and ``locust.conf`` / ``pyproject.toml``
    (``[tool.locust]``) in its working directory; every option set here wins over those,
    but for a clean run drop ``LOCUST_*`` from the environment (see :func:`locust_environment`)
    and start it in a directory of its own.

    One process only: a plan with ``workers`` needs a master and workers, see
    :func:`harness.load.distributed.locust_processes`.
    """
    if plan.workers is not None:
        raise ValueError(
            "a plan with workers runs several Locust processes: use "
            "harness.load.distributed.locust_processes(plan, master_port)"
        )
    files = str(LOCUSTFILE) if plan.locustfile is None else f"{USER_SAMPLING},{plan.locustfile}"
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        files,
        "--headless",
        "--users",
        str(plan.users),
        "--spawn-rate",
        str(plan.spawn_rate),
        "--host",
        plan.host,
        "--run-time",
        f"{plan.run_time_arg_s}s",
        "--stop-timeout",
        str(plan.stop_timeout_s),
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",
    ]
    env = {
        "HARNESS_LOAD_MODE": plan.mode,
        "HARNESS_LOAD_USERS": str(plan.users),
        "HARNESS_LOAD_MAX_IN_FLIGHT": str(plan.in_flight_per_user()),
        "HARNESS_SAMPLES_PATH": str(plan.samples_path),
        "HARNESS_REQUEST_TIMEOUT": repr(float(plan.request_timeout_s)),
        "HARNESS_LOAD_PATH_TEMPLATE": plan.path_template,
        "PYTHONUNBUFFERED": "1",
    }
    if plan.rate is not None:
        env["HARNESS_LOAD_RATE"] = repr(float(plan.rate))
    if plan.seed is not None:
        env["HARNESS_LOAD_SEED"] = str(plan.seed)
    return argv, env


def locust_environment(plan: LoadPlan, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) without ``LOCUST_*`` variables, plus the plan's."""
    source = os.environ if base is None else base
    env = {key: value for key, value in source.items() if not key.startswith("LOCUST_")}
    env.update(locust_command(plan)[1])
    return env


# --------------------------------------------------------------------------- plan checks


def _positive_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


# --------------------------------------------------------------------------- warnings


def generator_warnings(stderr_text: str) -> list[str]:
    """The notable problems Locust reported on stderr, worst first, without repeats.

    A saturated generator CPU comes first as one message starting with
    :data:`CPU_SATURATION` (latencies and the achieved rate are then Locust's limits, not the
    system's); then every other WARNING / ERROR / CRITICAL log line, and a note if a
    Python traceback was printed.
    """
    cpu_saturated = False
    others: list[str] = []
    for line in stderr_text.splitlines():
        if any(marker in line for marker in _CPU_MARKERS):
            cpu_saturated = True
            continue
        match = _LOG_LINE.match(line)
        if match:
            level, logger, message = match.groups()
            others.append(f"locust {level.lower()} ({logger.strip()}): {message.strip()}")
        elif line.startswith("Traceback (most recent call last)"):
            others.append("locust printed a Python traceback (see its stderr)")
    found: list[str] = []
    if cpu_saturated:
        found.append(
            f"{CPU_SATURATION}: Locust's CPU usage went above 90%, so the achieved rate and "
            "the latencies may be limits of the generator, not of the system under test; "
            "lower the rate or spread the load (locust --processes N)"
        )
    found.extend(dict.fromkeys(others))
    return found


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class LoadSummary:
    """Offered vs achieved load over one window ``[start, end)`` (epoch seconds).

    ``offered_rate`` is ``None`` in concurrency mode (no schedule). ``late`` counts the
    requests that started more than :data:`LATE_MS` after their intended start and
    ``max_lag_ms`` is the worst lag; ``schedule_slipped`` says more than
    :data:`SLIPPED_SHARE` of them were late. ``coordinated_omission`` is True only for a
    closed-loop paced run (samples without intended starts at an offered rate) that fell
    short of it: only then are the latencies optimistic.
    """

    start: float
    end: float
    count: int
    ok_count: int
    offered_rate: float | None
    achieved_rate: float
    coordinated_omission: bool
    message: str | None = field(default=None)
    late: int = 0
    max_lag_ms: float = 0.0
    schedule_slipped: bool = False

    @property
    def error_count(self) -> int:
        return self.count - self.ok_count

    @property
    def achieved_ratio(self) -> float | None:
        """Achieved over offered rate (1.0 = kept up with the target; None: no target)."""
        return None if self.offered_rate is None else self.achieved_rate / self.offered_rate


def summarize(
    samples: SampleColumns | Iterable[Sample],
    start: float,
    end: float,
    target_rate: float | None,
) -> LoadSummary:
    """Count the samples that started in ``[start, end)`` and compare with ``target_rate``.

    With a target (open mode) it says when requests started late (the generator's CPU or
    its in-flight limit; corrected latencies include the lag, but the system saw less load
    than offered) and when fewer than 90% of the offered requests were sent. Samples
    without intended starts at a target rate come from a closed-loop paced run: a
    shortfall there is coordinated omission (latencies optimistic), and the message says
    how many users Little's law asks for. Without a target (concurrency mode) nothing is
    flagged: the users' own pace is the load.
    """
    if not end > start:
        raise ValueError(f"the window must have end > start, got [{start}, {end})")
    if target_rate is not None and not target_rate > 0:
        raise ValueError(f"target_rate must be positive or None, got {target_rate}")
    window = as_columns(samples).window(start, end)
    duration = end - start
    count = len(window)
    achieved = count / duration
    lags = window.lag_ms
    late = int(np.count_nonzero(lags > LATE_MS))
    max_lag = float(lags.max()) if count else 0.0
    scheduled = bool(window.scheduled.any())
    short = target_rate is not None and achieved < COORDINATED_OMISSION_RATIO * target_rate
    slipped = target_rate is not None and count > 0 and late / count > SLIPPED_SHARE
    omission = short and not scheduled
    notes: list[str] = []
    if target_rate is not None and short:
        notes.append(
            f"achieved {achieved:.1f} req/s is {100 * achieved / target_rate:.0f}% of the "
            f"offered {target_rate:g} req/s over {duration:.1f} s"
        )
    if omission and count:
        mean_s = float(window.ms.sum()) / count / 1000
        needed = math.ceil((target_rate or 0.0) * mean_s * 1.5)
        notes[-1] = (
            "coordinated omission: "
            + notes[-1]
            + ". These users were closed-loop, so a slow system lowered its own load and "
            "the latencies understate what clients at the target rate would see. At the "
            f"mean latency of {mean_s * 1000:.0f} ms the target needs at least {needed} "
            "users (rate x latency x 1.5); raise users or lower the rate."
        )
    elif short and not count:
        notes[-1] += ": no request started in the window: did Locust start?"
    if slipped:
        notes.append(
            f"schedule slipped: {late} of {count} requests ({100 * late / count:.1f}%) "
            f"started more than {LATE_MS:g} ms late (worst {max_lag:.0f} ms), so the system "
            "saw less load than offered; the corrected latencies include the delay. The "
            "generator was short of CPU (see its warnings) or every in-flight slot was "
            "taken; lower the rate or spread the load over more processes."
        )
    elif short and scheduled:
        notes[-1] += " (requests started on time: the run or the window was cut short)"
    return LoadSummary(
        start=start,
        end=end,
        count=count,
        ok_count=int(np.count_nonzero(window.ok)),
        offered_rate=target_rate,
        achieved_rate=achieved,
        coordinated_omission=omission,
        message="; ".join(notes) if notes else None,
        late=late,
        max_lag_ms=max_lag,
        schedule_slipped=slipped,
    )


# --------------------------------------------------------------------------- host-mode run


@dataclass(frozen=True)
class LoadResult:
    """What one :func:`run_load` produced."""

    samples: tuple[Sample, ...]
    warnings: tuple[str, ...]
    exit_code: int
    stderr: str
    started_at: float
    ended_at: float


def run_load(plan: LoadPlan, timeout: float | None = None, cwd: Path | None = None) -> LoadResult:
    """Run Locust for ``plan`` as a child process and wait for it (tests and host mode).

    ``timeout`` (default: run time + stop timeout + 30 s for start-up) bounds the wait;
    past it Locust gets SIGTERM (it flushes its samples), then SIGKILL, and
    :class:`LoadError` is raised. Locust runs in its own session, in ``cwd`` (default: the
    samples file's directory, so no stray ``locust.conf`` is read), without ``LOCUST_*``
    variables. Any exception here, Ctrl-C included, stops the child before propagating.
    ``plan.samples_path`` must be new (or empty): the locustfile appends to it.
    """
    argv, _ = locust_command(plan)
    env = locust_environment(plan)
    limit = timeout if timeout is not None else _default_timeout(plan)
    workdir = cwd if cwd is not None else plan.samples_path.parent
    if plan.samples_path.exists() and plan.samples_path.stat().st_size:
        raise LoadError(
            f"{plan.samples_path} already holds samples, and Locust appends to it: give each "
            "run a fresh samples_path (or delete the old file first)"
        )
    plan.samples_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=workdir,
        env=env,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        _, stderr = _stop(process, grace_s=plan.stop_timeout_s + 5)
        warnings = generator_warnings(stderr.decode(errors="replace"))
        raise LoadError(
            f"Locust did not finish within {limit:g} s (run time {plan.run_time_arg_s} s, "
            f"stop timeout {plan.stop_timeout_s} s) and was stopped; give it a longer timeout "
            f"(default: run time + stop timeout + {STARTUP_ALLOWANCE_S:g} s). Its warnings: "
            f"{'; '.join(warnings) or 'none'}. Samples so far are in {plan.samples_path}."
            f"\ncommand: {argv}"
        ) from None
    except BaseException:
        _stop(process, grace_s=2)
        raise
    ended = time.time()
    stderr_text = stderr.decode(errors="replace")
    samples = tuple(read_samples(plan.samples_path))
    warnings = generator_warnings(stderr_text)
    if process.returncode != 0:
        if not samples:
            raise LoadError(
                f"Locust exited with code {process.returncode} before recording a request; "
                f"its stderr ended with:\n{_tail(stderr)}\ncommand: {argv}"
            )
        warnings.insert(0, f"locust exited with code {process.returncode}")
    return LoadResult(
        samples=samples,
        warnings=tuple(warnings),
        exit_code=process.returncode,
        stderr=stderr_text,
        started_at=started,
        ended_at=ended,
    )


def _default_timeout(plan: LoadPlan) -> float:
    return plan.run_time_arg_s + plan.stop_timeout_s + STARTUP_ALLOWANCE_S


def _stop(process: subprocess.Popen[bytes], grace_s: float) -> tuple[bytes, bytes]:
    """SIGTERM Locust's process group, SIGKILL it after ``grace_s``; collect the output."""
    _signal_group(process, signal.SIGTERM)
    try:
        return process.communicate(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        return process.communicate()


def _signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    # The child leads its own session (start_new_session), so its pid is its group id;
    # the group also holds any --processes children.
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)


def _tail(stderr: bytes | None, lines: int = 15) -> str:
    text = (stderr or b"").decode(errors="replace").rstrip()
    return "\n".join(text.splitlines()[-lines:]) or "(nothing)"


__all__ = [
    "COORDINATED_OMISSION_RATIO",
    "CPU_SATURATION",
    "LATE_MS",
    "LOCUSTFILE",
    "MAX_TOTAL_IN_FLIGHT",
    "USER_SAMPLING",
    "LoadMode",
    "LoadPlan",
    "LoadResult",
    "LoadSummary",
    "Sample",
    "SampleColumns",
    "SampleTail",
    "as_columns",
    "generator_warnings",
    "locust_command",
    "locust_environment",
    "read_sample_columns",
    "read_samples",
    "run_load",
    "summarize",
]
