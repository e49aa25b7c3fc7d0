"""One service process of the sample app: a generic async HTTP service that plays any role.

The platform starts one process per service instance (``frontend``, ``catalog-0``, ...),
each behind its own Envoy sidecar. A request to any path except ``/healthz`` is served by
sleeping a jittered service time and then calling *every* dependency concurrently through
the instance's sidecar outbound listener, Istio-style: ``GET http://<sidecar>/<dep>/<id>``
with ``Host: <dep>``, so the mesh (retries, timeouts, faults, circuit breakers) sits on
every hop. ``x-request-id`` (made up if absent) and the trace headers are forwarded, so
one user request can be followed through every sidecar's access log.

Answers:

====  ==============================================================================
200   every dependency answered 2xx: ``{"service", "instance", "path", "deps"}``
502   a dependency answered non-2xx or failed at transport level; the body names it.
      Never 503: 503 is what the mesh itself answers (overflow, no healthy host), and
      retry policies with ``5xx`` would retry it, which would hide the failure.
504   a dependency call outlived ``--dependency-timeout``
====  ==============================================================================

Run it as a process (``READY <host>:<port>`` is printed once listening, but callers
should probe TCP or ``GET /healthz``)::

    python -m harness.app.service --service catalog --instance catalog-0 \\
        --listen 127.0.0.1:18080 --sidecar 127.0.0.1:15001 --calls inventory --service-time 3ms

or in-process, for tests::

    app = build_app(ServiceConfig(service="pricing", instance="pricing-0"))
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from harness.errors import ExitCode
from harness.units import format_duration, parse_duration

__all__ = ["DependencyOutcome", "ServiceConfig", "ServiceTime", "build_app", "main", "serve"]

# Headers an app must copy from its inbound request to its outbound calls so the mesh can
# stitch one trace (the list Istio documents for Envoy's tracers).
TRACE_HEADERS = (
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-ot-span-context",
)

# How long in-flight requests may finish after SIGTERM before they are cut off: the
# harness tears instances down between runs and must not wait for hung dependencies.
SHUTDOWN_GRACE_SECONDS = 0.2


@dataclass(frozen=True)
class ServiceConfig:
    """What one service instance is and whom it calls.

    ``sidecar`` is ``host:port`` of this instance's Envoy outbound listener; it is needed
    only when ``calls`` is not empty. Times are in seconds.
    """

    service: str
    instance: str
    host: str = "127.0.0.1"
    port: int = 0
    sidecar: str | None = None
    calls: tuple[str, ...] = ()
    service_time: float = 0.0
    jitter: float = 0.5
    dependency_timeout: float = 10.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.calls and not self.sidecar:
            raise ValueError(
                f"{self.service} calls {', '.join(self.calls)} but has no sidecar: "
                "pass --sidecar HOST:PORT (the instance's Envoy outbound listener)"
            )
        if self.service_time < 0:
            raise ValueError(f"service time must be >= 0 (got {self.service_time}s)")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be in [0, 1], e.g. 0.5 for ±50% (got {self.jitter})")
        if self.dependency_timeout <= 0:
            raise ValueError(
                f"dependency timeout must be > 0, e.g. '10s' (got {self.dependency_timeout}s)"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535 (got {self.port})")


class ServiceTime:
    """Draws service times uniformly from ``mean * [1 - jitter, 1 + jitter]``.

    >>> times = ServiceTime(0.004, jitter=0.5, seed=1)
    >>> 0.002 <= times.draw() <= 0.006
    True
    """

    def __init__(self, mean: float, *, jitter: float, seed: int | None) -> None:
        self._low = mean * (1.0 - jitter)
        self._high = mean * (1.0 + jitter)
        self._random = random.Random(seed)

    def draw(self) -> float:
        return self._random.uniform(self._low, self._high)


@dataclass(frozen=True)
class DependencyOutcome:
    """How one dependency call ended: an HTTP ``status``, or a transport ``error``."""

    dependency: str
    status: int | None = None
    error: str | None = None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _Service:
    """The request handlers of one instance; owns the pooled session to the sidecar."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.times = ServiceTime(config.service_time, jitter=config.jitter, seed=config.seed)
        self.session: aiohttp.ClientSession | None = None

    async def session_context(self, _app: web.Application) -> AsyncIterator[None]:
        if self.config.calls:
            # No connection limit: queueing inside the app would hide latency from the mesh,
            # whose circuit breakers are the thing under test.
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
            timeout = aiohttp.ClientTimeout(total=self.config.dependency_timeout)
            self.session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        yield
        if self.session is not None:
            await self.session.close()

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def handle(self, request: web.Request) -> web.Response:
        config = self.config
        request_id = request.headers.get("x-request-id") or str(uuid.uuid4())
        delay = self.times.draw()
        if delay > 0:
            await asyncio.sleep(delay)
        outcomes: list[DependencyOutcome] = []
        if config.calls:
            headers = {"x-request-id": request_id}
            for name in TRACE_HEADERS:
                value = request.headers.get(name)
                if value is not None:
                    headers[name] = value
            # "/product/42" → item "42", asked of every dependency as "/<dep>/42".
            item = request.rel_url.raw_path.rstrip("/").rpartition("/")[2]
            outcomes = await asyncio.gather(
                *(self._call(dependency, item, headers) for dependency in config.calls)
            )
        body: dict[str, object] = {
            "service": config.service,
            "instance": config.instance,
            "path": request.path,
            "deps": {outcome.dependency: outcome.status for outcome in outcomes},
        }
        status = 200
        failed = [outcome for outcome in outcomes if not outcome.ok]
        if failed:
            status = 504 if any(outcome.timed_out for outcome in failed) else 502
            body["error"] = "; ".join(_describe(outcome) for outcome in failed)
            body["failed"] = {
                outcome.dependency: {"status": outcome.status, "error": outcome.error}
                for outcome in failed
            }
        return web.json_response(body, status=status, headers={"x-request-id": request_id})

    async def _call(self, dependency: str, item: str, headers: dict[str, str]) -> DependencyOutcome:
        assert self.session is not None  # created at startup whenever there are calls
        url = f"http://{self.config.sidecar}/{dependency}/{item}"
        try:
            async with self.session.get(url, headers={**headers, "Host": dependency}) as answer:
                await answer.read()  # drain, so the connection goes back to the pool
                return DependencyOutcome(dependency, status=answer.status)
        except TimeoutError:  # before OSError: TimeoutError is one
            limit = format_duration(self.config.dependency_timeout)
            return DependencyOutcome(dependency, error=f"timed out after {limit}", timed_out=True)
        except (aiohttp.ClientError, OSError) as exc:
            return DependencyOutcome(dependency, error=f"{type(exc).__name__}: {exc}")


def _describe(outcome: DependencyOutcome) -> str:
    if outcome.status is not None:
        return f"dependency {outcome.dependency!r} answered {outcome.status}"
    return f"dependency {outcome.dependency!r} failed: {outcome.error}"


def build_app(config: ServiceConfig) -> web.Application:
    """The aiohttp application of one instance (no socket is bound here).

    >>> app = build_app(ServiceConfig(service="pricing", instance="pricing-0"))
    """
    service = _Service(config)
    app = web.Application()
    app.cleanup_ctx.append(service.session_context)
    app.router.add_get("/healthz", service.healthz)
    app.router.add_get("/{tail:.*}", service.handle)
    return app


async def serve(config: ServiceConfig) -> None:
    """Listen on ``config.host:config.port`` until SIGTERM or SIGINT, then shut down."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(
        build_app(config), access_log=None, shutdown_timeout=SHUTDOWN_GRACE_SECONDS
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        print(f"READY {config.host}:{site.port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT, e.g. 127.0.0.1:18080")
    return host.strip("[]"), int(port)


def _sidecar(text: str) -> str:
    _address(text)
    return text


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness.app.service",
        description="One instance of a sample-app service, calling its dependencies "
        "through its Envoy sidecar.",
    )
    parser.add_argument("--service", required=True, help="service name, e.g. catalog")
    parser.add_argument("--instance", help="instance name, e.g. catalog-0 (default: service)")
    parser.add_argument(
        "--listen", type=_address, default=("127.0.0.1", 0), help="HOST:PORT to bind"
    )
    parser.add_argument(
        "--sidecar", type=_sidecar, help="HOST:PORT of this instance's Envoy outbound listener"
    )
    parser.add_argument(
        "--calls",
        action="append",
        default=[],
        metavar="SERVICE[,SERVICE...]",
        help="a dependency to call on every request; repeat or comma-separate",
    )
    parser.add_argument(
        "--service-time", type=_duration, default=0.0, help="mean service time, e.g. 3ms"
    )
    parser.add_argument(
        "--jitter", type=float, default=0.5, help="service time spread: mean * (1 +- jitter)"
    )
    parser.add_argument(
        "--dependency-timeout",
        type=_duration,
        default=10.0,
        help="client timeout per dependency call; on expiry answer 504 (default 10s)",
    )
    parser.add_argument("--seed", type=int, help="seed of the service-time jitter")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> ServiceConfig:
    """The :class:`ServiceConfig` a command line asks for; exits 2 on bad arguments."""
    parser = _parser()
    args = parser.parse_args(argv)
    calls: list[str] = []
    for chunk in args.calls:
        for name in chunk.split(","):
            if name.strip() and name.strip() not in calls:
                calls.append(name.strip())
    host, port = args.listen
    try:
        return ServiceConfig(
            service=args.service,
            instance=args.instance or args.service,
            host=host,
            port=port,
            sidecar=args.sidecar,
            calls=tuple(calls),
            service_time=args.service_time,
            jitter=args.jitter,
            dependency_timeout=args.dependency_timeout,
            seed=args.seed,
        )
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one instance until SIGTERM/SIGINT; the process exit code."""
    config = parse_args(argv)
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        print(
            f"{config.instance}: cannot listen on {config.host}:{config.port}: {exc}",
            file=sys.stderr,
        )
        return ExitCode.ERROR
    return ExitCode.PASSED


if __name__ == "__main__":
    raise SystemExit(main())
