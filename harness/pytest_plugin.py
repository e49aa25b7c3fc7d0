"""pytest support for harness scenarios (registered as the ``harness`` plugin).

Scenario files as test items (opt-in)::

    pytest --harness-scenarios scenarios/          # every *.yaml / *.yml given is a scenario
    pytest scenarios/                              # with ``harness_scenarios = scenarios/*.yaml``

Each scenario file becomes one item named after ``metadata.name``. Its outcome follows the
run: PASS passes; FAIL fails with the verdict table and the report path; INCONCLUSIVE does
what ``harness_inconclusive`` says (``fail``, ``xfail`` or ``skip``); a harness error fails.
A scenario with ``metadata.expect: fail`` (a negative control) is ``xfail(strict=True)``
and counts as expected only when its SLOs fail; a fault without effect or a harness error
stays a failure. Every label ``key: value`` becomes the marker ``key_value`` (lowercase;
other characters become ``_``), registered on the fly so ``--strict-markers`` holds, and
every item has the ``scenario`` marker with the labels as keyword arguments
(``-m "scenario(team='payments')"``). The SLO × phase verdicts, bounds and n go into the
JUnit XML as properties ``slo.<slo>.<phase>.<field>`` (see :mod:`harness.outcome`); with
pytest-html installed the run's report is linked from the row.

Fixtures for tests written in Python::

    def test_retries_mask_errors(harness_run):
        result = harness_run("scenarios/retries-mask-transient-errors.yaml")
        assert result.exit_code == 0, result.summary

The library does the work; this file only translates. ``--harness-reports DIR`` (or
``HARNESS_REPORTS``) keeps the run records, with each run's ``report.html`` and, at the end
of the session, an ``index.html`` linking them all; by default they go to pytest's
temporary directory. Nothing heavy is imported until a scenario runs.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:  # the heavy parts load only when a test runs a scenario
    from harness.errors import ExitCode
    from harness.journal import Journal
    from harness.runner import RunOptions, RunResult
    from harness.scenario.models import Scenario

INCONCLUSIVE_OUTCOMES = ("fail", "xfail", "skip")
DEFAULT_SCENARIO_GLOBS = ("*.yaml", "*.yml")


@dataclass(frozen=True)
class ScenarioOutcome:
    """What a test needs from a run: the exit code, the journal and a readable summary."""

    result: RunResult
    report: Path | None = None  # the run's report.html, when it was written

    @property
    def exit_code(self) -> ExitCode:
        return self.result.exit_code

    @property
    def journal(self) -> Journal:
        return self.result.journal

    @property
    def summary(self) -> str:
        journal = self.journal
        lines = [f"{journal.scenario_name}: {journal.verdict} ({self.result.journal_path})"]
        lines += [entry.message for entry in journal.slos if entry.verdict != "PASS"]
        lines += journal.problems
        if journal.error:
            lines.append(journal.error)
        return "\n".join(lines)


class HarnessHooks:
    """Hooks the plugin adds to pytest (implement them in a conftest.py)."""

    @pytest.hookspec(firstresult=True)
    def pytest_harness_run_scenario(
        self, item: ScenarioItem, scenario: Scenario, options: RunOptions
    ) -> ScenarioOutcome | None:
        """Run the scenario of ``item`` and write its report; the first non-None result wins.

        The default runs it on the local platform (:func:`harness.runner.run_scenario`);
        a conftest.py can run it elsewhere, or fake it in tests of the plugin itself.
        """


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(HarnessHooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "chaos scenarios")
    group.addoption(
        "--harness-reports",
        default=os.environ.get("HARNESS_REPORTS"),
        help="directory for scenario run records (default: pytest's tmp dir)",
    )
    group.addoption(
        "--harness-mesh",
        choices=("envoy", "istio"),
        default="envoy",
        help="who programs the sidecars of scenario items (harness run's --mesh): envoy "
        "(default) or istio; an item its mesh cannot run is skipped with the reason",
    )
    group.addoption(
        "--harness-platform",
        choices=("local", "kube"),
        default="local",
        help="where scenario items run (harness run's --platform): local (default) or kube, "
        "against --harness-kube-context (kind or a harness-made cluster unless allow-listed)",
    )
    group.addoption(
        "--harness-kube-context",
        default=None,
        help="the kube context of --harness-platform kube (default: the current context)",
    )
    group.addoption(
        "--harness-scenarios",
        action="store_true",
        default=False,
        help="collect scenario files as test items: the harness_scenarios globs, "
        "or every *.yaml / *.yml when that ini key is unset",
    )
    parser.addini(
        "harness_scenarios",
        "globs of scenario files to collect as test items (a glob without '/' matches the "
        "file name, one with '/' the end of its path); setting it opts in",
        type="args",
        default=[],
    )
    parser.addini(
        "harness_inconclusive",
        "outcome of an INCONCLUSIVE scenario item: fail (default), xfail or skip",
        default="fail",
    )


def pytest_configure(config: pytest.Config) -> None:
    inconclusive = config.getini("harness_inconclusive")
    if inconclusive not in INCONCLUSIVE_OUTCOMES:
        raise pytest.UsageError(
            f"harness_inconclusive = {inconclusive!r}: expected one of "
            f"{', '.join(INCONCLUSIVE_OUTCOMES)} (set it in the [pytest] ini section)"
        )
    config.addinivalue_line(
        "markers",
        "scenario(**labels): a harness scenario item; its labels are keyword arguments",
    )
    config.pluginmanager.register(SessionReports(), SessionReports.NAME)


# --------------------------------------------------------------------------- collection


def scenario_globs(config: pytest.Config) -> tuple[str, ...]:
    """The globs that make a file a scenario item; empty when scenario items are off."""
    globs: list[str] = config.getini("harness_scenarios")
    if globs:
        return tuple(globs)
    return DEFAULT_SCENARIO_GLOBS if config.getoption("--harness-scenarios") else ()


def matches(file_path: Path, globs: tuple[str, ...]) -> bool:
    """Whether a file matches one of the globs (like pytest's ``python_files``)."""
    for glob in globs:
        if "/" in glob:
            if file_path.match(glob):
                return True
        elif fnmatch.fnmatch(file_path.name, glob):
            return True
    return False


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    if file_path.suffix in {".yaml", ".yml"} and matches(file_path, scenario_globs(parent.config)):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


def label_marker(key: str, value: str) -> str:
    """The marker name of a scenario label: ``team: payments`` → ``team_payments``."""
    return re.sub(r"\W", "_", f"{key}_{value}".lower(), flags=re.ASCII)


class ScenarioFile(pytest.File):
    """A scenario YAML file; it holds one item. A bad file is a collection error that says
    ``file:line:col: field: message`` for every problem, without a traceback."""

    def collect(self) -> Iterator[ScenarioItem]:
        from harness.errors import ScenarioError
        from harness.scenario import load_scenario

        try:
            scenario = load_scenario(self.path)
        except ScenarioError as error:
            raise self.CollectError(str(error)) from None
        item = ScenarioItem.from_parent(self, name=scenario.metadata.name, scenario=scenario)
        labels = scenario.metadata.labels
        identifiers = {key: value for key, value in labels.items() if key.isidentifier()}
        item.add_marker(pytest.mark.scenario(**identifiers))
        registered = {line.split(":")[0].split("(")[0] for line in self.config.getini("markers")}
        for key, value in sorted(labels.items()):
            name = label_marker(key, value)
            if name not in registered:
                self.config.addinivalue_line("markers", f"{name}: scenario label {key}={value}")
            item.add_marker(getattr(pytest.mark, name))
        if scenario.metadata.expect == "fail":
            item.add_marker(
                pytest.mark.xfail(
                    strict=True,
                    raises=ScenarioSloFailed,
                    reason="negative control (metadata.expect: fail): its SLOs must fail",
                )
            )
        yield item


# --------------------------------------------------------------------------- items


class ScenarioFailed(Exception):
    """A scenario item did not pass; the message is the verdict table and where the record is."""

    def __init__(self, message: str, outcome: ScenarioOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


class ScenarioSloFailed(ScenarioFailed):
    """An SLO failed while every fault took effect: what a negative control must show."""


class ScenarioItem(pytest.Item):
    """One scenario run. ``item.user_properties`` gets the verdict, the run id, the journal
    and report paths, and every SLO × phase property (:func:`harness.outcome.slo_properties`)."""

    def __init__(self, *, scenario: Scenario, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.outcome: ScenarioOutcome | None = None

    def runtest(self) -> None:
        from harness.errors import HarnessError
        from harness.outcome import Outcome, outcome_of, slo_properties, verdict_table
        from harness.platforms.kube.options import KubeOptions, check_kube_support
        from harness.platforms.local.deploy import check_mesh_support
        from harness.platforms.local.platform import Mesh
        from harness.runner import RunOptions

        mesh = Mesh(self.config.getoption("--harness-mesh"))
        kube = None
        if self.config.getoption("--harness-platform") == "kube":
            kube = KubeOptions(context=self.config.getoption("--harness-kube-context"))
        try:
            if kube is not None:
                check_kube_support(self.scenario)
            else:
                check_mesh_support(self.scenario, mesh)
        except HarnessError as refused:
            where = "--harness-platform kube" if kube else f"--harness-mesh {mesh}"
            pytest.skip(f"not under {where}: {refused}")
        options = RunOptions(
            reports_dir=_reports_dir(self.config), mesh=mesh, handle_signals=False, kube=kube
        )
        outcome = self.ihook.pytest_harness_run_scenario(
            item=self, scenario=self.scenario, options=options
        )
        self.outcome = outcome
        journal = outcome.journal
        self.user_properties += [
            ("harness.verdict", journal.verdict),
            ("harness.run_id", journal.run_id),
            ("harness.journal", str(outcome.result.journal_path)),
        ]
        if outcome.report is not None:
            self.user_properties.append(("harness.report", str(outcome.report)))
        self.user_properties += slo_properties(journal)
        result = outcome_of(journal)
        if result == Outcome.PASSED:
            return
        message = verdict_table(journal) + "\n" + _where(outcome)
        if result == Outcome.INCONCLUSIVE:
            self._inconclusive(message, outcome)
        if result == Outcome.SLO_FAILED:
            raise ScenarioSloFailed(message, outcome)
        raise ScenarioFailed(message, outcome)

    def _inconclusive(self, message: str, outcome: ScenarioOutcome) -> NoReturn:
        mode = self.config.getini("harness_inconclusive")
        reason = f"INCONCLUSIVE (harness_inconclusive = {mode}): {_where(outcome)}"
        if mode == "xfail":
            pytest.xfail(reason)
        if mode == "skip":
            pytest.skip(reason)
        raise ScenarioFailed(message, outcome)

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: str | None = None,
    ) -> str:
        if isinstance(excinfo.value, ScenarioFailed):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style=style))  # type: ignore[arg-type]

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"scenario {self.name}"


def _where(outcome: ScenarioOutcome) -> str:
    where = f"journal: {outcome.result.journal_path}"
    if outcome.report is not None:
        where += f"\nreport: {outcome.report}"
    return where


def _reports_dir(config: pytest.Config) -> Path:
    option = config.getoption("--harness-reports")
    if option:
        return Path(option)
    # pytest's own tmp_path_factory (a session fixture) is what the fixtures' tmp_path uses;
    # items have no fixture request to ask it from.
    factory: pytest.TempPathFactory = config._tmp_path_factory  # type: ignore[attr-defined]
    return factory.getbasetemp() / "harness-reports"


@pytest.hookimpl(trylast=True)
def pytest_harness_run_scenario(
    item: ScenarioItem, scenario: Scenario, options: RunOptions
) -> ScenarioOutcome:
    """The default: run on the local platform, then write the report beside the journal."""
    from harness.report import write_report
    from harness.runner import run_scenario

    result = run_scenario(scenario, source=str(item.path), options=options)
    return ScenarioOutcome(result, write_report(result.journal_path))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """With pytest-html installed, link the run's report from the item's row."""
    report = yield
    if (
        call.when == "call"
        and isinstance(item, ScenarioItem)
        and item.outcome is not None
        and item.outcome.report is not None
        and item.config.pluginmanager.hasplugin("html")
    ):
        import pytest_html

        extras = getattr(report, "extras", [])
        link = _link(item.outcome.report, item.config.getoption("htmlpath", None))
        extras.append(pytest_html.extras.url(link, name="harness report"))
        report.extras = extras  # type: ignore[attr-defined]
    return report


def _link(report: Path, html: str | None) -> str:
    """The run's report as seen from pytest-html's page: relative when both sit under one
    directory (so CI can archive them together), else an absolute file URI."""
    report = report.resolve()
    if html:
        page_dir = Path(html).resolve().parent
        if report.is_relative_to(page_dir):
            return report.relative_to(page_dir).as_posix()
    return report.as_uri()


class SessionReports:
    """The reports of the session's scenario items, read from their test reports' properties
    so that the xdist controller (which runs no item) knows them too."""

    NAME = "harness-session-reports"

    def __init__(self) -> None:
        self.reports: list[Path] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            self.reports += [
                Path(str(value))
                for name, value in report.user_properties
                if name == "harness.report"
            ]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def harness_reports(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Where this test's run records go (override the fixture to change it)."""
    option = request.config.getoption("--harness-reports")
    return Path(option) if option else tmp_path / "reports"


_WRITTEN = pytest.StashKey[list[Path]]()


@pytest.fixture
def harness_run(
    harness_reports: Path, request: pytest.FixtureRequest
) -> Callable[..., ScenarioOutcome]:
    """Run a scenario file on the local platform, write its report, return its outcome."""

    def run(path: str | os.PathLike[str], **options: object) -> ScenarioOutcome:
        from harness.report import write_report
        from harness.runner import RunOptions, run_scenario
        from harness.scenario import load_scenario

        scenario = load_scenario(Path(path))
        run_options = RunOptions(reports_dir=harness_reports, handle_signals=False)
        for key, value in options.items():
            setattr(run_options, key, value)
        result = run_scenario(scenario, source=str(path), options=run_options)
        outcome = ScenarioOutcome(result, write_report(result.journal_path))
        assert outcome.report is not None
        request.config.stash.setdefault(_WRITTEN, []).append(outcome.report)
        return outcome

    return run


def pytest_sessionfinish(session: pytest.Session) -> None:
    """With --harness-reports, link every report of the session from one index page."""
    option = session.config.getoption("--harness-reports")
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller writes the index
    items: SessionReports | None = session.config.pluginmanager.get_plugin(SessionReports.NAME)
    written = session.config.stash.get(_WRITTEN, []) + (items.reports if items else [])
    if option and written:
        from harness.report import write_index

        write_index(list(dict.fromkeys(written)), Path(option) / "index.html")
