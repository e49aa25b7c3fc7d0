"""Judging a 1M-request run end to end: peak RSS and time, columns against objects.

Usage: ``python bench/judge_run.py [REQUESTS] [BASE_COMMIT]`` from the repository root
(default 1,000,000 requests, base ``e2cfa42``: samples held as one ``Sample`` object each).

Writes a synthetic run as the locustfile writes it, split over two samples files (two
Locust processes; the base reads them one after the other and concatenates): three phases
of 100 s at ``REQUESTS / 300`` req/s, 20% of requests a little late on their schedule,
1% errors in bursts during the fault, the fault phase 2 ms slower. Then, each in a fresh
Python process (so the peak RSS is that run's alone), the judging the runner does after a
run: read the samples, phase loads, the per-second timeline, HdrHistograms per phase, and
the SLOs (errorRate, p99 latency, latencyShift against the baseline, Holm), once with this
tree and once with ``BASE_COMMIT`` extracted from git. Both must give the same verdicts.

Peak RSS is the child's ``VmHWM`` (``/proc/self/status``); "after imports" is its RSS
before the samples are read. Goal (issue 15): at most 200 MB harness RSS per 1M requests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PHASE_S = 100.0
T0 = 1_800_000_000.0

CHILD = r"""
import json, sys, time
from pathlib import Path

def rss_mb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0

from harness.journal import Journal
import harness.load.driver as driver
from harness.observe.timeline import latency_histograms, load_timeline, phase_loads
from harness.scenario import load_scenario_text
from harness.slo.judge import judge_slos

args = json.loads(sys.argv[1])
journal = Journal(**args["journal"])
slos = load_scenario_text(args["scenario"]).slos
after_imports = rss_mb("VmRSS")
start = time.perf_counter()
paths = [Path(p) for p in args["files"]]
if hasattr(driver, "read_sample_columns"):
    samples = driver.read_sample_columns(paths)
else:
    samples = [s for p in paths for s in driver.read_samples(p)]
read_s = time.perf_counter() - start
loads = phase_loads(samples, journal.phases, args["rate"])
timeline = load_timeline(samples, args["t0"], journal.phases[-1].end, args["rate"])
histograms = latency_histograms(samples, journal.phases)
judged = judge_slos(slos, journal, samples)
total_s = time.perf_counter() - start
print(json.dumps({
    "after_imports_mb": after_imports, "peak_mb": rss_mb("VmHWM"), "read_s": read_s,
    "total_s": total_s, "count": sum(load.count for load in loads),
    "verdicts": [[r.slo, r.phase, r.verdict.value, r.measured] for r in judged],
    "timeline_sum": sum(timeline.achieved), "histograms": len(histograms),
    "harness": __import__("harness").__file__,
}))
"""

SCENARIO = """
apiVersion: harness/v1
metadata: {name: judge-1m}
load: {rate: 400}
phases:
  - {name: baseline, duration: 100s}
  - {name: fault, duration: 100s}
  - {name: recovery, duration: 100s}
faults:
  - {kind: http, phase: fault, target: {service: catalog}, delay: {fixedDelay: 2ms}}
slos:
  - {name: errors, kind: errorRate, max: 2%}
  - {name: p99, kind: latency, quantile: 0.99, max: 100ms}
  - {name: slower, kind: latencyShift, baseline: baseline, max: 1ms}
"""


def write_run(directory: Path, requests: int) -> list[Path]:
    """Two samples files in the locustfile's line format (every other request each)."""
    rng = np.random.default_rng(15)
    rate = requests / (3 * PHASE_S)
    intended = T0 + np.arange(requests) / rate
    late = rng.random(requests) < 0.2
    t = intended + np.where(late, rng.exponential(0.004, requests), 0.0)
    fault = (t >= T0 + PHASE_S) & (t < T0 + 2 * PHASE_S)
    ms = rng.lognormal(2.3, 0.5, requests) + np.where(fault, 2.0, 0.0)
    bursty = fault & (((t - T0).astype(np.int64) % 10) == 0)
    failed = rng.random(requests) < np.where(bursty, 0.08, 0.002)
    prefix = "5f0c2a1e-9b3d-4c6e-8f00-"
    t_, ms_, intended_, failed_ = t.tolist(), ms.tolist(), intended.tolist(), failed.tolist()
    paths = [directory / "samples-0.jsonl", directory / "samples-1.jsonl"]
    handles = [path.open("w") for path in paths]
    for i in range(requests):
        err = "HTTP 503" if failed_[i] else None
        handles[i % 2].write(
            f'{{"t":{t_[i]:.6f},"ms":{ms_[i]:.3f},"status":{503 if err else 200},'
            f'"ok":{"false" if err else "true"},"err":{json.dumps(err)},'
            f'"rid":"{prefix}{i:012x}","intended":{intended_[i]:.6f}}}\n'
        )
    for handle in handles:
        handle.close()
    return paths


def base_tree(commit: str) -> Path:
    """``harness/`` as it was at ``commit``, extracted into a temporary directory."""
    archive = subprocess.run(
        ["git", "archive", commit, "harness"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    target = Path(tempfile.mkdtemp(prefix="bench-base-"))
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def judge_in_child(tree: Path, files: list[Path], requests: int) -> dict[str, object]:
    phases = [
        {"name": name, "start": T0 + i * PHASE_S, "end": T0 + (i + 1) * PHASE_S}
        for i, name in enumerate(("baseline", "fault", "recovery"))
    ]
    journal = {
        "run_id": "bench", "scenario_name": "judge-1m", "scenario_file": None, "scenario": {},
        "platform": "local", "isolation": "none", "isolation_note": "bench",
        "environment": {}, "started_at": T0, "load_started_at": T0, "phases": phases,
    }  # fmt: skip
    argument = json.dumps(
        {"journal": journal, "scenario": SCENARIO, "files": [str(f) for f in files],
         "rate": requests / (3 * PHASE_S), "t0": T0}
    )  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(  # cwd: "-c" puts it first on sys.path
        [sys.executable, "-c", CHILD, argument], env=env, cwd=tree, capture_output=True
    )
    if done.returncode:
        raise SystemExit(f"judging with {tree} failed:\n{done.stderr.decode()[-3000:]}")
    result: dict[str, object] = json.loads(done.stdout)
    return result


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    commit = sys.argv[2] if len(sys.argv) > 2 else "e2cfa42"
    workdir = Path(tempfile.mkdtemp(prefix="bench-judge-run-"))
    print(f"load average at start: {os.getloadavg()}")
    start = time.perf_counter()
    files = write_run(workdir, requests)
    size = sum(f.stat().st_size for f in files) / 1e6
    took = time.perf_counter() - start
    print(f"wrote {requests:,} samples in 2 files ({size:.0f} MB) in {took:.1f} s")
    base = base_tree(commit)
    try:
        runs = {"this tree": judge_in_child(ROOT, files, requests)}
        runs[f"base {commit}"] = judge_in_child(base, files, requests)
    finally:
        shutil.rmtree(workdir)
        shutil.rmtree(base)
    print("tree            after imports   peak RSS   peak - imports   read      read+judge")
    for name, run in runs.items():
        print(
            f"{name:14s}  {run['after_imports_mb']:10.0f} MB  {run['peak_mb']:6.0f} MB  "
            f"{run['peak_mb'] - run['after_imports_mb']:10.0f} MB  "  # type: ignore[operator]
            f"{run['read_s']:6.2f} s  {run['total_s']:8.2f} s"
        )
    new, old = runs["this tree"], runs[f"base {commit}"]
    print(f"ratio base / this tree: peak RSS {old['peak_mb'] / new['peak_mb']:.2f}x, "  # type: ignore[operator]
          f"time {old['total_s'] / new['total_s']:.2f}x")  # type: ignore[operator]  # fmt: skip
    print(f"trees: {new['harness']} and {old['harness']}")
    print(f"requests counted: {new['count']:,} and {old['count']:,} of {requests:,}")
    print(f"same verdicts and measures: {new['verdicts'] == old['verdicts']}")
    for slo, phase, verdict, measured in new["verdicts"]:  # type: ignore[attr-defined]
        print(f"  {slo:7s} {phase:9s} {verdict:13s} measured {measured}")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
