"""What a declared service does, in process: service-time distributions, its own error
rate, sequential versus parallel calls, call probabilities, response sizes.

The app runs in this test's event loop (aiohttp's test server); its sidecar is a stand-in
aiohttp server, also in process, that records what reaches it. No timing is asserted:
concurrency is observed as how many calls are in flight at the stand-in at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from scipy import stats as scipy_stats

from harness.app.service import ServiceConfig, ServiceTime, build_app, parse_args
from harness.app.topology import ServiceTimeSpec

DRAWS = 20_000


# --------------------------------------------------------------------------- distributions


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def test_fixed_service_time_is_always_the_same() -> None:
    times = ServiceTime(ServiceTimeSpec("fixed", 0.004), seed=1)

    assert {times.draw() for _ in range(100)} == {0.004}


def test_exponential_service_time_has_its_mean() -> None:
    times = ServiceTime(ServiceTimeSpec("exponential", 0.002), seed=1)

    draws = [times.draw() for _ in range(DRAWS)]

    # The mean of 20,000 draws has a standard error of 0.7%: 5% is seven of them.
    assert statistics.fmean(draws) == pytest.approx(0.002, rel=0.05)
    assert min(draws) >= 0
    assert quantile(draws, 0.99) == pytest.approx(0.002 * 4.605, rel=0.1)  # -ln(0.01)


def test_lognormal_service_time_has_its_median_and_p99() -> None:
    times = ServiceTime(ServiceTimeSpec("lognormal", 0.004, p99=0.030), seed=1)

    draws = [times.draw() for _ in range(DRAWS)]

    assert quantile(draws, 0.5) == pytest.approx(0.004, rel=0.03)
    assert quantile(draws, 0.99) == pytest.approx(0.030, rel=0.1)


def test_draws_repeat_per_seed_and_instance_and_differ_between_instances() -> None:
    spec = ServiceTimeSpec("lognormal", 0.004, p99=0.030)

    def draws(instance: str, seed: int) -> list[float]:
        config = ServiceConfig(service="s", instance=instance, seed=seed)
        times = ServiceTime(spec, seed=config.stream("times"))
        return [times.draw() for _ in range(50)]

    assert draws("s-0", 7) == draws("s-0", 7)
    assert draws("s-0", 7) != draws("s-1", 7)
    assert draws("s-0", 7) != draws("s-0", 8)


# --------------------------------------------------------------------------- in process


@dataclass
class StandIn:
    """The instance's sidecar: records (host, path) and the most calls in flight at once;
    answers ``statuses[host]`` (default 200). With ``pair`` set, each call waits (at most
    ``pair_wait`` seconds) for a second one to be in flight before answering."""

    seen: list[tuple[str, str]] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    most: int = 0
    pair: bool = False
    pair_wait: float = 0.5
    both: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        host = request.headers.get("Host", "")
        self.seen.append((host, request.path))
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight >= 2:
            self.both.set()
        try:
            if self.pair:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.both.wait(), self.pair_wait)
            return web.json_response({}, status=self.statuses.get(host, 200))
        finally:
            self.in_flight -= 1


Scenario = Callable[[TestClient[Any, Any], StandIn], Awaitable[None]]


def served(stand_in: StandIn, scenario: Scenario, **config: Any) -> None:
    """Run ``scenario(client, stand_in)`` against an in-process app built from ``config``."""

    async def main() -> None:
        sidecar_app = web.Application()
        sidecar_app.router.add_get("/{tail:.*}", stand_in.handle)
        async with TestServer(sidecar_app) as sidecar:
            app = build_app(
                ServiceConfig(
                    service="front",
                    instance="front-0",
                    sidecar=f"127.0.0.1:{sidecar.port}",
                    **config,
                )
            )
            async with TestClient(TestServer(app)) as client:
                await scenario(client, stand_in)

    asyncio.run(main())


async def statuses(client: TestClient[Any, Any], n: int) -> list[int]:
    results = []
    for i in range(n):
        async with client.get(f"/item/{i}") as answer:
            await answer.read()
            results.append(answer.status)
    return results


def binomial_bounds(n: int, p: float) -> tuple[int, int]:
    """A 99.99% two-sided interval of a Binomial(n, p) count."""
    low, high = scipy_stats.binom.interval(0.9999, n, p)
    return int(low), int(high)


def test_error_rate_answers_500_on_its_share_of_requests() -> None:
    results: list[int] = []

    async def scenario(client: TestClient[Any, Any], _: StandIn) -> None:
        results.extend(await statuses(client, 400))

    served(StandIn(), scenario, calls=("a",), error_rate=0.25, seed=3)

    low, high = binomial_bounds(400, 0.25)
    assert low <= results.count(500) <= high
    assert set(results) == {200, 500}


def test_a_failing_instance_calls_no_dependency_and_says_why() -> None:
    stand_in = StandIn()
    bodies: list[Any] = []

    async def scenario(client: TestClient[Any, Any], _: StandIn) -> None:
        async with client.get("/item/1") as answer:
            assert answer.status == 500
            bodies.append(await answer.json())

    served(stand_in, scenario, calls=("a", "b"), error_rate=1.0, version="v2")

    assert stand_in.seen == []
    assert bodies[0]["version"] == "v2"
    assert "own failure" in bodies[0]["error"]


@pytest.mark.parametrize(("mode", "most"), [("parallel", 2), ("sequential", 1)])
def test_call_mode_decides_whether_calls_overlap(mode: str, most: int) -> None:
    stand_in = StandIn(pair=True)

    async def scenario(client: TestClient[Any, Any], _: StandIn) -> None:
        assert await statuses(client, 1) == [200]

    served(stand_in, scenario, calls=("a", "b"), call_mode=mode)

    assert stand_in.most == most
    assert sorted(stand_in.seen) == [("a", "/a/0"), ("b", "/b/0")]
    if mode == "sequential":
        assert stand_in.seen == [("a", "/a/0"), ("b", "/b/0")]  # in declared order


def test_sequential_calls_stop_at_the_first_failure() -> None:
    stand_in = StandIn(statuses={"a": 503})
    bodies: list[Any] = []

    async def scenario(client: TestClient[Any, Any], _: StandIn) -> None:
        async with client.get("/item/1") as answer:
            assert answer.status == 502
            bodies.append(await answer.json())

    served(stand_in, scenario, calls=("a", "b"), call_mode="sequential")

    assert stand_in.seen == [("a", "/a/1")]
    assert bodies[0]["deps"] == {"a": 503}


def test_each_call_is_made_on_its_share_of_requests() -> None:
    stand_in = StandIn()

    async def scenario(client: TestClient[Any, Any], _: StandIn) -> None:
        assert set(await statuses(client, 300)) == {200}

    served(
        stand_in, scenario, calls=("always", "often", "never"), probabilities=(1.0, 0.3, 0.0),
        seed=5,
    )  # fmt: skip

    hosts = [host for host, _ in stand_in.seen]
    low, high = binomial_bounds(300, 0.3)
    assert hosts.count("always") == 300
    assert low <= hosts.count("often") <= high
    assert hosts.count("never") == 0


@pytest.mark.parametrize("size", [10, 300, 4096])
def test_response_is_padded_to_its_size_when_shorter(size: int) -> None:
    bodies: list[bytes] = []

    async def scenario(client: TestClient[Any, Any], _: StandIn) -> None:
        async with client.get("/item/1") as answer:
            bodies.append(await answer.read())

    served(StandIn(), scenario, response_size=size)

    body = json.loads(bodies[0])
    assert body["service"] == "front"
    natural = len(json.dumps({k: v for k, v in body.items() if k != "pad"}))
    assert len(bodies[0]) == max(size, natural)


# --------------------------------------------------------------------------- command line


def test_command_line_takes_the_declared_behaviour() -> None:
    config = parse_args([
        "--service", "s", "--sidecar", "127.0.0.1:1", "--calls", "a,b@0.25", "--calls", "c@0",
        "--call-mode", "sequential", "--service-time", "lognormal:4ms:30ms",
        "--error-rate", "0.01", "--response-size", "100", "--version", "v2",
    ])  # fmt: skip

    assert config.calls == ("a", "b", "c")
    assert config.probabilities == (1.0, 0.25, 0.0)
    assert config.time_spec == ServiceTimeSpec("lognormal", 0.004, p99=0.03)
    assert (config.call_mode, config.error_rate, config.response_size) == ("sequential", 0.01, 100)
    assert config.version == "v2"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--calls", "a@2"], "not a share in [0, 1]"),
        (["--error-rate", "1.5"], "not a share in [0, 1]"),
        (["--service-time", "lognormal:30ms:4ms"], "0 < p50 <= p99"),
        (["--service-time", "gamma:3ms"], "is not a service time"),
    ],
)
def test_bad_behaviour_arguments_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--service", "s", "--sidecar", "127.0.0.1:1", *argv])

    assert exited.value.code == 2
    assert message in capsys.readouterr().err
