"""A user's own locustfile (``load.locustfile``): validation, sample records with request
names, verdicts per request name, and a real Locust run of a locustfile written like
Locust's own examples (tests/data/user_locustfile.py, importing nothing from the harness).

The real run goes against the small threaded server of tests/test_load_driver.py on
127.0.0.1 (a few seconds, 2 users, loopback only).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from journals import new_journal
from test_load_driver import DEADLINE_S, TargetServer, target

from harness.errors import ExitCode, LoadError, ScenarioError
from harness.journal import PhaseWindow, Verdict
from harness.load import LoadPlan, locust_command, read_sample_columns, read_samples, run_load
from harness.load.driver import LOCUSTFILE, USER_SAMPLING
from harness.load.samples import Sample, SampleColumns
from harness.scenario.loader import load_scenario, load_scenario_text
from harness.slo.judge import judge_slos

__all__ = ["target"]  # the fixture, imported for its use here

DATA = Path(__file__).resolve().parent / "data"
USER_FILE = DATA / "user_locustfile.py"
REPO = Path(__file__).resolve().parent.parent

SCENARIO = """\
apiVersion: harness/v1
metadata: {{name: mine}}
app: {{name: shop}}
load:
{load}
phases:
  - {{name: steady, duration: 10s}}
slos:
  - name: product-errors
    kind: errorRate
    request: product
    max: 1%
"""


def scenario_text(load: str) -> str:
    return SCENARIO.format(load=load)


def write_scenario(folder: Path, load: str) -> Path:
    path = folder / "scenario.yaml"
    path.write_text(scenario_text(load))
    return path


# ---------------------------------------------------------------- validation


def test_the_locustfile_is_resolved_against_the_scenario_s_folder(tmp_path: Path) -> None:
    (tmp_path / "load").mkdir()
    (tmp_path / "load" / "visitor.py").write_text(USER_FILE.read_text())
    path = write_scenario(tmp_path, "  locustfile: load/visitor.py\n  users: 3")
    scenario = load_scenario(path)
    assert scenario.load.locustfile == str(tmp_path / "load" / "visitor.py")
    assert scenario.load.load_mode == "concurrency"
    assert scenario.load.effective_users() == 3


@pytest.mark.parametrize(
    ("load", "message"),
    [
        ("  locustfile: v.py\n  users: 3\n  rate: 10", "load.rate does not apply with"),
        ("  locustfile: v.py\n  users: 3\n  mode: open", "load.mode does not apply with"),
        ("  locustfile: v.py", "load.users is required with load.locustfile"),
        ("  locustfile: v.py\n  users: 4\n  workers: 2", "load.workers is not supported"),
        ("  locustfile: a,b.py\n  users: 3", "contains a comma"),
        ("  locustfile: visitor.txt\n  users: 3", "must name a Python file ending in '.py'"),
    ],
)
def test_the_load_section_refuses_what_a_user_locustfile_cannot_do(
    tmp_path: Path, load: str, message: str
) -> None:
    (tmp_path / "v.py").write_text(USER_FILE.read_text())
    path = write_scenario(tmp_path, load)
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    text = str(error.value)
    assert message in text
    assert re.search(rf"{re.escape(str(path))}:\d+:\d+: load", text), text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist (the path is relative to the scenario file's folder)"),
        ("from locust import task\n\nclass Shopper:\n    pass\n", "defines no Locust User class"),
        ("class Shopper(HttpUser:\n", "not valid Python"),
    ],
)
def test_a_missing_or_unusable_locustfile_is_an_error_at_its_line(
    tmp_path: Path, content: str | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "visitor.py").write_text(content)
    path = write_scenario(tmp_path, "  locustfile: visitor.py\n  users: 3")
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    assert f"{path}:5:" in str(error.value)  # load.locustfile is on line 5
    assert "load.locustfile: " in str(error.value)
    assert message in str(error.value)


def test_cli_validate_exits_2_for_a_missing_locustfile(tmp_path: Path) -> None:
    path = write_scenario(tmp_path, "  locustfile: nowhere.py\n  users: 3")
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == ExitCode.ERROR == 2, result.stdout + result.stderr
    assert "nowhere.py does not exist" in result.stderr


def test_an_slo_request_selector_needs_a_user_locustfile() -> None:
    with pytest.raises(ScenarioError, match=r"slos\[0\]\.request: request selects a Locust"):
        load_scenario_text(scenario_text("  rate: 10"), source="s.yaml")


# ---------------------------------------------------------------- driver


def test_a_user_locustfile_plan_runs_the_sampling_module_beside_it(tmp_path: Path) -> None:
    plan = LoadPlan(
        host="http://127.0.0.1:8080",
        rate=None,
        mode="concurrency",
        users=2,
        run_time_s=5,
        request_timeout_s=2,
        samples_path=tmp_path / "s.jsonl",
        locustfile=USER_FILE,
    )
    argv, env = locust_command(plan)
    assert argv[argv.index("-f") + 1] == f"{USER_SAMPLING},{USER_FILE}"
    assert argv[argv.index("--users") + 1] == "2"
    assert env["HARNESS_SAMPLES_PATH"] == str(tmp_path / "s.jsonl")
    built_in = replace(plan, locustfile=None)
    assert locust_command(built_in)[0][argv.index("-f") + 1] == str(LOCUSTFILE)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mode": "open", "rate": 10.0}, "use mode='concurrency'"),
        ({"workers": 2}, "one Locust process"),
        ({"locustfile": Path("relative.py")}, "must be an absolute path"),
    ],
)
def test_a_user_locustfile_plan_refuses_pacing_workers_and_relative_paths(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    settings: dict[str, object] = {
        "host": "http://127.0.0.1:8080",
        "rate": None,
        "mode": "concurrency",
        "users": 2,
        "run_time_s": 5,
        "request_timeout_s": 2,
        "samples_path": tmp_path / "s.jsonl",
        "locustfile": USER_FILE,
    }
    with pytest.raises(ValueError, match=message):
        LoadPlan(**{**settings, **overrides})  # type: ignore[arg-type]


# ---------------------------------------------------------------- sample records


def sampling_eval(tmp_path: Path, code: str) -> object:
    """Run ``code`` with the sampling module imported as ``us`` (and the built-in
    locustfile as ``lf``) in a child process: importing locust patches the interpreter."""
    script = (
        "import importlib.util, json\n"
        "def load(name, path):\n"
        "    spec = importlib.util.spec_from_file_location(name, path)\n"
        "    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "    return module\n"
        f"us = load('us', {str(USER_SAMPLING)!r})\n"
        f"lf = load('lf', {str(LOCUSTFILE)!r})\n"
        f"print(json.dumps({code}))\n"
    )
    env = {
        "HARNESS_LOAD_RATE": "10",
        "HARNESS_LOAD_USERS": "4",
        "HARNESS_SAMPLES_PATH": str(tmp_path / "unused.jsonl"),
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_the_sampling_module_writes_the_built_in_record_plus_the_name(tmp_path: Path) -> None:
    lines = sampling_eval(
        tmp_path,
        '[us.sample_line(1.5, 2.25, 503, "HTTP 503", "r-1", "cart"),'
        ' lf.sample_line(1.5, 2.25, 503, "HTTP 503", "r-1", None)]',
    )
    assert isinstance(lines, list)
    user, built_in = (json.loads(line) for line in lines)
    assert user.pop("name") == "cart"
    assert user == built_in  # the same fields, the same values
    assert Sample.from_line(lines[0], "child") == Sample(
        t=1.5, ms=2.25, status=503, ok=False, err="HTTP 503", rid="r-1", name="cart"
    )


def write_lines(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def record(t: float, *, ok: bool = True, name: str | None = None) -> dict[str, object]:
    line: dict[str, object] = {
        "t": t,
        "ms": 5.0,
        "status": 200 if ok else 503,
        "ok": ok,
        "err": None if ok else "HTTP 503",
        "rid": f"r{t}",
        "intended": None,
    }
    if name is not None:
        line["name"] = name
    return line


def test_names_round_trip_through_the_columns_and_old_records_have_none(tmp_path: Path) -> None:
    named = write_lines(
        tmp_path / "named.jsonl",
        [record(1.0, name="product"), record(2.0, name="cart", ok=False), record(3.0, name="")],
    )
    old = write_lines(tmp_path / "old.jsonl", [record(1.5), record(2.5)])
    columns = read_sample_columns([named, old])
    assert [s.name for s in columns] == ["product", None, "cart", None, ""]
    assert columns.names == ("product", "cart", "")
    assert columns.named("cart").tolist() == [False, False, True, False, False]
    assert not columns.named("checkout").any()
    window = columns.window(1.2, 3.5)
    assert [s.name for s in window.rows(window.named("cart"))] == ["cart"]
    assert [s.name for s in read_samples(named)] == ["product", "cart", ""]
    # The slow path (a malformed line elsewhere in the block) reads the names the same way.
    (tmp_path / "mixed.jsonl").write_text(
        json.dumps(record(1.0, name="product")) + "\n" + '{"t": 2, "ms": 1, "status": 200,'
        ' "ok": true, "err": null, "rid": "x", "name": 3}\n'
    )
    with pytest.raises(LoadError, match=r"mixed\.jsonl:2: a sample field has the wrong type"):
        read_sample_columns(tmp_path / "mixed.jsonl")


# ---------------------------------------------------------------- verdicts per name


def test_verdicts_are_judged_per_request_name_and_an_unseen_name_is_inconclusive() -> None:
    scenario = load_scenario_text(
        scenario_text(f"  locustfile: {USER_FILE}\n  users: 2").replace(
            "    max: 1%\n",
            "    max: 1%\n"
            "  - {name: cart-errors, kind: errorRate, request: cart, max: 1%}\n"
            "  - {name: all-errors, kind: errorRate, max: 1%}\n"
            "  - {name: typo, kind: latency, request: prodcut, quantile: 0.9, max: 1s}\n",
        ),
        source="s.yaml",
    )
    # 600 product requests, all fine; 400 cart requests, a quarter failing.
    samples = [
        Sample(t=100 + i / 100, ms=5.0, status=200, ok=True, err=None, rid=f"p{i}", name="product")
        for i in range(600)
    ] + [
        Sample(
            t=100 + i / 100,
            ms=5.0,
            status=503 if i % 4 == 0 else 200,
            ok=i % 4 != 0,
            err="HTTP 503" if i % 4 == 0 else None,
            rid=f"c{i}",
            name="cart",
        )
        for i in range(400)
    ]
    journal = new_journal(phases=[PhaseWindow(name="steady", start=100.0, end=110.0)])
    results = {
        r.slo: r for r in judge_slos(scenario.slos, journal, SampleColumns.from_samples(samples))
    }
    assert results["product-errors"].n == 600
    assert results["product-errors"].pair_verdict == Verdict.PASS
    assert results["cart-errors"].n == 400 and results["cart-errors"].measured == 0.25
    assert results["cart-errors"].pair_verdict == Verdict.FAIL
    assert results["all-errors"].n == 1000
    typo = results["typo"]
    assert typo.verdict == Verdict.INCONCLUSIVE and typo.n == 0
    assert "no request named 'prodcut' in this run" in typo.message
    assert "'product', 'cart'" in typo.message


# ---------------------------------------------------------------- real Locust


@pytest.mark.integration
@pytest.mark.parametrize("client", ["HttpUser", "FastHttpUser"])
def test_a_user_locustfile_runs_unchanged_and_every_request_is_sampled(
    target: TargetServer, tmp_path: Path, client: str
) -> None:
    """The example locustfile's two tasks, sampled through Locust's request event: each
    sample has its task's name, the x-request-id the server saw, and the status it got
    (with either of Locust's HTTP clients)."""
    text = USER_FILE.read_text()
    assert "import harness" not in text and "from harness" not in text
    user_file = tmp_path / "visitor.py"
    user_file.write_text(text.replace("HttpUser", client))
    plan = LoadPlan(
        host=target.url,
        rate=None,
        mode="concurrency",
        users=2,
        run_time_s=4,
        request_timeout_s=2,
        samples_path=tmp_path / "samples.jsonl",
        locustfile=user_file,
    )
    result = run_load(plan, timeout=DEADLINE_S + plan.run_time_s)
    assert result.exit_code == 0, result.stderr[-2000:]
    samples = result.samples
    names = {s.name for s in samples}
    assert names == {"product", "cart"}, names
    seen = target.statuses()
    assert len(samples) == sum(len(v) for v in seen.values()) > 20
    for sample in samples:
        assert re.fullmatch(r"[0-9a-f-]{36}", sample.rid), sample
        assert seen[sample.rid] == [sample.status], sample  # one request per id
        assert sample.intended is None  # closed loop: no schedule
        assert sample.ok == (sample.status == 200)
    assert any(not s.ok and s.err == "HTTP 503" for s in samples)  # ids divisible by 5
