"""Report size and render time for a real 60-second run, side by side with its floor.

Usage: ``python bench/report_render.py [JOURNAL]`` — without a journal it first runs
``bench/retries-60s.yaml`` on the local platform (about 75 s) to get a real one.

Each round reads the journal and renders the full report, and in the same round renders the
same journal stripped of its optional sections (timelines, mesh signals, flags, paths:
verdict tables only). The ratio says what the plots and tables cost; the absolute times are
for this machine only (these machines are noisy: compare ratios).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness.journal import Journal
from harness.report import render_report
from harness.runner import RunOptions, run_scenario
from harness.scenario import load_scenario

ROUNDS = 7


def real_journal() -> Path:
    scenario = load_scenario(Path(__file__).with_name("retries-60s.yaml"))
    reports = Path(tempfile.mkdtemp(prefix="bench-report-"))
    result = run_scenario(scenario, options=RunOptions(reports_dir=reports))
    return result.journal_path


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else real_journal()
    render_report(Journal.read(path))  # warm-up: imports, font cache
    renders, floors = [], []
    size = 0
    for _ in range(ROUNDS):
        start = time.perf_counter()
        journal = Journal.read(path)
        html = render_report(journal)
        renders.append(time.perf_counter() - start)
        size = len(html.encode())
        bare = journal.model_copy(
            update={
                "timeline": None,
                "mesh_timeline": None,
                "response_flags": {},
                "request_paths": [],
                "latency_histograms": {},
            }
        )
        start = time.perf_counter()
        render_report(bare)
        floors.append(time.perf_counter() - start)
    render, floor = statistics.median(renders), statistics.median(floors)
    load_seconds = sum(p.end - p.start for p in Journal.read(path).phases)
    print(f"journal: {path} ({load_seconds:.0f} s of load)")
    print("| measure | median of 7 | min | max |")
    print("|---|---|---|---|")
    print(
        f"| read + render_report | {render:.3f} s | {min(renders):.3f} s | {max(renders):.3f} s |"
    )
    print(f"| verdicts-only render | {floor:.3f} s | {min(floors):.3f} s | {max(floors):.3f} s |")
    print(f"| ratio full / verdicts-only | {render / floor:.1f}× | | |")
    print(f"| report size | {size / 1024:.0f} KiB | | |")


if __name__ == "__main__":
    main()
