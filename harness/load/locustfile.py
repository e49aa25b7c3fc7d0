"""The locustfile for the sample app; it runs only inside the Locust process.

Importing locust monkey-patches the whole interpreter with gevent, so the harness never
imports this module: ``harness.load.driver`` builds the command line that points Locust at
this file and reads back the samples it writes. The file imports nothing from ``harness``,
so it also runs where only Locust is installed (a worker pod, ``--processes`` children).

Two load modes (``HARNESS_LOAD_MODE``):

``open`` (default): wrk2's open-loop model. User ``u`` of ``U`` owns a fixed arrival
schedule: request ``k`` is due at ``T0 + u/rate + k*U/rate`` (the users interleave, so the
merged schedule is one request every ``1/rate`` s). A user never waits for a response
before sending the next request: it keeps a free worker greenlet for the next slot, up to
``HARNESS_LOAD_MAX_IN_FLIGHT`` requests in flight (the driver sizes that so requests that
end by their timeout never fill it). A request that could not start on time (the generator's CPU
was busy, or the in-flight limit was reached) starts as soon as it can, in schedule order:
the schedule is never shifted (no lockstep after a slow request) and never compressed
(no burst beyond what the schedule says). Every sample keeps its intended start, and
latency for verdicts is measured from it.

``concurrency``: fortio's model. ``U`` users, each sending its next request as soon as the
previous one answered (closed loop, no pacing, one connection per user): ``U`` requests in
flight at all times, as in Istio's circuit-breaking task. There is no schedule, so samples
carry no intended start.

Configuration comes from the environment (the driver sets it):

====================================  ===================================================
``HARNESS_LOAD_MODE``                 ``open`` (default) or ``concurrency``
``HARNESS_LOAD_RATE``                 open: arrival rate of all users together, req/s
``HARNESS_LOAD_USERS``                number of users
``HARNESS_LOAD_MAX_IN_FLIGHT``        open: requests one user may have in flight
``HARNESS_SAMPLES_PATH``              JSON-lines file the samples are appended to
``HARNESS_REQUEST_TIMEOUT``           connect and read timeout in seconds (default 10)
``HARNESS_LOAD_PATH_TEMPLATE``        request path, ``{id}`` is 1..100 (``/product/{id}``)
``HARNESS_LOAD_SEED``                 seed for the ids (optional)
``HARNESS_LOAD_ROLE``                 ``local`` (default, one process), ``master`` or
                                      ``worker`` (Locust's distributed mode)
``HARNESS_LOAD_WORKERS``              distributed: the number of workers
``HARNESS_LOAD_REPORT``               master: where to write the workers' final reports
====================================  ===================================================

Distributed mode (``--master`` + ``--worker`` processes, ``load.workers``): the schedule
stays the single process's. The master sends every worker one origin ``T0`` before any
user starts, and the ``k``-th user a worker starts takes the global index
``worker_index + k * workers`` (Locust's ``worker_index`` is 0..workers-1 and its
dispatcher hands each worker ``users / workers`` users), so the users of all workers
together own exactly the slots one process would give its users. At stop the master
*drains* the workers before quitting: each worker stops its users (in-flight requests
finish and are recorded), flushes its samples, sends Locust its last stats report, then
reports its sample count and user indices; the master writes those reports to
``HARNESS_LOAD_REPORT``. Locust's own master waits only 0.5 s for the workers' last stats
after ``quit``, so without the drain its totals would miss the requests that finish later.
A master does not send requests and needs no ``HARNESS_SAMPLES_PATH``.

Each request becomes one line of ``HARNESS_SAMPLES_PATH``::

    {"t":1718000000.123,"ms":4.21,"status":503,"ok":false,"err":"HTTP 503",
     "rid":"9b1c...","intended":1718000000.120}

``t`` is the actual start (epoch seconds), ``ms`` the service time from ``t``, ``status``
0 for a transport error, ``rid`` the ``x-request-id`` sent (so a sample can be followed
through the mesh's access logs) and ``intended`` the start the schedule asked for (``null``
in concurrency mode). Lines are buffered and flushed every 0.25 s, on test stop and on quit
(SIGTERM and the ``--run-time`` limit both go through Locust's shutdown, which fires those
events).
"""

from __future__ import annotations

import atexit
import itertools
import json
import math
import os
import random
import re
import time
import uuid
from typing import Any

import gevent
from gevent import Greenlet
from gevent.event import Event
from gevent.pool import Group
from locust import FastHttpUser, constant, events, task
from locust.exception import CatchResponseError
from locust.runners import MasterRunner, WorkerRunner

FLUSH_INTERVAL_S = 0.25
MAX_ID = 100
"""Ids 1..MAX_ID; the app only passes the id on. 100 distinct URLs stay inside the 128-entry
cache of ``urllib.parse.urlsplit``, which geventhttpclient calls on every request."""
_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+")
ORIGIN_LEAD_S = 0.2
"""Distributed: ``T0`` is this far after the master's start, so the message reaches every
worker before the first slot is due."""
DRAIN_MARGIN_S = 5.0
"""Distributed: the master waits the stop timeout plus this for every worker's drain."""


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None or value == "":
        raise RuntimeError(
            f"{name} is not set: this locustfile is configured by harness.load.driver "
            "(use locust_command() or run_load() to start Locust)"
        )
    return value


def _positive(name: str, default: str | None = None) -> float:
    raw = _env(name, default)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise RuntimeError(f"{name} must be a positive number, got {raw!r}")
    return value


MODE = _env("HARNESS_LOAD_MODE", "open")
if MODE not in ("open", "concurrency"):
    raise RuntimeError(f"HARNESS_LOAD_MODE must be 'open' or 'concurrency', got {MODE!r}")
USERS = max(1, int(_positive("HARNESS_LOAD_USERS")))
RATE = _positive("HARNESS_LOAD_RATE") if MODE == "open" else 0.0
MAX_IN_FLIGHT = max(1, int(_positive("HARNESS_LOAD_MAX_IN_FLIGHT", "1")))
ROLE = _env("HARNESS_LOAD_ROLE", "local")
if ROLE not in ("local", "master", "worker"):
    raise RuntimeError(f"HARNESS_LOAD_ROLE must be 'local', 'master' or 'worker', got {ROLE!r}")
WORKERS = max(1, int(_positive("HARNESS_LOAD_WORKERS", "1")))
# A master sends no request, so it writes no sample.
SAMPLES_PATH = os.devnull if ROLE == "master" else _env("HARNESS_SAMPLES_PATH")
REPORT_PATH = _env("HARNESS_LOAD_REPORT") if ROLE == "master" else ""
REQUEST_TIMEOUT_S = _positive("HARNESS_REQUEST_TIMEOUT", "10")
PATH_TEMPLATE = _env("HARNESS_LOAD_PATH_TEMPLATE", "/product/{id}")
_seed = os.environ.get("HARNESS_LOAD_SEED") or None
_ids = random.Random(int(_seed) if _seed is not None else None)
_user_numbers = itertools.count()
_schedule_origin: list[float] = []  # T0: the first user's start, or the master's origin
_origin_set = Event()
_user_indices: list[int] = []  # this process's users: global indices (open), local (concurrency)
_drained: dict[str, dict[str, Any]] = {}  # master: worker node id -> its final report


def global_user_index(local: int, worker_index: int, workers: int) -> int:
    """The global index of the ``local``-th user a worker starts (0-based).

    Worker ``w`` of ``W`` owns the indices ``w, w + W, w + 2W, ...``: with ``users / W``
    users on each worker (Locust's dispatcher gives each worker an equal share when users
    is a multiple of W) the workers' users together hold every index ``0..users-1`` once,
    so together they own exactly the slots of a single process's users. One process
    (``W = 1``, ``w = 0``) numbers its users ``0, 1, 2, ...``.
    """
    return worker_index + local * workers


class SampleWriter:
    """Buffers sample lines and appends them to the samples file in whole lines.

    Each flush is one ``write(2)`` on an ``O_APPEND`` descriptor, so a reader tailing the
    file sees only whole lines (plus, at worst, one line still being written), and several
    Locust processes (``--processes``) can share one file.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._lines: list[str] = []
        self._fd: int | None = None
        self.written = 0  # lines handed to write(2) so far

    def add(self, line: str) -> None:
        self._lines.append(line)

    def flush(self) -> None:
        if not self._lines:
            return
        # Swap the buffer first: no yield to other greenlets happens before the write.
        lines, self._lines = self._lines, []
        self.written += len(lines)
        if self._fd is None:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        data = memoryview("".join(lines).encode())
        while data:
            data = data[os.write(self._fd, data) :]

    def flush_forever(self) -> None:
        while True:
            gevent.sleep(FLUSH_INTERVAL_S)
            self.flush()


writer = SampleWriter(SAMPLES_PATH)
atexit.register(writer.flush)  # the last resort, should an exit skip Locust's events


_rid_state: list[Any] = [0, "", itertools.count()]  # pid, prefix, counter


def request_id() -> str:
    """A fresh ``x-request-id`` in UUID v4 form: random per process, then a counter.

    ``str(uuid.uuid4())`` costs a ``getrandom`` call and a UUID object per request; this
    draws the random part once per process (again after a fork, ``--processes``), and the
    counter keeps ids unique within it.
    """
    pid = os.getpid()
    if _rid_state[0] != pid:
        raw = uuid.uuid4().hex
        _rid_state[:] = [
            pid,
            f"{raw[:8]}-{raw[8:12]}-4{raw[13:16]}-8{raw[17:20]}-",
            itertools.count(),
        ]
    return f"{_rid_state[1]}{next(_rid_state[2]) % 16**12:012x}"


def _short_error(exception: BaseException) -> str:
    """``HTTP 503``, ``TimeoutError``, ``ConnectionRefusedError: [Errno 111] ...``."""
    original = getattr(exception, "original", None)
    if isinstance(original, BaseException):  # geventhttpclient's RetriesExceeded wraps it
        return _short_error(original)
    message = str(exception)
    if isinstance(exception, CatchResponseError):
        return message[:200]
    errno = _ERRNO.search(message)
    detail = errno.group(0).strip() if errno else ""
    name = type(exception).__name__
    return f"{name}: {detail}"[:200] if detail else name


def sample_line(
    t: float,
    ms: float,
    status: int,
    err: str | None,
    rid: str,
    intended: float | None,
) -> str:
    """One JSON line; formatted by hand because ``json.dumps`` of a dict costs 3x more.

    Times are written to the microsecond (``t`` and ``intended`` with six decimals, ``ms``
    with three): finer than the clocks they come from, and few enough digits (at most 16)
    that the harness reads them back exactly without parsing each line
    (``harness.load.sample_lines``). Only ``err`` and ``rid`` can hold arbitrary text, so
    only they go through ``json.dumps``.
    """
    return (
        f'{{"t":{t:.6f},"ms":{ms:.3f},"status":{status},'
        f'"ok":{"true" if err is None else "false"},'
        f'"err":{"null" if err is None else json.dumps(err)},"rid":{json.dumps(rid)},'
        f'"intended":{"null" if intended is None else format(intended, ".6f")}}}\n'
    )


@events.request.add_listener
def record_sample(
    start_time: float | None = None,
    response_time: float = 0.0,
    response: Any = None,
    context: dict[str, Any] | None = None,
    exception: BaseException | None = None,
    **_: Any,
) -> None:
    """One sample per request: a 2xx without exception is a success, any other status
    fails as ``HTTP <status>``, no status (0) is a transport error named by its cause."""
    context = context or {}
    start = start_time if start_time is not None else time.time() - response_time / 1000
    status = int(getattr(response, "status_code", 0) or 0)
    if exception is None and 200 <= status < 300:
        err = None
    elif status:
        err = f"HTTP {status}"
    else:
        err = "no response" if exception is None else _short_error(exception)
    writer.add(
        sample_line(
            float(start),
            float(response_time),
            status,
            err,
            str(context.get("rid", "")),
            context.get("intended"),
        )
    )


@events.init.add_listener
def start_flusher(environment: Any, **_: Any) -> None:
    gevent.spawn(writer.flush_forever)
    runner = environment.runner
    if ROLE == "master":
        if not isinstance(runner, MasterRunner):
            raise RuntimeError("HARNESS_LOAD_ROLE=master needs locust --master")
        runner.register_message("harness_drained", _record_drained)
    elif ROLE == "worker":
        if not isinstance(runner, WorkerRunner):
            raise RuntimeError("HARNESS_LOAD_ROLE=worker needs locust --worker")
        runner.register_message("harness_origin", _take_origin)
        runner.register_message("harness_drain", _drain, concurrent=True)
        if _seed is not None:  # repeatable, yet not the same ids from every worker
            _ids.seed(f"{_seed}-worker-{runner.worker_index}")


@events.test_start.add_listener
def send_origin(environment: Any, **_: Any) -> None:
    """Master: one ``T0`` for every worker, sent before the users are (ZeroMQ keeps the
    order of messages to each worker, and Locust sends the spawn messages after this)."""
    if ROLE == "master":
        environment.runner.send_message("harness_origin", {"origin": time.time() + ORIGIN_LEAD_S})


def _take_origin(msg: Any, **_: Any) -> None:
    if not _schedule_origin:
        _schedule_origin.append(float(msg.data["origin"]))
        _origin_set.set()


def _drain(environment: Any, **_: Any) -> None:
    """Worker: stop the users (in-flight requests finish and are recorded), flush, send
    Locust's stats report, then this worker's own count. The master reads them in order."""
    runner = environment.runner
    runner.stop()
    writer.flush()
    data: dict[str, Any] = {}
    environment.events.report_to_master.fire(client_id=runner.client_id, data=data)
    runner.send_message("stats", data)  # what Locust's own periodic report sends
    runner.send_message(
        "harness_drained",
        {
            "index": runner.worker_index,
            "users": len(_user_indices),
            "indices": sorted(_user_indices) if MODE == "open" else [],
            "samples": writer.written,
            "samples_path": SAMPLES_PATH,
        },
    )


def _record_drained(msg: Any, **_: Any) -> None:
    _drained[str(msg.node_id)] = dict(msg.data)


@events.test_stop.add_listener
def drain_workers(environment: Any, **_: Any) -> None:
    """Master: before Locust's quit (which waits only 0.5 s for the workers' last stats),
    have every worker stop, report, and say how many samples it wrote; write the reports.
    Bounded by the stop timeout plus :data:`DRAIN_MARGIN_S`."""
    if ROLE != "master":
        return
    runner = environment.runner
    expected = {client.id for client in runner.clients.all}
    started = time.monotonic()
    runner.send_message("harness_drain")
    deadline = started + float(environment.stop_timeout or 0) + DRAIN_MARGIN_S
    while not expected <= set(_drained) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    report = {
        "workers": WORKERS,
        "connected": len(expected),
        "drain_s": round(time.monotonic() - started, 3),
        "reports": [dict(data, node=node) for node, data in sorted(_drained.items())],
    }
    temporary = f"{REPORT_PATH}.tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(report, file)
    os.replace(temporary, REPORT_PATH)


@events.test_stop.add_listener
@events.quitting.add_listener
@events.quit.add_listener
def flush_samples(**_: Any) -> None:
    writer.flush()


class Schedule:
    """User ``index`` of ``users`` at ``rate`` req/s in total: slot ``k`` is due at
    ``origin + index/rate + k*users/rate``. The users' slots interleave into one request
    every ``1/rate`` s. Pure arithmetic on wall-clock seconds, so tests can check it."""

    def __init__(self, origin: float, index: int, users: int, rate: float) -> None:
        self.origin = origin
        self.offset = (index % users) / rate
        self.period = users / rate

    def due(self, slot: int) -> float:
        """The intended start of slot ``slot`` (epoch seconds)."""
        return self.origin + self.offset + slot * self.period

    def first_slot(self, now: float) -> int:
        """The first slot whose intended start is not before ``now``.

        A user that starts late (spawning takes time) begins at its next slot: the slots
        before it existed were never owed, so skipping them omits nothing.
        """
        return max(0, math.ceil((now - self.origin - self.offset) / self.period - 1e-9))


def _origin() -> float:
    """``T0``: one process takes the first user's start; a worker waits for the master's."""
    if ROLE != "worker" and not _schedule_origin:
        _schedule_origin.append(time.time())
        _origin_set.set()
    if not _origin_set.wait(timeout=30):
        raise RuntimeError("no schedule origin from the Locust master within 30 s")
    return _schedule_origin[0]


def _next_user_index(user: Any) -> int:
    """This user's global index (see :func:`global_user_index`), recorded for the drain."""
    local = next(_user_numbers)
    if ROLE != "worker":
        index = local
    else:
        index = global_user_index(local, int(user.environment.runner.worker_index), WORKERS)
        if not 0 <= index < USERS:
            raise RuntimeError(
                f"user index {index} is outside 0..{USERS - 1}: Locust gave this worker "
                f"(index {user.environment.runner.worker_index}) more than "
                f"{USERS // WORKERS} users; users must be a multiple of the workers"
            )
    _user_indices.append(index)
    return index


class _SampleAppUser(FastHttpUser):
    """What both modes share: one GET per request, its id, status and error recorded."""

    abstract = True
    # FastHttpSession applies these per connect and per socket read, as requests did.
    network_timeout = REQUEST_TIMEOUT_S
    connection_timeout = REQUEST_TIMEOUT_S
    max_retries = 0

    def send(self, intended: float | None) -> None:
        rid = request_id()
        # No catch_response: record_sample judges the status itself, which saves Locust's
        # response context manager on every request.
        self.client.get(
            PATH_TEMPLATE.format(id=_ids.randint(1, MAX_ID)),
            name=PATH_TEMPLATE,
            headers={"x-request-id": rid},
            context={"rid": rid, "intended": intended},
        )


if MODE == "open":

    class OpenLoopUser(_SampleAppUser):
        """Follows its own fixed arrival schedule; never waits for a response to send.

        The user's requests are sent by worker greenlets that take the schedule's slots in
        order: a worker takes the next slot, sleeps until it is due, sends, and takes the
        next free slot. A worker about to send while every other worker is busy starts
        one more first (up to ``MAX_IN_FLIGHT``), so a slow response never holds back the
        next slot: the schedule is kept however slow the system is. Only with all
        ``MAX_IN_FLIGHT`` workers busy does a slot wait; it then goes out as soon as a
        worker is free, with its intended start kept, so the lag shows in the corrected
        latency instead of being omitted. Workers persist (no greenlet per request), which
        keeps the cost per request close to a closed-loop user's.

        Locust's own loop for this user only waits; stopping it stops the idle workers at
        once and lets the busy ones finish their request (recorded), bounded by the
        timeout.
        """

        concurrency = MAX_IN_FLIGHT  # connections: one per request that may be in flight
        wait_time = constant(3600)

        def on_start(self) -> None:
            self._schedule = Schedule(_origin(), _next_user_index(self), USERS, RATE)
            self._slot = self._schedule.first_slot(time.time())
            self._workers = Group()
            self._idle: set[Greenlet] = set()
            self._busy = 0
            self._stopping = False
            self._workers.spawn(self._work)

        def _work(self) -> None:
            me = gevent.getcurrent()
            while not self._stopping:
                intended = self._schedule.due(self._slot)
                self._slot += 1
                delay = intended - time.time()
                if delay > 0:
                    self._idle.add(me)
                    try:
                        gevent.sleep(delay)
                    finally:
                        self._idle.discard(me)
                self._busy += 1
                if self._busy >= len(self._workers) and len(self._workers) < MAX_IN_FLIGHT:
                    self._workers.spawn(self._work)  # it takes the next slot
                try:
                    self.send(intended)
                finally:
                    self._busy -= 1

        @task
        def follow_schedule(self) -> None:
            """Nothing to do: the workers send; Locust's loop only waits (stoppable)."""

        def on_stop(self) -> None:
            self._stopping = True
            gevent.killall(list(self._idle))  # asleep before their slot: nothing in flight
            # The busy ones finish their request (so it is recorded), bounded by timeouts;
            # Locust's --stop-timeout bounds this too.
            self._workers.join(timeout=2 * REQUEST_TIMEOUT_S + 1)

else:

    class ConcurrencyUser(_SampleAppUser):
        """Sends its next request as soon as the previous one answered (no pacing)."""

        concurrency = 1  # one connection per user: N users hold N connections
        wait_time = constant(0)

        def on_start(self) -> None:
            _user_indices.append(next(_user_numbers))  # counted for the drain report

        @task
        def send_next(self) -> None:
            self.send(None)
