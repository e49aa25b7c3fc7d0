"""Judging speed: the Hodges-Lehmann shift at 500k x 500k, and 1M samples judged in full.

Usage: ``python bench/judge_slo.py [BASE_COMMIT]`` from the repository root.

1. ``hodges_lehmann_shift`` on 500k baseline x 500k phase latencies (lognormal, a 2 ms
   shift), side by side with the implementation at ``BASE_COMMIT`` (default ``a2e6254``,
   before the sampled-bracket selection), loaded from git into its own module. Both must
   return the same estimate and bounds (the new one is exact, not an approximation).
2. Judging 1M synthetic samples (two phases of 500k, 100 s each, 1% bursty errors): error
   rate with per-second counts, p99 latency with per-second dispersion, the latency shift
   of the fault phase over the baseline with its p-value, and Holm's family adjustment.
   Goal (issue 15): at most 5 s.

Absolute times are for this machine only; it is shared and noisy: read the ratio.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.slo.family import adjust_family
from harness.slo.shift import evaluate_latency_shift
from harness.slo.stats import hodges_lehmann_shift
from harness.slo.verdict import evaluate_error_rate, evaluate_latency, per_second_counts

N = 500_000
SECONDS = 100


def base_stats(commit: str):  # type: ignore[no-untyped-def]
    """``harness.slo.stats`` as it was at ``commit``, as a separate module."""
    source = subprocess.run(
        ["git", "show", f"{commit}:harness/slo/stats.py"], check=True, capture_output=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="bench-base-")) / "base_stats.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("base_stats", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["base_stats"] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


def timed(call):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    value = call()
    return value, time.perf_counter() - start


def main() -> None:
    commit = sys.argv[1] if len(sys.argv) > 1 else "a2e6254"
    rng = np.random.default_rng(15)
    baseline = rng.lognormal(-4.0, 0.5, N)
    phase = rng.lognormal(-4.0, 0.5, N) + 0.002

    base = base_stats(commit)
    new, new_s = timed(lambda: hodges_lehmann_shift(baseline, phase, 0.95))
    old, old_s = timed(lambda: base.hodges_lehmann_shift(baseline, phase, 0.95))
    same = (new.estimate, new.lower, new.upper) == (old.estimate, old.lower, old.upper)
    print(f"hodges_lehmann_shift {N:,} x {N:,}")
    print(f"  base {commit}: {old_s:6.2f} s")
    print(f"  this tree:     {new_s:6.2f} s   ratio {old_s / new_s:.1f}x   same result: {same}")

    # 1M samples: starts over 2 x 100 s, 1% errors in bursts (a quarter of the seconds).
    starts = np.concatenate(
        [np.sort(rng.uniform(0, SECONDS, N)), np.sort(rng.uniform(SECONDS, 2 * SECONDS, N))]
    )
    bad_second = rng.random(2 * SECONDS) < 0.25
    failed = rng.random(2 * N) < np.where(bad_second[starts.astype(int)], 0.034, 0.002)
    latencies = np.concatenate([baseline, phase])

    def judge() -> int:
        results = []
        for name, lo, hi in (("baseline", 0, N), ("fault", N, 2 * N)):
            t0 = 0.0 if name == "baseline" else float(SECONDS)
            t, bad, lat = starts[lo:hi], failed[lo:hi], latencies[lo:hi]
            counts = per_second_counts(t, bad, t0, t0 + SECONDS)
            results.append(
                evaluate_error_rate(
                    "errors", name, int(bad.sum()), int(t.size), 0.02, 0.95, per_second=counts
                )
            )
            ok = ~bad
            results.append(
                evaluate_latency(
                    "p99", name, lat[ok], 0.99, 0.1, 0.95, seconds=(t[ok] - t0).astype(np.int64)
                )
            )
        ok_base, ok_fault = ~failed[:N], ~failed[N:]
        results.append(
            evaluate_latency_shift(
                "slower", "fault", "baseline", baseline[ok_base], phase[ok_fault], 0.005, 0.95
            )
        )
        return len(adjust_family(results))

    judged, judge_s = timed(judge)
    print(
        f"judging {2 * N:,} samples ({judged} SLO x phase pairs, incl. the shift): "
        f"{judge_s:.2f} s (goal <= 5 s)"
    )


if __name__ == "__main__":
    main()
