"""The locustfile for the sample app; it runs only inside the Locust process.

Importing locust monkey-patches the whole interpreter with gevent, so the harness never
imports this module: ``harness.load.driver`` builds the command line that points Locust at
this file and reads back the samples it writes. The file imports nothing from ``harness``,
so it also runs where only Locust is installed (a worker pod, ``--processes`` children).

Configuration comes from the environment (the driver sets it):

====================================  ===================================================
``HARNESS_LOAD_RATE``                 target arrival rate of all users together, req/s
``HARNESS_LOAD_USERS``                number of users (each offers ``rate / users`` req/s)
``HARNESS_SAMPLES_PATH``              JSON-lines file the samples are appended to
``HARNESS_REQUEST_TIMEOUT``           per-request timeout in seconds (default 10)
``HARNESS_LOAD_PATH_TEMPLATE``        request path, ``{id}`` is 1..1000 (``/product/{id}``)
``HARNESS_LOAD_SEED``                 seed for the ids (optional)
====================================  ===================================================

Each request becomes one line of ``HARNESS_SAMPLES_PATH``::

    {"t": 1718000000.123, "ms": 4.21, "status": 503, "ok": false, "err": "HTTP 503",
     "rid": "9b1c..."}

``t`` is the start (epoch seconds), ``status`` is 0 for a transport error and ``rid`` is
the ``x-request-id`` sent, so a sample can be followed through the mesh's access logs.
Lines are buffered and flushed every 0.25 s, on test stop and on quit (SIGTERM and the
``--run-time`` limit both go through Locust's shutdown, which fires those events).
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import random
import re
import time
import uuid
from typing import Any

import gevent
from locust import HttpUser, constant_throughput, events, task
from locust.exception import CatchResponseError

FLUSH_INTERVAL_S = 0.25
MAX_ID = 1000
_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+")


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


RATE = _positive("HARNESS_LOAD_RATE")
USERS = max(1, int(_positive("HARNESS_LOAD_USERS")))
SAMPLES_PATH = _env("HARNESS_SAMPLES_PATH")
REQUEST_TIMEOUT_S = _positive("HARNESS_REQUEST_TIMEOUT", "10")
PATH_TEMPLATE = _env("HARNESS_LOAD_PATH_TEMPLATE", "/product/{id}")
_seed = os.environ.get("HARNESS_LOAD_SEED") or None
_ids = random.Random(int(_seed) if _seed is not None else None)
_user_numbers = itertools.count()


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

    def add(self, sample: dict[str, Any]) -> None:
        self._lines.append(json.dumps(sample, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        if not self._lines:
            return
        # Swap the buffer first: no yield to other greenlets happens before the write.
        lines, self._lines = self._lines, []
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


def _short_error(exception: BaseException) -> str:
    """``HTTP 503``, ``ReadTimeout``, ``ConnectionError: [Errno 111] Connection refused``."""
    message = str(exception)
    if isinstance(exception, CatchResponseError):
        return message[:200]
    errno = _ERRNO.search(message)
    detail = errno.group(0).strip() if errno else ""
    name = type(exception).__name__
    return f"{name}: {detail}"[:200] if detail else name


@events.request.add_listener
def record_sample(
    start_time: float | None = None,
    response_time: float = 0.0,
    response: Any = None,
    context: dict[str, Any] | None = None,
    exception: BaseException | None = None,
    **_: Any,
) -> None:
    status = int(getattr(response, "status_code", 0) or 0)
    writer.add(
        {
            "t": start_time if start_time is not None else time.time() - response_time / 1000,
            "ms": float(response_time),
            "status": status,
            "ok": exception is None,
            "err": None if exception is None else _short_error(exception),
            "rid": (context or {}).get("rid", ""),
        }
    )


@events.init.add_listener
def start_flusher(**_: Any) -> None:
    gevent.spawn(writer.flush_forever)


@events.test_stop.add_listener
@events.quitting.add_listener
@events.quit.add_listener
def flush_samples(**_: Any) -> None:
    writer.flush()


class SampleAppUser(HttpUser):
    """Offers ``RATE / USERS`` requests per second each; the users together offer ``RATE``.

    Locust starts all users of one spawn step at the same instant; each user waits for its
    own slot first, so arrivals are spread evenly instead of coming in bursts of ``USERS``.
    """

    wait_time = constant_throughput(RATE / USERS)

    def on_start(self) -> None:
        gevent.sleep((next(_user_numbers) % USERS) / RATE)
        # constant_throughput counts from User.__init__ (locust/user/users.py); restart its
        # clock after the stagger, or the first wait would undo it.
        self._cp_last_run = time.perf_counter()

    @task
    def get_item(self) -> None:
        rid = str(uuid.uuid4())
        path = PATH_TEMPLATE.format(id=_ids.randint(1, MAX_ID))
        with self.client.get(
            path,
            name=PATH_TEMPLATE,
            headers={"x-request-id": rid},
            timeout=REQUEST_TIMEOUT_S,
            context={"rid": rid},
            catch_response=True,
        ) as response:
            status = response.status_code
            if 200 <= status < 300:
                response.success()
            elif status != 0:  # status 0: a transport error, which Locust reports itself
                response.failure(f"HTTP {status}")
