"""Locust workers: the harness's load driver on 1, 2 and 4 workers beside plain Locust.

Usage: ``python bench/load_workers.py [--users 32] [--seconds 10] [--rounds 3]``

Target: the Envoy of ``bench/load_driver.py`` on 127.0.0.1 answering every request itself
(``direct_response``), so the generator is what is measured. Each round runs, one after
the other, with the same users and run time:

* plain Locust, one process: ``bench/raw_fasthttp_locustfile.py`` (FastHttpUser, no wait,
  no sampling) — the anchor;
* the harness, one process: ``harness/load/locustfile.py`` in concurrency mode (no pacing),
  every request sampled (what a run does);
* for N in 1, 2, 4: plain Locust's distributed mode (``--master`` + N ``--worker``, the raw
  locustfile) and the harness with ``workers: N`` (the same master + workers, sampling,
  the drain, the merge and the count check).

Rate = Locust's own request total (the master's ``--json-file``; for the harness it equals
the merged samples, which the script checks) over the run time, the same measure for every
row, start-up ramp included alike. CPU per request = user + system time of all Locust
processes of the run (``getrusage(RUSAGE_CHILDREN)`` around it) over the requests. The
ratio harness / plain Locust at the same N is the figure the performance goal speaks of
("≥ 0.9 per worker"). Two cores are shared by Envoy, the master, the workers and anything
else on the machine: compare ratios within a round, not absolute rates across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from load_driver import RAW_LOCUSTFILE, envoy_target

from harness.load.distributed import (
    ChildProcesses,
    free_loopback_port,
    locust_request_total,
    run_distributed_load,
    without_locust_settings,
)
from harness.load.driver import LoadPlan, locust_command, locust_environment, read_samples

WORKERS = (1, 2, 4)


@dataclass(frozen=True)
class Measured:
    requests: int
    seconds: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float:
        return 1e6 * self.cpu_s / max(1, self.requests)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _raw_argv(host: str, users: int, seconds: int, stats: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "locust", "-f", str(RAW_LOCUSTFILE), "--headless"),
        *("--users", str(users), "--spawn-rate", str(min(users, 100)), "--host", host),
        *("--run-time", f"{seconds}s", "--only-summary", "--loglevel", "WARNING"),
        *("--exit-code-on-error", "0", "--stop-timeout", "2", "--json-file", str(stats)),
    ]


def plain_locust(host: str, users: int, seconds: int, workdir: Path, workers: int) -> Measured:
    """Plain Locust: one process (``workers`` 0) or a master + ``workers`` workers."""
    stats = workdir / f"raw-{time.monotonic_ns()}"
    argv = _raw_argv(host, users, seconds, stats)
    env = without_locust_settings()
    host_processes = ChildProcesses(workdir / "logs", workdir)
    before = _children_cpu()
    try:
        if not workers:
            pid = host_processes.spawn(argv, env=env, log_name="raw.log", replace_env=True)
            host_processes.children[pid].wait(timeout=seconds + 60)
        else:
            port = free_loopback_port()
            master = [*argv, "--master", "--master-bind-host", "127.0.0.1"]
            master += ["--master-bind-port", str(port), "--expect-workers", str(workers)]
            pid = host_processes.spawn(master, env=env, log_name="raw-m.log", replace_env=True)
            worker = [sys.executable, "-m", "locust", "-f", str(RAW_LOCUSTFILE), "--worker"]
            worker += ["--master-host", "127.0.0.1", "--master-port", str(port)]
            worker += ["--loglevel", "WARNING", "--exit-code-on-error", "0"]
            pids = [
                host_processes.spawn(worker, env=env, log_name="raw-w.log", replace_env=True)
                for _ in range(workers)
            ]
            host_processes.children[pid].wait(timeout=seconds + 60)
            for worker_pid in pids:
                host_processes.stop(worker_pid, grace=10)
    finally:
        host_processes.kill_all()
    cpu = _children_cpu() - before
    return Measured(locust_request_total(Path(f"{stats}.json")), seconds, cpu)


def harness_load(host: str, users: int, seconds: int, workdir: Path, workers: int) -> Measured:
    """The harness's driver in concurrency mode: one process, or ``workers`` workers."""
    plan = LoadPlan(
        host=host,
        rate=None,
        mode="concurrency",
        users=users,
        run_time_s=seconds,
        request_timeout_s=10.0,
        samples_path=workdir / f"harness-{time.monotonic_ns()}" / "samples.jsonl",
        workers=workers or None,
    )
    plan.samples_path.parent.mkdir(parents=True)
    before = _children_cpu()
    if not workers:
        argv, _ = locust_command(plan)
        stats = plan.samples_path.with_name("stats")
        subprocess.run(
            [*argv, "--json-file", str(stats)],
            env=locust_environment(plan),
            cwd=plan.samples_path.parent,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=seconds + 60,
            check=True,
        )
        total = locust_request_total(Path(f"{stats}.json"))
        assert total == len(read_samples(plan.samples_path)), "a sample is missing"
        return Measured(total, seconds, _children_cpu() - before)
    run = run_distributed_load(plan, timeout=seconds + 90)
    if run.totals.problems:
        raise SystemExit(f"the merge did not add up: {run.totals.problems}")
    assert run.totals.locust_requests is not None
    return Measured(run.totals.locust_requests, seconds, _children_cpu() - before)


def one_round(host: str, users: int, seconds: int, workdir: Path) -> dict[str, Measured]:
    found = {
        "plain 1 process": plain_locust(host, users, seconds, workdir, 0),
        "harness 1 process": harness_load(host, users, seconds, workdir, 0),
    }
    for workers in WORKERS:
        found[f"plain {workers}w"] = plain_locust(host, users, seconds, workdir, workers)
        found[f"harness {workers}w"] = harness_load(host, users, seconds, workdir, workers)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    rounds: list[dict[str, Measured]] = []
    with envoy_target(workdir) as host:
        for index in range(args.rounds):
            found = one_round(host, args.users, args.seconds, workdir)
            rounds.append(found)
            cells = " | ".join(f"{k} {m.rate:5.0f}/s {m.cpu_us:4.0f}µs" for k, m in found.items())
            print(f"round {index + 1} (load {os.getloadavg()[0]:.1f}): {cells}", flush=True)
    print(f"\nmedian of {len(rounds)} rounds, {args.users} users, {args.seconds} s each")
    print("| Locust processes | plain Locust req/s | harness req/s | harness / plain | "
          "CPU µs/req plain | CPU µs/req harness |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    rows = [("1 process", "plain 1 process", "harness 1 process")]
    rows += [(f"master + {n} worker{'s' if n > 1 else ''}", f"plain {n}w", f"harness {n}w")
             for n in WORKERS]  # fmt: skip
    for label, plain, ours in rows:
        p = statistics.median(r[plain].rate for r in rounds)
        h = statistics.median(r[ours].rate for r in rounds)
        ratio = statistics.median(r[ours].rate / r[plain].rate for r in rounds)
        cpu_p = statistics.median(r[plain].cpu_us for r in rounds)
        cpu_h = statistics.median(r[ours].cpu_us for r in rounds)
        print(f"| {label} | {p:.0f} | {h:.0f} | {ratio:.2f} | {cpu_p:.0f} | {cpu_h:.0f} |")
    print(json.dumps([{k: [m.requests, m.cpu_s] for k, m in r.items()} for r in rounds]))


if __name__ == "__main__":
    main()
