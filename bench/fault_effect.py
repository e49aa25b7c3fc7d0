"""Fault time-to-effect under open-loop load: from the inject call to the first failed request.

Usage: ``python bench/fault_effect.py [INJECTIONS] [RATE]`` from the repository root
(default 15 injections at 50 req/s over 10 users, the lockstep bench's load).

Deploys the shop app on the local platform (``--mesh envoy``, the run's namespaces) and
runs the harness's locustfile against its ingress in open loop. Then, ``INJECTIONS`` times:
1 s clean, an HTTP abort (503, 100%) injected into every frontend sidecar through the same
injector a run uses (Envoy runtime over the admin socket), 0.6 s held, reverted. From the
samples: per injection, the time from the start of the inject call to the actual start of
the first request that failed (includes waiting for the next request of the schedule,
20 ms apart at 50 req/s), and how many requests that started after the inject call had
returned still succeeded (the fault not yet in effect). Goal (issue 15): time-to-effect
at most 50 ms p95 under this load. The load average is printed beside.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness.faults.http import HttpFaultInjector
from harness.load.driver import LoadPlan, locust_command, locust_environment, read_sample_columns
from harness.platforms.local.deploy import LocalPlatform
from harness.platforms.local.platform import Mesh
from harness.platforms.local.sandbox import Isolation
from harness.scenario.models import HttpFault, Scenario

CLEAN_S = 1.0
HELD_S = 0.6


def main() -> None:
    injections = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 50.0
    scenario = Scenario.model_validate(
        {
            "metadata": {"name": "fault-effect"},
            "load": {"rate": rate},
            "phases": [{"name": "only", "duration": "60s"}],
            "slos": [{"kind": "errorRate", "name": "errors", "max": "1%"}],
        }
    )
    fault = HttpFault.model_validate(
        {"kind": "http", "phase": "only", "target": {"service": "frontend"},
         "abort": {"httpStatus": 503}}
    )  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bench-fault-effect-"))
    marks: list[tuple[float, float]] = []  # (inject called, inject returned)
    print(f"load average at start: {os.getloadavg()}")
    try:
        run_dir = work / "run"
        with LocalPlatform(Isolation.NAMESPACE, Mesh.ENVOY).deploy(scenario, run_dir) as deployment:
            plan = LoadPlan(
                host=deployment.ingress_url,
                rate=rate,
                users=10,
                run_time_s=injections * (CLEAN_S + HELD_S) + 15,
                request_timeout_s=2.0,
                samples_path=run_dir / "samples.jsonl",
            )
            argv, _ = locust_command(plan)
            env = locust_environment(plan)
            locust = deployment.spawn(argv, env=env, log_name="locust.log", replace_env=True)
            deadline = time.monotonic() + 60
            while not (plan.samples_path.exists() and plan.samples_path.stat().st_size):
                if time.monotonic() > deadline:
                    raise SystemExit("Locust recorded no request within 60 s")
                time.sleep(0.1)
            admins = {i.name: deployment.admin(i.name) for i in deployment.instances_of("frontend")}
            injector = HttpFaultInjector(fault, "abort", admins, "frontend")
            load = []
            for _ in range(injections):
                time.sleep(CLEAN_S)
                called = time.time()
                injector.inject()
                marks.append((called, time.time()))
                time.sleep(HELD_S)
                injector.revert()
                load.append(os.getloadavg()[0])
            deployment.stop(locust, grace=plan.stop_timeout_s + 3.0)
        samples = read_sample_columns(plan.samples_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(samples, marks, load)


def report(samples, marks, load) -> None:  # type: ignore[no-untyped-def]
    effects, late_ones = [], 0
    for called, returned in marks:
        during = samples.window(called, called + HELD_S)
        failed = during.t[~during.ok]
        if failed.size == 0:
            print(f"injection at {called:.3f}: no failed request within {HELD_S} s")
            continue
        effects.append((float(failed[0]) - called) * 1000.0)
        after = samples.window(returned, float(failed[0]))
        late_ones += int(after.ok.sum())
    effects.sort()
    p95 = effects[min(len(effects) - 1, int(0.95 * len(effects)))]
    print(f"injections: {len(marks)}, with an effect: {len(effects)}")
    print(
        f"time-to-effect (inject call -> first failed request's start): median "
        f"{statistics.median(effects):.1f} ms, p95 {p95:.1f} ms, max {effects[-1]:.1f} ms "
        f"(goal p95 <= 50 ms)"
    )
    print(f"requests started after the inject call returned that still succeeded: {late_ones}")
    inject_ms = sorted((r - c) * 1000.0 for c, r in marks)
    print(f"the inject call itself: median {statistics.median(inject_ms):.1f} ms, "
          f"max {inject_ms[-1]:.1f} ms")  # fmt: skip
    print(f"load average during the injections: {min(load):.1f}-{max(load):.1f}")


if __name__ == "__main__":
    main()
