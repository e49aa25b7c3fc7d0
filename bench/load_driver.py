"""Load driver speed: the harness's locustfile against raw Locust FastHttpUser, side by side.

Usage: ``python bench/load_driver.py [--users 32] [--seconds 8] [--rounds 3]``

Target: one Envoy on 127.0.0.1 (``--concurrency 1``) answering every request itself with
a ``direct_response`` (a cheap, steady target, so the generator is what is measured).
Each round runs, one after the other against that Envoy with the same users and time:

A. raw: ``bench/raw_fasthttp_locustfile.py``, FastHttpUser with no wait and no sampling;
B. harness, concurrency mode: ``harness/load/locustfile.py`` with ``users`` closed-loop
   users (no pacing), every request sampled to JSON lines (what a run does);
C. harness, open loop: the same locustfile on its arrival schedule at 90% of the rate A
   reached in this round; it shows whether that rate is sustained with requests on time.

Reported per round: requests/s (completed requests over the run time, from Locust's own
``--csv`` counts for A and from the samples for B and C), the generator's CPU per request
(user + system time of the Locust process, from ``getrusage``), and the ratio B/A; the
median over rounds is quoted in docs/benchmarks.md. The machine has two cores shared with
Envoy (and other work): compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from harness.load.driver import LATE_MS, LoadPlan, locust_command, locust_environment, read_samples
from harness.platforms.local.platform import find_envoy
from harness.ports import free_port

HERE = Path(__file__).resolve().parent
RAW_LOCUSTFILE = HERE / "raw_fasthttp_locustfile.py"


def envoy_bootstrap(port: int, admin_port: int) -> dict[str, object]:
    route = {
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": '{"id":1,"name":"x"}'}},
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager",
        "stat_prefix": "bench",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "bench",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": manager,
                                }
                            ]
                        }
                    ],
                }
            ]
        },
    }


@contextmanager
def envoy_target(workdir: Path) -> Iterator[str]:
    """An Envoy answering 200 on 127.0.0.1 (a free port); yields its base URL."""
    port, admin = free_port(), free_port()
    config = workdir / "envoy.json"
    config.write_text(json.dumps(envoy_bootstrap(port, admin)))
    argv = [find_envoy(), "-c", str(config), "--concurrency", "1", "--disable-hot-restart"]
    argv += ["--log-level", "warn", "--base-id", str(os.getpid() % 60000)]
    log = (workdir / "envoy.log").open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError(f"Envoy exited; see {workdir / 'envoy.log'}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@dataclass(frozen=True)
class Measured:
    """One Locust run, over its steady window (from 2 s after the start to 1 s before the
    end, so imports, spawning and shutdown are left out of both figures)."""

    requests: int  # completed in the window (Locust's own cumulative count)
    seconds: float
    cpu_s: float  # user + system time of the Locust process in the window
    late_share: float | None = None  # open loop: requests that started over LATE_MS late

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us_per_request(self) -> float:
        return 1e6 * self.cpu_s / max(1, self.requests)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_locust(argv: list[str], env: dict[str, str], cwd: Path, seconds: int) -> Measured:
    """Run Locust with ``--csv`` history; measure requests and CPU in the steady window."""
    prefix = cwd / f"locust-{time.monotonic_ns()}"
    argv = [*argv, "--csv", str(prefix), "--csv-full-history"]
    process = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cpu: list[tuple[float, float]] = []  # (epoch, cpu seconds)
    try:
        while process.poll() is None:
            with suppress(FileNotFoundError, ProcessLookupError, IndexError):
                cpu.append((time.time(), _cpu_s(process.pid)))
            time.sleep(0.25)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    with Path(f"{prefix}_stats_history.csv").open() as history:
        rows = [
            (float(r["Timestamp"]), int(r["Total Request Count"]))
            for r in csv.DictReader(history)
            if r["Name"] == "Aggregated"
        ]
    counted = [row for row in rows if row[1] > 0]
    start = counted[0][0] + 2.0
    end = counted[0][0] + seconds - 1.0
    window = [row for row in rows if start <= row[0] <= end]
    (t0, n0), (t1, n1) = window[0], window[-1]

    def cpu_at(t: float) -> float:
        return min(cpu, key=lambda point: abs(point[0] - t))[1]

    return Measured(requests=n1 - n0, seconds=t1 - t0, cpu_s=cpu_at(t1) - cpu_at(t0))


def run_raw(host: str, users: int, seconds: int, workdir: Path) -> Measured:
    argv = [sys.executable, "-m", "locust", "-f", str(RAW_LOCUSTFILE), "--headless"]
    argv += ["--users", str(users), "--spawn-rate", str(users), "--host", host]
    argv += ["--run-time", f"{seconds}s", "--only-summary"]
    argv += ["--loglevel", "WARNING", "--exit-code-on-error", "0", "--stop-timeout", "2"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    return run_locust(argv, env, workdir, seconds)


def run_harness(plan: LoadPlan, workdir: Path) -> Measured:
    argv, _ = locust_command(plan)
    measured = run_locust(argv, locust_environment(plan), workdir, plan.run_time_arg_s)
    samples = read_samples(plan.samples_path)
    late = sum(1 for s in samples if s.lag_ms > LATE_MS)
    share = late / len(samples) if samples else None
    return Measured(measured.requests, measured.seconds, measured.cpu_s, share)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    rows: list[tuple[Measured, Measured, Measured, float]] = []
    with envoy_target(workdir) as host:
        for index in range(args.rounds):
            raw = run_raw(host, args.users, args.seconds, workdir)
            common = {"host": host, "users": args.users, "run_time_s": args.seconds}
            concurrency = run_harness(
                LoadPlan(
                    **common,  # type: ignore[arg-type]
                    rate=None,
                    mode="concurrency",
                    request_timeout_s=10.0,
                    samples_path=workdir / f"concurrency-{index}.jsonl",
                ),
                workdir,
            )
            offered = round(0.9 * raw.rate)
            open_loop = run_harness(
                LoadPlan(
                    **common,  # type: ignore[arg-type]
                    rate=float(offered),
                    request_timeout_s=10.0,
                    samples_path=workdir / f"open-{index}.jsonl",
                ),
                workdir,
            )
            rows.append((raw, concurrency, open_loop, float(offered)))
            print(
                f"round {index + 1}: raw {raw.rate:7.0f} req/s {raw.cpu_us_per_request:5.0f} µs "
                f"CPU/req | harness concurrency {concurrency.rate:7.0f} req/s "
                f"{concurrency.cpu_us_per_request:5.0f} µs | ratio "
                f"{concurrency.rate / raw.rate:.2f} | open loop at {offered} req/s: achieved "
                f"{open_loop.rate:7.0f} ({open_loop.rate / offered:.2f}), late "
                f"{100 * (open_loop.late_share or 0):.1f}%, {open_loop.cpu_us_per_request:5.0f} µs",
                flush=True,
            )
    ratios = [c.rate / r.rate for r, c, _, _ in rows]
    print(
        f"median over {len(rows)} rounds, {args.users} users, {args.seconds} s each: "
        f"raw {statistics.median(r.rate for r, _, _, _ in rows):.0f} req/s, harness "
        f"concurrency {statistics.median(c.rate for _, c, _, _ in rows):.0f} req/s, ratio "
        f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}); "
        f"CPU/req raw {statistics.median(r.cpu_us_per_request for r, _, _, _ in rows):.0f} µs, "
        f"harness {statistics.median(c.cpu_us_per_request for _, c, _, _ in rows):.0f} µs; "
        f"open loop achieved/offered "
        f"{statistics.median(o.rate / off for _, _, o, off in rows):.2f}"
    )


if __name__ == "__main__":
    main()
