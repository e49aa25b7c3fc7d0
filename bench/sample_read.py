"""Reading a run's samples: the vectorised reader against ``json``, side by side.

Usage: ``python bench/sample_read.py [REQUESTS] [ROUNDS]`` from the repository root
(default 1,000,000 requests, 3 rounds).

Writes the synthetic run of ``bench/judge_run.py`` (two samples files in the locustfile's
layout), then in each round reads it with ``read_sample_columns`` twice in this process:
as a run does (``harness.load.sample_lines.parse_block`` takes every block), and with the
vectorised path switched off (every block read by ``json.loads`` and per-column checks,
the reader before it). Both must give identical columns. Goal (issue 15): judging 1M
samples within 5 s, reading included; the reading was 4.5 s of 6.2 s.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import judge_run

import harness.load.samples as samples

FIELDS = ("t", "ms", "status", "ok", "err", "rid", "name")


def timed(files: list[Path]) -> tuple[float, samples.SampleColumns]:
    start = time.perf_counter()
    columns = samples.read_sample_columns(files)
    return time.perf_counter() - start, columns


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    workdir = Path(tempfile.mkdtemp(prefix="bench-sample-read-"))
    print(f"load average at start: {os.getloadavg()}")
    try:
        files = judge_run.write_run(workdir, requests)
        vectorised, general = [], []
        for number in range(1, rounds + 1):
            fast_s, fast = timed(files)
            real = samples.parse_block
            samples.parse_block = lambda block: None  # type: ignore[assignment]
            try:
                slow_s, slow = timed(files)
            finally:
                samples.parse_block = real
            same = all(np.array_equal(getattr(fast, k), getattr(slow, k)) for k in FIELDS)
            same &= np.array_equal(fast.intended, slow.intended, equal_nan=True)
            same &= (fast.errors, fast.names) == (slow.errors, slow.names)
            print(
                f"round {number}: vectorised {fast_s:.2f} s, json {slow_s:.2f} s, "
                f"ratio {slow_s / fast_s:.2f}x, {len(fast):,} samples, identical: {same}"
            )
            if not same:
                raise SystemExit("the two readers disagree")
            vectorised.append(fast_s)
            general.append(slow_s)
    finally:
        shutil.rmtree(workdir)
    fast_m, slow_m = statistics.median(vectorised), statistics.median(general)
    print(f"median: vectorised {fast_m:.2f} s, json {slow_m:.2f} s, ratio {slow_m / fast_m:.2f}x")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
