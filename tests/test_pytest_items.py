"""Scenario files as pytest items: collection, markers, outcome mapping, JUnit properties.

Almost every test here uses a **fake runner** (a conftest.py implementing the plugin's
``pytest_harness_run_scenario`` hook) that writes a made-up journal in milliseconds: these
tests check the plugin's collection and outcome mapping, not the harness. The label
``fake: pass|fail|inconclusive|problems|error`` tells the fake what to return. One test at
the end runs a real shipped scenario in a pytest subprocess.
"""

from __future__ import annotations

import html
import importlib.util
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from textwrap import dedent

import pytest

from harness.journal import Journal
from harness.runner import RunResult
from harness.scenario import load_scenario

pytest_plugins = ["pytester"]

# The fake runner below builds a RunResult. Its modules (numpy among them) must be loaded
# here, outside the in-process pytester runs: those drop every module first imported inside
# them, and numpy refuses to load twice in one process.
assert RunResult is not None

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"

FAKE_RUNNER = """
import pytest

from harness.journal import Journal
from harness.pytest_plugin import ScenarioOutcome
from harness.runner import RunResult, verdict_of

SLO = {
    "slo": "e2e-error-rate", "kind": "errorRate", "phase": "fault", "measured": 0.02,
    "lower": 0.015, "upper": None, "objective": 0.01, "confidence": 0.95, "n": 812,
    "unit": "ratio", "message": "fake: error rate 2.00% over the 1.00% objective",
    "samples_needed": None,
}
VERDICTS = {"fail": "FAIL", "inconclusive": "INCONCLUSIVE"}


def pytest_harness_run_scenario(item, scenario, options):
    kind = scenario.metadata.labels.get("fake", "pass")
    with open(item.config.rootpath / "ran.txt", "a") as ran:
        ran.write(scenario.metadata.name + "\\n")
    with open(item.config.rootpath / "meshes.txt", "a") as meshes:
        meshes.write(str(options.mesh) + "\\n")
    journal = Journal(
        run_id="fake-" + scenario.metadata.name, scenario_name=scenario.metadata.name,
        scenario_file=str(item.path), scenario={}, platform="fake", isolation="host",
        isolation_note="fake", environment={}, started_at=0.0, ended_at=1.0,
        status="error" if kind == "error" else "completed",
        error="PlatformError: fake: envoy did not start" if kind == "error" else None,
        problems=["fault f: showed no effect (fake)"] if kind == "problems" else [],
        slos=[{**SLO, "verdict": VERDICTS.get(kind, "PASS")}],
    )
    journal.verdict, code = verdict_of(journal)
    run_dir = options.reports_dir / scenario.metadata.name / journal.run_id
    run_dir.mkdir(parents=True)
    journal.write(run_dir / "journal.json")
    report = run_dir / "report.html"
    report.write_text("<html>fake report</html>")
    return ScenarioOutcome(RunResult(journal, run_dir, run_dir / "journal.json", code), report)
"""


def scenario_yaml(name: str, fake: str = "pass", *, expect: str = "pass", **labels: str) -> str:
    """A minimal valid scenario; the fake runner reads its ``fake`` label."""
    all_labels = ", ".join(f"{key}: {value}" for key, value in {"fake": fake, **labels}.items())
    return dedent(
        f"""\
        apiVersion: harness/v1
        metadata:
          name: {name}
          labels: {{{all_labels}}}
          expect: {expect}
        load: {{rate: 10}}
        phases:
          - {{name: baseline, duration: 2s}}
        slos:
          - {{name: e2e-error-rate, kind: errorRate, max: 1%}}
        """
    )


@pytest.fixture
def fake(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester directory whose conftest.py fakes the scenario runner."""
    pytester.makeconftest(FAKE_RUNNER)
    return pytester


def write(pytester: pytest.Pytester, relative: str, text: str) -> Path:
    path = pytester.path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def ran(pytester: pytest.Pytester) -> list[str]:
    path = pytester.path / "ran.txt"
    return path.read_text().split() if path.exists() else []


def test_fake_runner_no_items_without_opt_in(fake: pytest.Pytester) -> None:
    write(fake, "scenarios/a.yaml", scenario_yaml("a"))
    result = fake.runpytest("scenarios")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert ran(fake) == []


def test_fake_runner_option_collects_every_yaml_as_an_item_named_after_the_scenario(
    fake: pytest.Pytester,
) -> None:
    write(fake, "scenarios/a.yaml", scenario_yaml("alpha"))
    write(fake, "scenarios/sub/b.yml", scenario_yaml("beta"))
    result = fake.runpytest("--harness-scenarios", "scenarios", "--co", "-q")
    result.stdout.fnmatch_lines(
        ["scenarios/a.yaml::alpha", "scenarios/sub/b.yml::beta", "2 tests collected*"]
    )


def test_fake_runner_items_run_under_the_chosen_mesh_and_skip_what_it_cannot(
    fake: pytest.Pytester,
) -> None:
    write(fake, "scenarios/a.yaml", scenario_yaml("alpha"))
    shutil.copy(SCENARIOS / "control-plane-outage.yaml", fake.path / "scenarios")
    result = fake.runpytest("--harness-scenarios", "scenarios", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["*not under --harness-mesh envoy*needs a real control plane*Run it with --mesh istio*"]
    )
    assert ran(fake) == ["alpha"]  # the skipped item never reached the runner
    result = fake.runpytest("--harness-scenarios", "scenarios", "--harness-mesh", "istio")
    result.assert_outcomes(passed=2)
    assert sorted(ran(fake)) == ["alpha", "alpha", "control-plane-outage"]
    meshes = (fake.path / "meshes.txt").read_text().split()
    assert meshes == ["envoy", "istio", "istio"]


def test_fake_runner_ini_glob_opts_in_but_testpaths_keeps_scenarios_out(
    fake: pytest.Pytester,
) -> None:
    fake.makeini(
        """
        [pytest]
        testpaths = tests
        harness_scenarios = scenarios/*.yaml
        """
    )
    write(fake, "scenarios/a.yaml", scenario_yaml("alpha"))
    write(fake, "tests/data/other.yaml", "not: a scenario\n")
    write(fake, "tests/test_x.py", "def test_x():\n    pass\n")
    plain = fake.runpytest("--co", "-q")
    plain.stdout.fnmatch_lines(["tests/test_x.py::test_x", "1 test collected*"])
    explicit = fake.runpytest("scenarios", "tests", "--co", "-q")
    explicit.stdout.fnmatch_lines(["scenarios/a.yaml::alpha", "tests/test_x.py::test_x"])


@pytest.mark.parametrize(
    ("fake_kind", "outcome"),
    [
        ("pass", {"passed": 1}),
        ("fail", {"failed": 1}),
        ("problems", {"failed": 1}),
        ("error", {"failed": 1}),
        ("inconclusive", {"failed": 1}),
    ],
)
def test_fake_runner_verdicts_map_to_outcomes(
    fake: pytest.Pytester, fake_kind: str, outcome: dict[str, int]
) -> None:
    write(fake, "s.yaml", scenario_yaml("s", fake_kind))
    result = fake.runpytest("--harness-scenarios", "s.yaml")
    result.assert_outcomes(**outcome)


def test_fake_runner_failure_shows_the_verdict_table_and_report_path(
    fake: pytest.Pytester,
) -> None:
    write(fake, "s.yaml", scenario_yaml("breached", "fail"))
    result = fake.runpytest("--harness-scenarios", "s.yaml")
    result.stdout.fnmatch_lines(
        [
            "*breached — run fake-breached: FAIL",
            "SLO*phase*verdict*measured*bounds*objective*n",
            "e2e-error-rate*fault*FAIL*2.00%*1.50% – —*1.00%*812",
            "FAIL: fake: error rate 2.00% over the 1.00% objective",
            "journal: */breached/fake-breached/journal.json",
            "report: */breached/fake-breached/report.html",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert "raise Scenario" not in result.stdout.str()


@pytest.mark.parametrize(("mode", "outcome"), [("xfail", "xfailed"), ("skip", "skipped")])
def test_fake_runner_inconclusive_outcome_is_configurable(
    fake: pytest.Pytester, mode: str, outcome: str
) -> None:
    fake.makeini(f"[pytest]\nharness_inconclusive = {mode}\n")
    write(fake, "s.yaml", scenario_yaml("undecided", "inconclusive"))
    result = fake.runpytest("--harness-scenarios", "s.yaml", "-rsx")
    result.assert_outcomes(**{outcome: 1})
    result.stdout.fnmatch_lines([f"*INCONCLUSIVE (harness_inconclusive = {mode}): journal: *"])


def test_fake_runner_bad_inconclusive_setting_is_a_usage_error(fake: pytest.Pytester) -> None:
    fake.makeini("[pytest]\nharness_inconclusive = pass\n")
    result = fake.runpytest("--harness-scenarios")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*harness_inconclusive = 'pass': expected one of fail, xfail*"])


@pytest.mark.parametrize(
    ("fake_kind", "outcome"),
    [
        ("fail", {"xfailed": 1}),  # the SLOs failed: what a negative control must show
        ("pass", {"failed": 1}),  # XPASS(strict)
        ("problems", {"failed": 1}),  # a fault without effect proves nothing
        ("error", {"failed": 1}),  # nor does a harness error
        ("inconclusive", {"failed": 1}),
    ],
)
def test_fake_runner_negative_control_is_a_strict_xfail_that_must_fail_on_its_slos(
    fake: pytest.Pytester, fake_kind: str, outcome: dict[str, int]
) -> None:
    write(fake, "neg.yaml", scenario_yaml("neg", fake_kind, expect="fail"))
    result = fake.runpytest("--harness-scenarios", "neg.yaml")
    result.assert_outcomes(**outcome)


def test_fake_runner_labels_become_registered_markers(fake: pytest.Pytester) -> None:
    write(fake, "s/a.yaml", scenario_yaml("alpha", team="payments", fault="http"))
    write(fake, "s/b.yaml", scenario_yaml("beta", team="Search Core", fault="partition"))
    args = ["--harness-scenarios", "s", "--strict-markers", "--co", "-q"]
    by_label = fake.runpytest(*args, "-m", "fault_http")
    by_label.stdout.fnmatch_lines(["s/a.yaml::alpha", "1/2 tests collected (1 deselected)*"])
    odd_value = fake.runpytest(*args, "-m", "team_search_core")
    odd_value.stdout.fnmatch_lines(["s/b.yaml::beta", "1/2 tests collected (1 deselected)*"])
    keyword = fake.runpytest(*args, "-m", "scenario(team='payments')")
    keyword.stdout.fnmatch_lines(["s/a.yaml::alpha", "1/2 tests collected (1 deselected)*"])
    by_name = fake.runpytest(*args, "-k", "beta")
    by_name.stdout.fnmatch_lines(["s/b.yaml::beta", "1/2 tests collected (1 deselected)*"])
    everything = fake.runpytest("--harness-scenarios", "s", "--strict-markers", "-m", "scenario")
    everything.assert_outcomes(passed=2)


def test_fake_runner_bad_scenario_is_a_collection_error_with_its_location(
    fake: pytest.Pytester,
) -> None:
    write(fake, "s/good.yaml", scenario_yaml("good"))
    write(
        fake,
        "s/bad.yaml",
        "apiVersion: harness/v1\nmetadata: {name: bad}\nphases:\n"
        "  - {name: baseline, durtion: 2s}\n",
    )
    result = fake.runpytest("--harness-scenarios", "s")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ERROR collecting s/bad.yaml*", "*bad.yaml:4:*durtion*"])
    assert "Traceback" not in result.stdout.str()
    assert ran(fake) == []  # a collection error stops the session before any run


def test_fake_runner_last_failed_reruns_only_the_failed_scenario(fake: pytest.Pytester) -> None:
    write(fake, "s/a.yaml", scenario_yaml("alpha", "fail"))
    write(fake, "s/b.yaml", scenario_yaml("beta"))
    fake.runpytest("--harness-scenarios", "s").assert_outcomes(passed=1, failed=1)
    (fake.path / "ran.txt").unlink()
    fake.runpytest("--harness-scenarios", "s", "--lf").assert_outcomes(failed=1)
    assert ran(fake) == ["alpha"]


def test_fake_runner_junit_xml_has_the_slo_properties(fake: pytest.Pytester) -> None:
    write(fake, "s.yaml", scenario_yaml("breached", "fail"))
    fake.runpytest("--harness-scenarios", "s.yaml", "--junitxml=out.xml")
    (case,) = ET.parse(fake.path / "out.xml").getroot().iter("testcase")
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties["harness.verdict"] == "FAIL"
    assert properties["harness.run_id"] == "fake-breached"
    assert properties["harness.report"].endswith("breached/fake-breached/report.html")
    prefix = "slo.e2e-error-rate.fault"
    assert {key: value for key, value in properties.items() if key.startswith(prefix)} == {
        f"{prefix}.verdict": "FAIL",
        f"{prefix}.measured": "0.02",
        f"{prefix}.lower": "0.015",
        f"{prefix}.upper": "",
        f"{prefix}.objective": "0.01",
        f"{prefix}.n": "812",
        f"{prefix}.unit": "ratio",
        f"{prefix}.confidence": "0.95",
    }


def test_fake_runner_reports_dir_option_gets_an_index_of_the_items(
    fake: pytest.Pytester,
) -> None:
    write(fake, "s/a.yaml", scenario_yaml("alpha"))
    write(fake, "s/b.yaml", scenario_yaml("beta"))
    kept = fake.path / "kept"
    fake.runpytest("--harness-scenarios", "s", f"--harness-reports={kept}").assert_outcomes(
        passed=2
    )
    index = (kept / "index.html").read_text()
    assert "alpha" in index and "beta" in index


@pytest.mark.skipif(
    importlib.util.find_spec("xdist") is None,
    reason="pytest-xdist is not installed: pip install -e '.[test]'",
)
def test_fake_runner_items_run_under_xdist(fake: pytest.Pytester) -> None:
    for name in ("alpha", "beta", "gamma"):
        write(fake, f"s/{name}.yaml", scenario_yaml(name))
    result = fake.runpytest_subprocess("--harness-scenarios", "s", "-n", "2")
    result.assert_outcomes(passed=3)
    assert sorted(ran(fake)) == ["alpha", "beta", "gamma"]


@pytest.mark.skipif(
    importlib.util.find_spec("pytest_html") is None,
    reason="pytest-html is not installed: pip install -e '.[test]'",
)
def test_fake_runner_html_row_links_the_report(fake: pytest.Pytester) -> None:
    write(fake, "s.yaml", scenario_yaml("linked"))
    args = ["--harness-scenarios", "s.yaml", "--harness-reports=kept", "--html=out.html"]
    fake.runpytest(*args).assert_outcomes(passed=1)
    page = html.unescape((fake.path / "out.html").read_text())  # the rows are escaped JSON
    assert 'href=\\"kept/linked/fake-linked/report.html\\"' in page
    assert ">harness report</a>" in page


def test_shipped_negative_controls_and_only_they_expect_to_fail() -> None:
    expected = {path.name: path.stem.endswith("-negative") for path in SCENARIOS.glob("*.yaml")}
    found = {
        path.name: load_scenario(path).metadata.expect == "fail"
        for path in SCENARIOS.glob("*.yaml")
    }
    assert found == expected
    assert sum(found.values()) >= 3


@pytest.mark.integration
@pytest.mark.slow
def test_real_negative_control_item_xfails_and_writes_junit_properties(
    pytester: pytest.Pytester,
) -> None:
    """A real run: the shipped negative control as a pytest item, in a subprocess."""
    shutil.copy(SCENARIOS / "partition-outlier-ejection-negative.yaml", pytester.path)
    reports = pytester.path / "reports"
    result = pytester.runpytest_subprocess(
        "--harness-scenarios",
        "partition-outlier-ejection-negative.yaml",
        f"--harness-reports={reports}",
        "--junitxml=out.xml",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(xfailed=1)
    (case,) = ET.parse(pytester.path / "out.xml").getroot().iter("testcase")
    assert case.get("name") == "partition-outlier-ejection-negative"
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties["harness.verdict"] == "FAIL"
    journal = Journal.read(Path(properties["harness.journal"]))
    assert journal.verdict == "FAIL" and not journal.problems
    assert Path(properties["harness.report"]).is_file()
    for entry in journal.slos:
        prefix = f"slo.{entry.slo}.{entry.phase}"
        assert properties[f"{prefix}.verdict"] == entry.verdict
        assert properties[f"{prefix}.n"] == str(entry.n)
        assert properties[f"{prefix}.objective"] == str(entry.objective)
    assert any(value == "FAIL" for key, value in properties.items() if key.endswith(".verdict"))
    assert (reports / "index.html").is_file()
