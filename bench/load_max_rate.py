"""The honest maximum of ``load.rate``: what one Locust process sustains against the shop app.

Usage: ``python bench/load_max_rate.py [RATE ...]`` (default 250 500 750 1000 1500 2000)

For each offered rate, one real run on the local platform (the shop app behind its ingress
Envoy, every instance with its sidecar, all on this machine; Locust in the run's sandbox)
with a single 12 s phase and no fault, through the whole pipeline (``run_scenario``). From
the journal: the achieved rate, the share of requests that started more than
``harness.load.LATE_MS`` late, the error share and Locust's own warnings. A rate counts as
sustained when the achieved rate is at least 90% of the offered one and fewer than 1% of
the requests failed; ``harness.scenario.models.MAX_RATE`` is set to the highest sustained
rate measured here, rounded down (docs/benchmarks.md). The generator shares the two cores
with the app and its Envoys, which is what a run on such a machine does too.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import harness.scenario.models
from harness.runner import RunOptions, run_scenario
from harness.scenario.models import Scenario

DEFAULT_RATES = (250.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0)


def scenario(rate: float) -> Scenario:
    return Scenario.model_validate(
        {
            "apiVersion": "harness/v1",
            "metadata": {"name": f"bench-max-rate-{int(rate)}"},
            "app": {"name": "shop"},
            "load": {"rate": rate, "requestTimeout": "2s"},
            "phases": [{"name": "steady", "duration": "12s"}],
            "slos": [{"name": "errors", "kind": "errorRate", "max": "1%"}],
        }
    )


def main() -> None:
    # Measure past the current cap too: it is this benchmark's result, not its input.
    harness.scenario.models.MAX_RATE = float("inf")  # type: ignore[misc]
    rates = [float(arg) for arg in sys.argv[1:]] or list(DEFAULT_RATES)
    reports = Path(tempfile.mkdtemp(prefix="bench-max-rate-"))
    print("offered  users  achieved  ratio  late%  errors%  sustained  generator warnings")
    for rate in rates:
        result = run_scenario(scenario(rate), options=RunOptions(reports_dir=reports))
        load = result.journal.load
        assert load is not None and load.phases, f"no load record in {result.journal_path}"
        phase = load.phases[0]
        ratio = phase.achieved_rate / rate
        late = phase.late / phase.count if phase.count else 1.0
        errors = phase.errors / phase.count if phase.count else 1.0
        sustained = ratio >= 0.9 and errors < 0.01
        cpu = "CPU saturated" if any("CPU" in w for w in load.warnings) else "-"
        print(
            f"{rate:7.0f}  {load.users:5d}  {phase.achieved_rate:8.0f}  {ratio:5.2f}  "
            f"{100 * late:5.1f}  {100 * errors:7.2f}  {'yes' if sustained else 'NO':9s}  {cpu}",
            flush=True,
        )


if __name__ == "__main__":
    main()
