"""One service process of the sample app: a generic async HTTP service that plays any role.

The platform starts one process per service instance (``frontend``, ``catalog-0``, ...),
each behind its own Envoy sidecar. A request to any path except ``/healthz`` is served by
sleeping a service time drawn from its distribution (``--service-time``: uniform ±jitter,
fixed, exponential or lognormal), then, unless it fails on its own (``--error-rate``),
calling its dependencies through the instance's sidecar outbound listener, Istio-style:
``GET http://<sidecar>/<dep>/<id>`` with ``Host: <dep>``, so the mesh (retries, timeouts,
faults, circuit breakers) sits on every hop. Each dependency is called on a share of the
requests (``--calls catalog@0.5``; default all), all at once (``--call-mode parallel``,
the default) or one after another, stopping at the first failure (``sequential``).
``x-request-id`` (made up if absent) and the trace headers are forwarded, so one user
request can be followed through every sidecar's access log, fan-out included.

Answers:

====  ==============================================================================
200   every dependency called answered 2xx: ``{"service", "instance", "path", "deps"}``
      (``version`` too when the instance has one), padded to ``--response-size`` bytes
500   the instance's own failure, drawn with probability ``--error-rate``; it calls no
      dependency then
502   a dependency answered non-2xx or failed at transport level; the body names it.
      Never 503: 503 is what the mesh itself answers (overflow, no healthy host); an
      app's 503 would read as the mesh's in access logs and response-code tables.
504   a dependency call outlived ``--dependency-timeout``
====  ==============================================================================

Random draws (service times, errors, which calls are made) come from generators seeded
with ``--seed`` and the instance name, each its own stream: the same seed gives every
instance the same sequence of draws in every run.

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
import json
import math
import random
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from harness.app.topology import Call, CallMode, Distribution, ServiceTimeSpec
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
# Headers routes match on that an app forwards too, as Istio's Bookinfo sample forwards
# ``end-user`` (its request-routing task matches it): a header set at the ingress then
# reaches every hop's routes. ``baggage`` is W3C's header for such context.
ROUTING_HEADERS = ("end-user", "baggage")

# How long in-flight requests may finish after SIGTERM before they are cut off: the
# harness tears instances down between runs and must not wait for hung dependencies.
SHUTDOWN_GRACE_SECONDS = 0.2


@dataclass(frozen=True)
class ServiceConfig:
    """What one service instance is and whom it calls.

    ``sidecar`` is ``host:port`` of this instance's Envoy outbound listener; it is needed
    only when ``calls`` is not empty. Times are in seconds. ``service_time`` is the value of
    the ``distribution`` (uniform: the mean, with ``jitter``; lognormal: the median, with
    ``p99``). ``probabilities`` go with ``calls`` (empty: every call on every request).
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
    distribution: Distribution = "uniform"
    p99: float | None = None
    probabilities: tuple[float, ...] = ()
    call_mode: CallMode = "parallel"
    error_rate: float = 0.0
    response_size: int = 0
    version: str | None = None

    def __post_init__(self) -> None:
        if self.calls and not self.sidecar:
            raise ValueError(
                f"{self.service} calls {', '.join(self.calls)} but has no sidecar: "
                "pass --sidecar HOST:PORT (the instance's Envoy outbound listener)"
            )
        self.time_spec  # noqa: B018  # validates the distribution's numbers
        if self.probabilities and len(self.probabilities) != len(self.calls):
            raise ValueError("give one probability per call, or none")
        if any(not 0.0 <= p <= 1.0 for p in (*self.probabilities, self.error_rate)):
            raise ValueError(
                "call probabilities and the error rate are shares in [0, 1], e.g. 0.05"
            )
        if self.response_size < 0:
            raise ValueError(f"response size must be >= 0 bytes (got {self.response_size})")
        if self.dependency_timeout <= 0:
            raise ValueError(
                f"dependency timeout must be > 0, e.g. '10s' (got {self.dependency_timeout}s)"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535 (got {self.port})")

    @property
    def time_spec(self) -> ServiceTimeSpec:
        return ServiceTimeSpec(self.distribution, self.service_time, self.jitter, self.p99)

    @property
    def outbound(self) -> tuple[Call, ...]:
        shares = self.probabilities or (1.0,) * len(self.calls)
        return tuple(Call(name, share) for name, share in zip(self.calls, shares, strict=True))

    def stream(self, purpose: str) -> str | None:
        """The seed of one random stream of this instance (``None``: unseeded)."""
        return None if self.seed is None else f"{self.seed}:{self.instance}:{purpose}"


class ServiceTime:
    """Draws service times from a distribution: a mean with uniform jitter
    (``mean * [1 - jitter, 1 + jitter]``), or a :class:`ServiceTimeSpec`.

    >>> times = ServiceTime(0.004, jitter=0.5, seed=1)
    >>> 0.002 <= times.draw() <= 0.006
    True
    >>> lognormal = ServiceTime(ServiceTimeSpec("lognormal", 0.003, p99=0.02), seed=1)
    """

    def __init__(
        self, mean: float | ServiceTimeSpec, *, jitter: float = 0.5, seed: int | str | None
    ) -> None:
        spec = (
            mean if isinstance(mean, ServiceTimeSpec) else ServiceTimeSpec("uniform", mean, jitter)
        )
        self.spec = spec
        self._random = random.Random(seed)
        self._mu = math.log(spec.value) if spec.value > 0 else 0.0
        self._sigma = spec.sigma

    def draw(self) -> float:
        spec, rng = self.spec, self._random
        match spec.distribution:
            case "fixed":
                return spec.value
            case "exponential":
                return rng.expovariate(1.0 / spec.value) if spec.value > 0 else 0.0
            case "lognormal":
                return rng.lognormvariate(self._mu, self._sigma)
            case _:
                return rng.uniform(spec.value * (1 - spec.jitter), spec.value * (1 + spec.jitter))


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
        self.times = ServiceTime(config.time_spec, seed=config.stream("times"))
        self.errors = random.Random(config.stream("errors"))
        self.choices = random.Random(config.stream("calls"))
        self.outbound = config.outbound
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
        body: dict[str, object] = {
            "service": config.service,
            "instance": config.instance,
            "path": request.path,
        }
        if config.version is not None:
            body["version"] = config.version
        if config.error_rate > 0 and self.errors.random() < config.error_rate:
            body["error"] = f"the instance's own failure (error rate {config.error_rate:g})"
            return self._answer(body, 500, request_id)
        outcomes = await self._call_dependencies(request, request_id)
        body["deps"] = {outcome.dependency: outcome.status for outcome in outcomes}
        status = 200
        failed = [outcome for outcome in outcomes if not outcome.ok]
        if failed:
            status = 504 if any(outcome.timed_out for outcome in failed) else 502
            body["error"] = "; ".join(_describe(outcome) for outcome in failed)
            body["failed"] = {
                outcome.dependency: {"status": outcome.status, "error": outcome.error}
                for outcome in failed
            }
        return self._answer(body, status, request_id)

    async def _call_dependencies(
        self, request: web.Request, request_id: str
    ) -> list[DependencyOutcome]:
        """Call the dependencies this request draws: all at once, or in order up to the
        first failure."""
        chosen = [
            call.service
            for call in self.outbound
            if call.probability >= 1.0 or self.choices.random() < call.probability
        ]
        if not chosen:
            return []
        headers = {"x-request-id": request_id}
        for name in (*TRACE_HEADERS, *ROUTING_HEADERS):
            value = request.headers.get(name)
            if value is not None:
                headers[name] = value
        # "/product/42" → item "42", asked of every dependency as "/<dep>/42".
        item = request.rel_url.raw_path.rstrip("/").rpartition("/")[2]
        if self.config.call_mode == "parallel":
            return list(await asyncio.gather(*(self._call(d, item, headers) for d in chosen)))
        outcomes: list[DependencyOutcome] = []
        for dependency in chosen:
            outcomes.append(await self._call(dependency, item, headers))
            if not outcomes[-1].ok:
                break
        return outcomes

    def _answer(self, body: dict[str, object], status: int, request_id: str) -> web.Response:
        """JSON, padded with a ``pad`` field to ``--response-size`` bytes when shorter."""
        text = json.dumps(body)
        size = self.config.response_size
        if len(text) < size:
            padded = {**body, "pad": ""}
            missing = size - len(json.dumps(padded))
            if missing >= 0:
                text = json.dumps({**body, "pad": "x" * missing})
        return web.Response(
            text=text,
            status=status,
            content_type="application/json",
            headers={"x-request-id": request_id},
        )

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


def _service_time(text: str) -> ServiceTimeSpec:
    try:
        return ServiceTimeSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _share(text: str) -> float:
    try:
        share = float(text)
    except ValueError:
        share = -1.0
    if not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share in [0, 1], e.g. 0.05")
    return share


def _calls(chunks: Sequence[str]) -> list[Call]:
    """``["catalog,pricing@0.5", "catalog"]`` → catalog (1.0), pricing (0.5): first wins."""
    calls: dict[str, Call] = {}
    for chunk in chunks:
        for part in chunk.split(","):
            name, at, share = part.strip().partition("@")
            if name and name not in calls:
                calls[name] = Call(name, _share(share) if at else 1.0)
    return list(calls.values())


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
        metavar="SERVICE[@SHARE][,...]",
        help="a dependency to call (on a SHARE of requests, default all); repeat or comma-separate",
    )
    parser.add_argument(
        "--call-mode",
        choices=("parallel", "sequential"),
        default="parallel",
        help="call the dependencies all at once, or in order up to the first failure",
    )
    parser.add_argument(
        "--service-time",
        type=_service_time,
        default=ServiceTimeSpec(),
        help="3ms (mean, uniform with --jitter), fixed:3ms, exponential:3ms (mean) or "
        "lognormal:3ms:20ms (p50:p99)",
    )
    parser.add_argument(
        "--jitter", type=float, default=0.5, help="service time spread: mean * (1 +- jitter)"
    )
    parser.add_argument(
        "--error-rate", type=_share, default=0.0, help="share of requests answered 500"
    )
    parser.add_argument(
        "--response-size", type=int, default=0, help="pad response bodies to this many bytes"
    )
    parser.add_argument("--version", help="the instance's version label, e.g. v2")
    parser.add_argument(
        "--dependency-timeout",
        type=_duration,
        default=10.0,
        help="client timeout per dependency call; on expiry answer 504 (default 10s)",
    )
    parser.add_argument(
        "--seed", type=int, help="seed of the random draws (with the instance name)"
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> ServiceConfig:
    """The :class:`ServiceConfig` a command line asks for; exits 2 on bad arguments."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        calls = _calls(args.calls)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"argument --calls: {exc}")
    host, port = args.listen
    time_spec: ServiceTimeSpec = args.service_time
    try:
        return ServiceConfig(
            service=args.service,
            instance=args.instance or args.service,
            host=host,
            port=port,
            sidecar=args.sidecar,
            calls=tuple(call.service for call in calls),
            probabilities=tuple(call.probability for call in calls),
            service_time=time_spec.value,
            distribution=time_spec.distribution,
            p99=time_spec.p99,
            call_mode=args.call_mode,
            error_rate=args.error_rate,
            response_size=args.response_size,
            version=args.version,
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
