"""Per-request sampling for a user's own locustfile; it runs only inside the Locust process.

With ``load.locustfile: my_locustfile.py`` the driver runs
``locust -f <this file>,<the user's file>``: Locust imports both, takes the User classes
from the user's file (this module defines none) and fires its ``request`` event for every
request those users make. This module listens to that event and appends one JSON line per
request to ``HARNESS_SAMPLES_PATH``, in the built-in locustfile's record format plus the
request's Locust ``name``::

    {"t":1718000000.123,"ms":4.21,"status":503,"ok":false,"err":"HTTP 503",
     "rid":"9b1c...","intended":null,"name":"checkout"}

``t`` is the actual start, ``ms`` Locust's response time, ``status`` 0 for a transport
error. ``intended`` is always ``null``: the user's classes pace themselves (``wait_time``,
closed loop), so there is no arrival schedule to measure from, and the latencies carry the
coordinated omission of that pacing (a slow system lowers its own load). ``name`` is the
``name=`` the request was made with, or Locust's default (the URL path).

``rid``: before each request of an ``HttpUser`` or ``FastHttpUser`` client this module adds
an ``x-request-id`` header (a fresh UUID-shaped id) unless the request already has one, in
which case that one is recorded. Requests made another way (a custom client that fires
``events.request`` itself) get the ``x-request-id`` response header if there is one, else
an empty id (those samples then have no request path in the report).

Like ``locustfile.py`` it imports nothing from ``harness`` (it runs where only Locust is
installed), so its few helpers repeat that file's; ``tests/test_user_locustfile.py`` checks
that the two write the same record.

Environment: ``HARNESS_SAMPLES_PATH`` (required).
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import time
import uuid
from typing import Any

import gevent
from locust import events
from locust.clients import HttpSession
from locust.contrib.fasthttp import FastHttpSession
from locust.exception import CatchResponseError

FLUSH_INTERVAL_S = 0.25
RID_HEADER = "x-request-id"
_CONTEXT_KEY = "harness_rid"
_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+")

SAMPLES_PATH = os.environ.get("HARNESS_SAMPLES_PATH", "")
if not SAMPLES_PATH:
    raise RuntimeError(
        "HARNESS_SAMPLES_PATH is not set: this module is loaded by harness.load.driver "
        "beside a user's locustfile (load.locustfile)"
    )


class SampleWriter:
    """Buffers sample lines; each flush is one ``write(2)`` on an ``O_APPEND`` descriptor."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lines: list[str] = []
        self._fd: int | None = None

    def add(self, line: str) -> None:
        self._lines.append(line)

    def flush(self) -> None:
        if not self._lines:
            return
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
atexit.register(writer.flush)


def request_id() -> str:
    return str(uuid.uuid4())


def short_error(exception: BaseException) -> str:
    """``HTTP 503``, ``TimeoutError``, ``ConnectionRefusedError: [Errno 111] ...``."""
    original = getattr(exception, "original", None)
    if isinstance(original, BaseException):
        return short_error(original)
    message = str(exception)
    if isinstance(exception, CatchResponseError):
        return message[:200]
    errno = _ERRNO.search(message)
    detail = errno.group(0).strip() if errno else ""
    name = type(exception).__name__
    return f"{name}: {detail}"[:200] if detail else name


def sample_line(t: float, ms: float, status: int, err: str | None, rid: str, name: str) -> str:
    """One JSON line: the built-in record (``intended`` null) plus ``name``."""
    return (
        json.dumps(
            {
                "t": t,
                "ms": ms,
                "status": status,
                "ok": err is None,
                "err": err,
                "rid": rid,
                "intended": None,
                "name": name,
            },
            separators=(",", ":"),
        )
        + "\n"
    )


def _with_request_id(request: Any) -> Any:
    """Wrap a client's ``request``: add an ``x-request-id`` header and note it in the
    request's context (which Locust hands to the ``request`` event)."""

    @functools.wraps(request)
    def wrapper(self: Any, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
        if args:  # positional options: leave the call exactly as the user wrote it
            return request(self, method, url, *args, **kwargs)
        headers = dict(kwargs.get("headers") or {})
        rid = next((str(v) for k, v in headers.items() if k.lower() == RID_HEADER), None)
        if rid is None:
            rid = request_id()
            headers[RID_HEADER] = rid
        kwargs["headers"] = headers
        kwargs["context"] = {**(kwargs.get("context") or {}), _CONTEXT_KEY: rid}
        return request(self, method, url, **kwargs)

    return wrapper


HttpSession.request = _with_request_id(HttpSession.request)  # type: ignore[method-assign]
FastHttpSession.request = _with_request_id(FastHttpSession.request)  # type: ignore[method-assign]


def _response_rid(response: Any) -> str:
    headers = getattr(response, "headers", None)
    if headers is None:
        return ""
    try:
        value = headers.get(RID_HEADER)
    except Exception:  # a custom response object: no id rather than no sample
        return ""
    return str(value) if value else ""


@events.request.add_listener
def record_sample(
    name: str = "",
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
        err = "no response" if exception is None else short_error(exception)
    rid = str(context.get(_CONTEXT_KEY) or _response_rid(response))
    writer.add(sample_line(float(start), float(response_time or 0.0), status, err, rid, str(name)))


@events.init.add_listener
def start_flusher(**_: Any) -> None:
    gevent.spawn(writer.flush_forever)


@events.test_stop.add_listener
def flush_on_stop(**_: Any) -> None:
    writer.flush()


@events.quit.add_listener
def flush_on_quit(**_: Any) -> None:
    writer.flush()
