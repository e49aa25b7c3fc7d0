"""Fuzzing the inputs the harness reads: scenario files, and journals for show and report.

Mutated shipped scenarios and mutated journals (a valid one with a random part replaced by
random JSON, including markup, escape sequences and extreme numbers) must never make the
command line crash: the exit code is one of 0, 1, 2, 3, no traceback is printed, and no file
is written outside the reports directory. Bounded example counts keep this to seconds.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_report import synthetic_journal
from typer.testing import CliRunner

from harness.errors import ScenarioError
from harness.scenario import load_scenario_text

SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.yaml"))
EXIT_CODES = {0, 1, 2, 3}
FUZZ = settings(
    deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None
)

# Pieces that matter to YAML, to names, to Rich and to the terminal.
TOKENS = [
    *"[]{}:,-&*!|>'\"#\n\t ",
    "&a ",
    "*a",
    "!!python/object:os.system",
    "<<: *a",
    "0s",
    "-1s",
    "1e400",
    "9" * 40 + "h",
    "\u0663s",
    "true",
    "null",
    "'3'",
    "[/]",
    "[link=https://x]",
    "\x1b[2J",
    "\x07",
    "\u202e",
    "\x00",
    "\ufeff",
    "~",
    "..",
    "/",
]


def run_cli(args: list[str]) -> tuple[int, str]:
    from harness.cli import app

    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args}: uncaught {result.exception!r}\n{result.output}")
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


@st.composite
def mutated_scenarios(draw: st.DrawFn) -> str:
    text = SCENARIOS[draw(st.integers(0, len(SCENARIOS) - 1))].read_text()
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace-line", "duplicate-line"]))
        if action == "insert":
            piece = draw(st.sampled_from(TOKENS) | st.text(max_size=8))
            text = text[:at] + piece + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 40)) :]
        else:
            lines = text.splitlines(keepends=True) or [""]
            index = draw(st.integers(0, len(lines) - 1))
            if action == "duplicate-line":
                lines.insert(index, lines[index])
            else:
                key = lines[index].split(":", 1)[0]
                lines[index] = f"{key}: {draw(st.sampled_from(TOKENS))}\n"
            text = "".join(lines)
    return text


@settings(FUZZ, max_examples=150)
@given(mutated_scenarios())
def test_the_loader_refuses_or_accepts_but_never_crashes(text: str) -> None:
    try:
        load_scenario_text(text, source="fuzz.yaml")
    except ScenarioError as error:
        assert all(line.startswith("fuzz.yaml:") for line in error.problems), error.problems


@settings(FUZZ, max_examples=40)
@given(mutated_scenarios())
def test_validate_exits_0_or_2(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        code, _ = run_cli(["validate", str(path)])
        assert code in (0, 2)


# --------------------------------------------------------------------------- journals

SEED = json.loads(synthetic_journal(20, recorded=False).model_dump_json())

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(TOKENS)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


SEED_PATHS = [path for path in _paths(SEED) if path]


def _like(draw: st.DrawFn, old: Any) -> Any:
    """A new value of the same JSON type as ``old``: passes validation, tests the rest."""
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        return draw(st.integers(-(2**63), 2**63) | st.sampled_from([0, -1, 1]))
    if isinstance(old, float):
        return draw(st.floats(allow_nan=False, allow_infinity=False))
    if isinstance(old, str):
        return draw(st.sampled_from(TOKENS) | st.text(max_size=12))
    if isinstance(old, list):
        return draw(st.sampled_from([[], old[:1], old[::-1], old * 2]))
    return draw(json_values)


@st.composite
def mutated_journals(draw: st.DrawFn) -> str:
    data = json.loads(json.dumps(SEED))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(SEED_PATHS))
        parent: Any = data
        try:
            for part in path[:-1]:
                parent = parent[part]
            how = draw(st.sampled_from(["same-type", "same-type", "any-value", "remove"]))
            if how == "remove" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif how == "same-type":
                parent[path[-1]] = _like(draw, parent[path[-1]])
            else:
                parent[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    text = json.dumps(data)
    if draw(st.sampled_from([False] * 9 + [True])):  # sometimes not even JSON
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(TOKENS)) + text[at:]
    return text


def files_under(root: Path) -> set[Path]:
    return {Path(dirpath) / name for dirpath, _, names in os.walk(root) for name in names}


def check_journal_command(command: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        reports = root / "reports"
        run_dir = reports / "fuzz" / "20260101T000000Z-abcdef"
        run_dir.mkdir(parents=True)
        journal = run_dir / "journal.json"
        journal.write_text(text, encoding="utf-8", errors="surrogatepass")
        (root / "outside.txt").write_text("untouched")
        before = files_under(root)
        cwd = os.getcwd()
        os.chdir(root)
        try:
            code, _ = run_cli([command, str(journal)])
        finally:
            os.chdir(cwd)
        assert code in EXIT_CODES
        written = files_under(root) - before
        assert all(reports in path.parents for path in written), written
        assert (root / "outside.txt").read_text() == "untouched"
        assert written <= {run_dir / "report.html"}, written


@settings(FUZZ, max_examples=60)
@given(mutated_journals())
def test_show_never_crashes_on_a_mutated_journal(text: str) -> None:
    check_journal_command("show", text)


@settings(FUZZ, max_examples=20)
@given(mutated_journals())
def test_report_never_crashes_on_a_mutated_journal(text: str) -> None:
    check_journal_command("report", text)
