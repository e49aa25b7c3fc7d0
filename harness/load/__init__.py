"""The load layer: Locust, always in a process of its own.

Importing locust monkey-patches the interpreter with gevent, so nothing here imports it;
:mod:`harness.load.driver` builds the command, and ``locustfile.py`` (which runs inside
Locust) writes one JSON line per request that the driver reads back::

    from harness.load import LoadPlan, run_load, summarize

    plan = LoadPlan(host="http://127.0.0.1:8080", rate=30, users=6, run_time_s=10,
                    request_timeout_s=2, samples_path=Path("run/samples.jsonl"))
    result = run_load(plan)

Past one process: ``LoadPlan(..., workers=N)`` runs Locust's own master + N workers
(:mod:`harness.load.distributed`): ``run_distributed_load(plan)`` here, ``LocustGroup`` on
a run's deployment; the workers' samples are merged and counted against Locust's total.
"""

from harness.load.distributed import (
    LoadTotals,
    LocustGroup,
    collect_samples,
    run_distributed_load,
)
from harness.load.driver import (
    COORDINATED_OMISSION_RATIO,
    CPU_SATURATION,
    LATE_MS,
    LOCUSTFILE,
    MAX_TOTAL_IN_FLIGHT,
    MAX_WORKERS,
    LoadMode,
    LoadPlan,
    LoadResult,
    LoadSummary,
    Sample,
    SampleColumns,
    SampleTail,
    as_columns,
    generator_warnings,
    locust_command,
    locust_environment,
    read_sample_columns,
    read_samples,
    run_load,
    summarize,
)

__all__ = [
    "COORDINATED_OMISSION_RATIO",
    "CPU_SATURATION",
    "LATE_MS",
    "LOCUSTFILE",
    "MAX_TOTAL_IN_FLIGHT",
    "MAX_WORKERS",
    "LoadMode",
    "LoadPlan",
    "LoadResult",
    "LoadSummary",
    "LoadTotals",
    "LocustGroup",
    "Sample",
    "SampleColumns",
    "SampleTail",
    "as_columns",
    "collect_samples",
    "generator_warnings",
    "locust_command",
    "locust_environment",
    "read_sample_columns",
    "read_samples",
    "run_distributed_load",
    "run_load",
    "summarize",
]
