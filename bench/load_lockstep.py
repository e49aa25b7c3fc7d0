"""Lockstep: does the spread of inter-arrival gaps survive a pause and its aftermath?

Usage: ``python bench/load_lockstep.py [--rate 50] [--users 10] [--rounds 2] [--hogs N]``

Target: a threaded HTTP server on 127.0.0.1 that answers at once, except that it holds
every request arriving in a 2 s window (10 s after its first request) until the window
ends: a ``pause`` fault (SIGSTOP) as the client sees it. Each round runs, one after the
other, for 25 s at ``rate`` req/s over ``users`` users (200 ms period per user by default,
as in issue 15's measurement):

A. the harness locustfile, open loop (``harness/load/locustfile.py``);
B. the anchor: closed-loop users paced by Locust's ``constant_throughput``, the model the
   harness used before (``bench/paced_closed_loop_locustfile.py``).

For each, the coefficient of variation (stdev / mean) of the gaps between consecutive
actual request starts, all users merged, in three windows: before the pause (2-10 s after
the first request), during it (10-12 s) and after it (12-22 s). The schedule itself is
perfectly even (CV 0), so the reference is the CV the same driver delivered before the
pause; the goal (issue 15) is during / after within 1.5x of it. For A the CV of the
intended starts is printed too (the schedule as written; 0 up to float rounding).

Why a round fails: for A, per window, how late its requests started against their own
schedule (p99 and worst lag: the generator's lateness, whatever caused it) and the stalls
(gaps over 3x the median gap). ``--hogs N`` runs N busy-loop processes (nice 0) through
every round: other work on the machine, under control, so its effect can be told apart
from the generator's own; the load average is printed beside each round.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from harness.load.driver import LoadPlan, locust_command, locust_environment, read_samples

HERE = Path(__file__).resolve().parent
PAUSE_AT_S = 10.0
PAUSE_S = 2.0
RUN_S = 25
WINDOWS = {"before": (2.0, 10.0), "during": (10.0, 12.0), "after": (12.0, 22.0)}


@contextmanager
def pausing_server() -> Iterator[tuple[str, list[float]]]:
    """Yields the base URL and a list that gets the first request's arrival time."""
    first: list[float] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            now = time.time()
            with lock:
                if not first:
                    first.append(now)
            begin = first[0] + PAUSE_AT_S
            if begin <= now < begin + PAUSE_S:
                time.sleep(begin + PAUSE_S - now)
            body = b'{"ok":true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", first
    finally:
        server.shutdown()
        server.server_close()


def spread_of_gaps(starts: list[float], lo: float, hi: float) -> tuple[float, float]:
    """(CV, IQR / median) of the gaps between consecutive starts in ``[lo, hi)``.

    The CV is issue 15's measure; one 50 ms hiccup of a busy machine moves it by 0.2 at
    50 req/s, so the interquartile range over the median gap is printed beside it: bunching
    (lockstep) raises both, a lone hiccup only the CV."""
    chosen = sorted(t for t in starts if lo <= t < hi)
    gaps = [b - a for a, b in itertools.pairwise(chosen)]
    if len(gaps) < 4:
        return float("nan"), float("nan")
    q1, median, q3 = statistics.quantiles(gaps, n=4)
    return statistics.pstdev(gaps) / statistics.fmean(gaps), (q3 - q1) / median


def windows(starts: list[float]) -> dict[str, tuple[float, float]]:
    return {name: spread_of_gaps(starts, lo, hi) for name, (lo, hi) in WINDOWS.items()}


def lateness(actual: list[float], intended: list[float]) -> str:
    """Per window: p99 / worst lag of the actual start behind the intended one, and the
    stalls (gaps over 3x the median gap) with the longest."""
    parts = []
    for name, (lo, hi) in WINDOWS.items():
        pairs = sorted((a, i) for a, i in zip(actual, intended, strict=True) if lo <= a < hi)
        lags = sorted((a - i) * 1000.0 for a, i in pairs)
        worst_at = max(pairs, key=lambda pair: pair[0] - pair[1])[0]
        gaps = [(b[0] - a[0]) * 1000.0 for a, b in itertools.pairwise(pairs)]
        if len(gaps) < 4:
            continue
        median = statistics.median(gaps)
        stalls = [g for g in gaps if g > 3 * median]
        parts.append(
            f"{name}: lag p99 {lags[int(0.99 * (len(lags) - 1))]:.1f} max {lags[-1]:.1f} ms "
            f"(at {worst_at:.2f} s), "
            f"{len(stalls)} stalls (longest {max(gaps):.0f} ms)"
        )
    return "; ".join(parts)


@contextmanager
def cpu_hogs(count: int) -> Iterator[None]:
    """``count`` busy-loop processes for the duration (bounded: killed on exit)."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def run_harness(rate: float, users: int, workdir: Path) -> tuple[list[float], list[float]]:
    with pausing_server() as (host, first):
        plan = LoadPlan(
            host=host,
            rate=rate,
            users=users,
            run_time_s=RUN_S,
            request_timeout_s=10.0,
            samples_path=workdir / f"open-{time.monotonic_ns()}.jsonl",
        )
        argv, _ = locust_command(plan)
        subprocess.run(
            argv, env=locust_environment(plan), cwd=workdir, capture_output=True, check=True
        )
        samples = read_samples(plan.samples_path)
        origin = first[0]
    actual = [s.t - origin for s in samples]
    intended = [s.intended_start - origin for s in samples]
    return actual, intended


def run_paced(rate: float, users: int, workdir: Path) -> list[float]:
    starts_path = workdir / f"paced-{time.monotonic_ns()}.txt"
    with pausing_server() as (host, first):
        argv = [sys.executable, "-m", "locust", "-f", str(HERE / "paced_closed_loop_locustfile.py")]
        argv += ["--headless", "--users", str(users), "--spawn-rate", str(users)]
        argv += ["--host", host, "--run-time", f"{RUN_S}s", "--only-summary", "--stop-timeout", "5"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
        env |= {"BENCH_RATE": str(rate), "BENCH_USERS": str(users)}
        env["BENCH_STARTS_PATH"] = str(starts_path)
        subprocess.run(argv, env=env, cwd=workdir, capture_output=True, check=True)
        origin = first[0]
    return [float(line) - origin for line in starts_path.read_text().split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--hogs", type=int, default=0, help="busy-loop processes beside")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-lockstep-"))
    print(
        "round  driver               CV: before  during  after  (during, after)/before"
        "   IQR/median: before  during  after"
    )
    try:
        for index in range(args.rounds):
            with cpu_hogs(args.hogs):
                actual, intended = run_harness(args.rate, args.users, workdir)
                load = os.getloadavg()[0]
                paced = run_paced(args.rate, args.users, workdir)
            for name, starts in (
                ("harness open loop", actual),
                ("  (its schedule)", intended),
                ("paced closed loop", paced),
            ):
                spread = windows(starts)
                (cv_b, iqr_b), (cv_d, iqr_d), (cv_a, iqr_a) = (
                    spread["before"],
                    spread["during"],
                    spread["after"],
                )
                ratios = (
                    f"{cv_d / cv_b:5.2f}, {cv_a / cv_b:5.2f}" if cv_b > 1e-9 else "    -,     -"
                )
                print(
                    f"{index + 1:5d}  {name:19s}  {cv_b:10.3f}  {cv_d:6.3f}  {cv_a:5.3f}  "
                    f"{ratios:>24s}  {iqr_b:18.3f}  {iqr_d:6.3f}  {iqr_a:5.3f}",
                    flush=True,
                )
            print(
                f"       load average {load:.1f}, harness {lateness(actual, intended)}", flush=True
            )

    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
