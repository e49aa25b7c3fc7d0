"""The sample app's service process (``harness.app.service``).

Most tests run the real service as a subprocess on 127.0.0.1. Its dependencies are reached
through a stand-in for the instance's Envoy sidecar: a tiny threaded HTTP server that
records each request and answers with a status chosen per ``Host``. The real Envoy is
exercised by the mesh tests; here the stand-in lets a test pick any dependency answer.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from harness.app.service import ServiceConfig, ServiceTime, build_app, parse_args
from harness.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
STARTUP_DEADLINE = 15.0  # seconds; generous, a 2-core machine may be busy


# ---------------------------------------------------------------- stand-in sidecar


@dataclass(frozen=True)
class SeenRequest:
    host: str
    path: str
    headers: dict[str, str]


@dataclass
class StandInSidecar:
    """Records what reaches the sidecar and answers ``statuses[host]`` (default 200).

    Requests to a host in ``hold`` wait for ``release`` before answering; a ``barrier``
    makes every request wait until that many are in flight at once.
    """

    port: int = 0
    requests: list[SeenRequest] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    hold: set[str] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)
    barrier: threading.Barrier | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
        self.statuses.clear()
        self.hold.clear()
        self.release = threading.Event()
        self.barrier = None

    def seen(self) -> list[SeenRequest]:
        with self.lock:
            return list(self.requests)

    def answer(self, host: str, path: str, headers: dict[str, str]) -> int:
        with self.lock:
            self.requests.append(SeenRequest(host, path, headers))
        if host in self.hold:
            self.release.wait(timeout=30)
        if self.barrier is not None:
            try:
                self.barrier.wait()
            except threading.BrokenBarrierError:
                return 500
        return self.statuses.get(host, 200)


def _handler_for(sidecar: StandInSidecar) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like Envoy

        def do_GET(self) -> None:
            headers = {name.lower(): value for name, value in self.headers.items()}
            status = sidecar.answer(headers.get("host", ""), self.path, headers)
            body = b"{}"
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the service gave up on a held answer (timeout or shutdown)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def sidecar_server() -> Iterator[StandInSidecar]:
    sidecar = StandInSidecar()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(sidecar))
    sidecar.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sidecar
    finally:
        sidecar.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def sidecar(sidecar_server: StandInSidecar) -> Iterator[StandInSidecar]:
    sidecar_server.reset()
    yield sidecar_server
    sidecar_server.release.set()


# ---------------------------------------------------------------- the service process


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def get(port: int, path: str, headers: dict[str, str] | None = None) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        answer_headers = {name.lower(): value for name, value in response.getheaders()}
        return Answer(response.status, answer_headers, body)
    finally:
        connection.close()


@dataclass(frozen=True)
class RunningService:
    process: subprocess.Popen[bytes]
    port: int


def _wait_ready(process: subprocess.Popen[bytes], port: int, stderr: Any) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr.seek(0)
            pytest.fail(
                f"service exited with {process.returncode} before becoming ready:\n"
                + stderr.read().decode(errors="replace")
            )
        try:
            if get(port, "/healthz").status == 200:
                return
        except OSError:
            time.sleep(0.02)
    pytest.fail(f"service did not answer /healthz on 127.0.0.1:{port} in {STARTUP_DEADLINE}s")


@contextmanager
def running_service(*args: str) -> Iterator[RunningService]:
    """Start ``python -m harness.app.service ARGS`` on a free port; always stop it."""
    port = free_port()
    command = [sys.executable, "-m", "harness.app.service", "--listen", f"127.0.0.1:{port}"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    with (
        tempfile.TemporaryFile() as stderr,
        subprocess.Popen(
            [*command, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr
        ) as process,
    ):
        try:
            _wait_ready(process, port, stderr)
            yield RunningService(process, port)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture(scope="module")
def leaf() -> Iterator[RunningService]:
    with running_service("--service", "pricing", "--instance", "pricing-0") as service:
        yield service


@pytest.fixture(scope="module")
def frontend(sidecar_server: StandInSidecar) -> Iterator[RunningService]:
    with running_service(
        "--service", "frontend",
        "--instance", "frontend-0",
        "--sidecar", f"127.0.0.1:{sidecar_server.port}",
        "--calls", "catalog,pricing",
        "--service-time", "1ms",
        "--dependency-timeout", "5s",
        "--seed", "7",
    ) as service:  # fmt: skip
        yield service


# ---------------------------------------------------------------- tests


@pytest.mark.integration
def test_healthz_answers_ok_without_calling_dependencies(
    frontend: RunningService, sidecar: StandInSidecar
) -> None:
    answer = get(frontend.port, "/healthz")

    assert (answer.status, answer.body) == (200, b"ok")
    assert sidecar.seen() == []


@pytest.mark.integration
def test_leaf_service_answers_200_json(leaf: RunningService) -> None:
    answer = get(leaf.port, "/pricing/42", {"x-request-id": "req-1"})

    assert answer.status == 200
    assert answer.json() == {
        "service": "pricing",
        "instance": "pricing-0",
        "path": "/pricing/42",
        "deps": {},
    }
    assert answer.headers["x-request-id"] == "req-1"


@pytest.mark.integration
def test_service_calls_every_dependency_through_the_sidecar_by_host(
    frontend: RunningService, sidecar: StandInSidecar
) -> None:
    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    answer = get(frontend.port, "/product/42", {"x-request-id": "req-42", **trace})

    assert answer.status == 200, answer.body
    assert answer.json()["deps"] == {"catalog": 200, "pricing": 200}
    seen = sorted(sidecar.seen(), key=lambda request: request.host)
    assert [(request.host, request.path) for request in seen] == [
        ("catalog", "/catalog/42"),
        ("pricing", "/pricing/42"),
    ]
    for request in seen:
        assert request.headers["x-request-id"] == "req-42"
        assert request.headers["traceparent"] == trace["traceparent"]


@pytest.mark.integration
def test_service_makes_up_a_request_id_when_none_comes_in(
    frontend: RunningService, sidecar: StandInSidecar
) -> None:
    answer = get(frontend.port, "/product/7")

    request_id = answer.headers["x-request-id"]
    assert uuid.UUID(request_id).version == 4
    assert {request.headers["x-request-id"] for request in sidecar.seen()} == {request_id}


@pytest.mark.integration
def test_dependencies_are_called_concurrently(
    frontend: RunningService, sidecar: StandInSidecar
) -> None:
    # Each stand-in answer waits until both calls are in flight; sequential calls would
    # break the barrier (500 → the service answers 502).
    sidecar.barrier = threading.Barrier(2, timeout=5)

    answer = get(frontend.port, "/product/1")

    assert answer.status == 200, answer.body


@pytest.mark.integration
@pytest.mark.parametrize("dependency_status", [503, 500, 404])
def test_failing_dependency_makes_the_service_answer_502_naming_it(
    frontend: RunningService, sidecar: StandInSidecar, dependency_status: int
) -> None:
    sidecar.statuses["pricing"] = dependency_status

    answer = get(frontend.port, "/product/42")

    assert answer.status == 502
    body = answer.json()
    assert body["failed"] == {"pricing": {"status": dependency_status, "error": None}}
    assert body["deps"] == {"catalog": 200, "pricing": dependency_status}
    assert f"'pricing' answered {dependency_status}" in body["error"]


@pytest.mark.integration
def test_dependency_outliving_its_timeout_makes_the_service_answer_504(
    sidecar: StandInSidecar,
) -> None:
    sidecar.hold.add("catalog")
    with running_service(
        "--service", "frontend",
        "--sidecar", f"127.0.0.1:{sidecar.port}",
        "--calls", "catalog,pricing",
        "--dependency-timeout", "300ms",
    ) as service:  # fmt: skip
        answer = get(service.port, "/product/42")

    assert answer.status == 504
    body = answer.json()
    assert body["failed"] == {"catalog": {"status": None, "error": "timed out after 300ms"}}
    assert body["deps"]["pricing"] == 200


@pytest.mark.integration
def test_unreachable_sidecar_makes_the_service_answer_502() -> None:
    closed_port = free_port()
    with running_service(
        "--service", "catalog",
        "--sidecar", f"127.0.0.1:{closed_port}",
        "--calls", "inventory",
    ) as service:  # fmt: skip
        answer = get(service.port, "/catalog/42")

    assert answer.status == 502
    failure = answer.json()["failed"]["inventory"]
    assert failure["status"] is None
    assert "ClientConnectorError" in failure["error"]


@pytest.mark.integration
def test_sigterm_stops_the_service_with_exit_code_0_after_printing_ready() -> None:
    with running_service("--service", "inventory") as service:
        service.process.send_signal(signal.SIGTERM)
        returncode = service.process.wait(timeout=5)
        assert service.process.stdout is not None
        stdout = service.process.stdout.read().decode()

    assert returncode == 0
    assert stdout == f"READY 127.0.0.1:{service.port}\n"


@pytest.mark.integration
def test_sigterm_does_not_wait_for_a_hung_dependency(sidecar: StandInSidecar) -> None:
    sidecar.hold.add("inventory")
    with running_service(
        "--service", "catalog",
        "--sidecar", f"127.0.0.1:{sidecar.port}",
        "--calls", "inventory",
    ) as service:  # fmt: skip
        errors: list[BaseException] = []

        def call() -> None:
            try:
                get(service.port, "/catalog/1")
            except (OSError, http.client.HTTPException) as exc:
                errors.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 5
        while not sidecar.seen() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sidecar.seen(), "the request never reached the sidecar"

        service.process.send_signal(signal.SIGTERM)
        returncode = service.process.wait(timeout=5)
        caller.join(timeout=5)

    assert returncode == 0
    assert len(errors) == 1  # the in-flight request was cut off, not answered


# ---------------------------------------------------------------- in-process


def test_build_app_serves_in_process() -> None:
    async def scenario() -> tuple[int, Any]:
        app = build_app(ServiceConfig(service="pricing", instance="pricing-1"))
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/pricing/9")
            return response.status, await response.json()

    status, body = asyncio.run(scenario())

    assert status == 200
    assert body == {"service": "pricing", "instance": "pricing-1", "path": "/pricing/9", "deps": {}}


@pytest.mark.parametrize(
    "calls",
    [["--calls", "catalog", "--calls", "pricing"], ["--calls", "catalog,pricing,catalog"]],
)
def test_calls_may_repeat_or_be_comma_separated(calls: list[str]) -> None:
    service = ["--service", "frontend", "--sidecar", "127.0.0.1:15001"]
    timing = ["--service-time", "3ms", "--dependency-timeout", "2s"]

    config = parse_args([*service, "--listen", "127.0.0.1:18080", *calls, *timing])

    assert config.calls == ("catalog", "pricing")
    assert (config.host, config.port) == ("127.0.0.1", 18080)
    assert config.service_time == pytest.approx(0.003)
    assert config.dependency_timeout == pytest.approx(2.0)
    assert config.instance == "frontend"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--service", "catalog", "--calls", "inventory"], "pass --sidecar HOST:PORT"),
        (["--service", "catalog", "--service-time", "3"], "not a duration"),
        (["--service", "catalog", "--listen", "18080"], "is not HOST:PORT"),
        (["--service", "catalog", "--jitter", "2"], "jitter must be in [0, 1]"),
    ],
)
def test_bad_arguments_exit_2_and_say_how_to_fix(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)

    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_service_time_stays_within_its_jitter_and_repeats_with_a_seed() -> None:
    first = ServiceTime(0.004, jitter=0.5, seed=3)
    second = ServiceTime(0.004, jitter=0.5, seed=3)

    draws = [first.draw() for _ in range(1000)]

    assert all(0.002 <= draw <= 0.006 for draw in draws)
    assert draws == [second.draw() for _ in range(1000)]
    assert ServiceTime(0.004, jitter=0.0, seed=None).draw() == 0.004
